"""Grow a finished run by more views (`stitch extend`, the viewer's "Stitch here") and take them back (Undo).

One added view is exactly one more step of the pipeline that built the run: the camera is appended to the
manifest and the pipeline continues as a resumed `generate` would (render, outpaint the holes, complete the
depth conditioned on the rendered depth, seed Gaussians, optimise). Its seed is the run's (view k uses
seed + k, as every planned view does), so a run grown view by view equals a `generate` over all its
cameras (RUN/camera_path.json), and `stitch extend` and the viewer give the same scene for the same camera.

Each view is checked first (guard rails), then the files it will replace are copied to RUN/undo/XXX/, then
it is stitched and the run is finished again (scene, preview, manifest). Undo copies them back: the scene,
checkpoint and manifest are byte-for-byte what they were. A process killed mid-view leaves the camera in
the manifest ("status": "extending"); `stitch extend RUN` finishes it, `stitch extend RUN --undo` drops it.
"""
