"""The generation loop (pipeline, fusion, config, run directory, outcome harness, extend) with its rooms:
`backends` (outpainters, depth completers, model registry), `bench` (scene-geometry benchmark, RGB-D loaders)
and `tools` (refine, render, export, video, mesh, batch)."""
