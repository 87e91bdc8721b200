"""stitch: viewer."""
