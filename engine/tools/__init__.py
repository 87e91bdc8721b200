"""Scene tools built on the loop: refine, render, export (.ply/.splat/.spz/mesh), video, batch."""
