"""Wall time and peak memory of `stitch generate` on the Kyoto photo at default settings, per mode, and the
cost of each added view (view k vs view 2: cost must stay flat as the scene grows).

    .venv/bin/python benchmarks/bench_generate.py [--modes stage 360] [--max-side 384] [--append]

Each mode runs in a fresh subprocess so peak memory (ru_maxrss) is that run's alone. Prints one line per mode
and the per-view breakdown from the run manifest; --append adds rows to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "photos" / "photo-1667788000333-4e36f948de9a.jpeg"
PROMPT = "a street with traditional buildings in Kyoto, Japan"


def run_mode(mode: str, max_side: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scene.ply"
        cmd = [sys.executable, "-c", "from cli import main; main()", "generate", str(PHOTO),
               "--prompt", PROMPT,
               "--mode", mode, "--max-side", str(max_side), "-o", str(out), "--quiet", *extra]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        manifest = json.loads((out.parent / "manifest.json").read_text())
    per_view = [sum(v for k, v in t.items() if isinstance(v, float)) for t in manifest["timings"]]
    return {"mode": mode, "wall_s": wall, "peak_mb": peak_mb, "per_view_s": per_view,
            "n_gaussians": manifest["n_gaussians"], "timings": manifest["timings"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", nargs="+", default=["stage", "360"])
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("--append", action="store_true", help="append rows to benchmarks/RESULTS.md")
    parser.add_argument("extra", nargs="*", help="extra flags for stitch generate (after --)")
    args = parser.parse_args()
    rows = []
    for mode in args.modes:
        r = run_mode(mode, args.max_side, args.extra)
        pv = r["per_view_s"]
        ratio = pv[-1] / pv[1] if len(pv) > 2 else float("nan")
        print(
            f"{mode}: wall {r['wall_s']:.1f} s, peak RSS {r['peak_mb']:.0f} MB, {r['n_gaussians']} Gaussians"
        )
        print("  per view (s): " + ", ".join(f"{t:.1f}" for t in pv))
        if len(pv) > 2:
            print(f"  last added view / view 2 cost ratio: {ratio:.2f}")
        steps = {
            k: round(sum(t.get(k, 0.0) for t in r["timings"]), 2) for k in r["timings"][-1] if k[0] != "n"
        }
        print(f"  time per step name (s): {steps}")
        rows.append((mode, r, ratio))
    if args.append:
        date = datetime.date.today().isoformat()
        machine = f"{platform.machine()} {platform.processor() or ''} 2-core CPU".strip()
        with (REPO / "benchmarks" / "RESULTS.md").open("a") as f:
            for mode, r, ratio in rows:
                f.write(f"| {date} | {machine} | generate {mode} Kyoto max-side {args.max_side} | "
                        f"{r['wall_s']:.1f} s wall, {r['peak_mb']:.0f} MB peak | view 2 | "
                        f"last/2nd view {ratio:.2f} |\n")  # fmt: skip


if __name__ == "__main__":
    main()
