"""The CPU rasterizer: numba kernels for EWA projection and tile-free alpha blending, forward and backward."""
