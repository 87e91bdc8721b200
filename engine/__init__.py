"""stitch: engine."""
