"""`stitch export` (scene conversion and `--mesh`) and the `.spz` frame/version switches of export, info,
render and view.

A `.spz` file does not record its frame. stitch writes and reads it in the `.ply`'s frame by default
(`--spz-axes rdf`: x right, y down, z forward, as Niantic's ply-to-spz tool and splat-transform 3.x);
`--spz-axes rub` (x right, y up, z back, the spz README's frame) is what splat-transform 2.x expects.
`--spz-version` picks the version written (2: every loader; 3: finer rotations); on the reading commands
it checks the file is that version (e.g. before handing it to a viewer that reads only 1-2).
"""

from __future__ import annotations

from pathlib import Path

from splat.errors import StitchError

SPZ_AXES_CHOICES = ("rdf", "rub")
SPZ_WRITE_VERSIONS = (2, 3)


def check_spz_axes(spz_axes: str) -> str:
    if spz_axes not in SPZ_AXES_CHOICES:
        raise StitchError(f"--spz-axes must be rdf or rub, got {spz_axes!r}")
    return spz_axes


def check_spz_version(scene: Path, expected: int) -> None:
    """`--spz-version N` on a reading command: the .spz must be version N (0: any)."""
    if not expected or Path(scene).suffix.lower() != ".spz" or Path(scene).is_dir():
        return
    from splat.formats.spz import read_spz_blocks

    version = read_spz_blocks(scene)[0]["version"]
    if version != expected:
        raise StitchError(
            f"{scene} is .spz version {version}, not {expected}; re-export it with "
            f"stitch export {scene} -o OUT.spz --spz-version {expected}"
        )


def read_options(scene: Path, spz_axes: str = "rdf", spz_version: int = 0) -> dict:
    """Options for splat.formats.io.load_scene from the command line (checked; ignored by .ply/.splat)."""
    check_spz_axes(spz_axes)
    check_spz_version(scene, spz_version)
    return {"axes": spz_axes}


def export_scene(scene: Path, output: Path, spz_axes: str = "rdf", spz_version: int = 2) -> str:
    """Convert between .ply/.splat/.spz; the .spz frame and version apply to every .spz read or written."""
    from splat.formats.io import load_scene, save_scene

    if Path(scene).is_dir():
        raise StitchError(
            f"{scene} is a directory: pass --mesh to fuse a run into a mesh, or give its scene.ply"
        )
    if spz_version not in SPZ_WRITE_VERSIONS:
        raise StitchError(f"--spz-version must be 2 or 3 (the versions stitch writes), got {spz_version}")
    gaussians = load_scene(scene, **read_options(scene, spz_axes))
    save_scene(gaussians, output, axes=spz_axes, version=spz_version)
    return str(output)


def export_mesh(run_dir: Path, output: Path, **mesh_options) -> str:
    """`stitch export RUN_DIR -o scene.glb --mesh`: TSDF fusion of the run's views (mesh_export.py)."""
    from engine.tools.mesh_export import MeshConfig, export_run_mesh, report_line

    if not Path(run_dir).is_dir():
        raise StitchError(
            f"--mesh fuses the depth maps of a run directory of stitch generate; {run_dir} is not a directory"
        )
    return report_line(export_run_mesh(Path(run_dir), Path(output), MeshConfig(**mesh_options)))
