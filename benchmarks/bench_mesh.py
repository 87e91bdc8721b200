"""Mesh export of a run directory (`stitch export RUN --mesh`): wall and CPU time, size, and the mesh's
view-0 depth agreement (median relative error, coverage).

    python benchmarks/bench_mesh.py out/kyoto [--max-vertices N] [--voxel-size M]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.tools.mesh_export import MeshConfig, export_run_mesh, report_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-vertices", type=int, default=500_000)
    parser.add_argument("--voxel-size", type=float, default=0.0)
    args = parser.parse_args()
    config = MeshConfig(voxel_size=args.voxel_size, max_vertices=args.max_vertices)
    with tempfile.TemporaryDirectory() as tmp:
        export_run_mesh(args.run_dir, Path(tmp) / "warm.glb", config)  # numba compiles the depth check once
        wall, cpu = time.perf_counter(), time.process_time()
        report = export_run_mesh(args.run_dir, Path(tmp) / "scene.glb", config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = (Path(tmp) / "scene.glb").stat().st_size
    print(report_line(report))
    print(
        f"grid {'x'.join(map(str, report['grid']))}, {len(report['attempts'])} build(s), "
        f"{size / 1e6:.1f} MB .glb; {wall:.1f} s wall, {cpu:.1f} s CPU (load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
