"""Scene files: 3DGS .ply, antimatter15 .splat, Niantic .spz, camera-path JSON; `io` picks by suffix."""
