"""Depth completion: `network` (the model and its checkpoints, used by generation) sits below engine/;
`training` (data preparation, masks, training, evaluation) sits above it; `cli` is the `stitch train` glue."""
