"""The paper's scene-geometry benchmark: RGB-D loaders (ScanNet-style folders, Hypersim), sequences, the
error on the pixels each view adds, and its figure."""
