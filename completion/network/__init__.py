"""The depth completion network (ZoeDepth-style, conditioned on known depth) and its checkpoint format."""
