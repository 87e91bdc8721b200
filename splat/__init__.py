"""stitch: splat."""
