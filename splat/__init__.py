"""The ground layer: Gaussians, camera geometry, rendering (gsplat or the CPU rasterizer), optimisation,
densification strategies, scene file formats and the error type. Imports nothing else of stitch."""
