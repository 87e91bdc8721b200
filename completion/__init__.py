"""stitch: completion."""
