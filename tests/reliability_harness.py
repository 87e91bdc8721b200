"""Helpers for tests/test_reliability_*.py: synthetic photos and a fast way to run the real CLI many times.

`run_cli_many` starts ONE Python process that imports the CLI and the engine once, then forks a child per
case; each child sets sys.argv and runs `cli.main()` exactly as `python -c "from cli import main; main()"`
would (its own stdout/stderr files, its own exit code, an uncaught exception prints the interpreter's
traceback and exits 1). A cold `python -c` costs seconds of imports per case on a loaded 2-core box; a fork
costs milliseconds, so the input matrix can go through the real entry point case by case. The peak resident
memory of each child (wait4's ru_maxrss) comes back too, minus that of a child that exits at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from cli import main; main()"]

_DRIVER = r"""
import json, os, signal, sys, time, traceback
sys.path.insert(0, os.getcwd())
import cli  # noqa: F401  (the entry point under test)
# Pay the imports once (the engine imports torch._dynamo, scipy.sparse and pydantic lazily on first use).
import engine.run, engine.pipeline, engine.quality  # noqa: F401
import engine.backends.registry, engine.backends.depth_classical  # noqa: F401
import splat.formats.io, splat.render, splat.optimize, viewer.saved, torch._dynamo, torch.optim  # noqa: F401
import scipy.sparse, pydantic, typer  # noqa: F401
from PIL import Image; Image.init()
payload = json.loads(sys.stdin.read())
for name in payload["preload"]:
    __import__(name)
# Warm typer's command tree and the CLI's lazy imports with two refused commands (no torch op runs, so
# no thread pool exists before fork).
for warm in (["info", "/nonexistent.ply"], ["generate", "/nonexistent.jpg", "--mode", "nope"]):
    sys.argv = ["stitch", *warm]
    with open(os.devnull, "w") as null:
        saved = sys.stderr
        sys.stderr = null
        try:
            cli.main()
        except SystemExit:
            pass
        finally:
            sys.stderr = saved
cases = payload["cases"]

# The peak of a child that does nothing: the baseline each case's peak is measured against.
sys.stdout.flush(); sys.stderr.flush()
pid = os.fork()
if pid == 0:
    os._exit(0)
base_rss = os.wait4(pid, 0)[2].ru_maxrss
results = []
for i, case in enumerate(cases):
    out_path, err_path = case["stdout"], case["stderr"]
    sys.stdout.flush(); sys.stderr.flush()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            fd_err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd_out, 1); os.dup2(fd_err, 2)
            if case.get("cwd"):
                os.chdir(case["cwd"])
            for key, value in case.get("env", {}).items():
                os.environ[key] = value
            sys.argv = ["stitch", *case["args"]]
            signal.alarm(case["timeout"])  # a hung case dies with SIGALRM (exit -14) instead of hanging all
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                c = exc.code
                code = c if isinstance(c, int) else (0 if c is None else 1)
                if c is not None and not isinstance(c, int):
                    print(c, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    results.append(
        {"code": code, "maxrss_kib": usage.ru_maxrss, "base_rss_kib": base_rss, "seconds": seconds}
    )
print(json.dumps(results))
"""


@dataclass
class CliResult:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    peak_rss_mib: float  # the child's peak resident memory above what it inherited at fork
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli_many(
    cases: list[list],
    workdir: Path,
    env: dict[str, str] | None = None,
    case_timeout: int = 120,
    preload: tuple[str, ...] = (),
) -> list[CliResult]:
    """Run `stitch ARGS` once per case (real entry point, forked children) -> results in order.

    A case that runs longer than case_timeout seconds is killed (exit code -14, SIGALRM). preload: modules
    to import once before forking (e.g. transformers for model cases)."""
    workdir.mkdir(parents=True, exist_ok=True)
    payload = []
    for i, args in enumerate(cases):
        payload.append(
            {
                "args": [os.fsdecode(a) for a in args],
                "stdout": str(workdir / f"case{i}.out"),
                "stderr": str(workdir / f"case{i}.err"),
                "env": env or {},
                "timeout": int(case_timeout),
            }
        )
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER],
        cwd=REPO,
        input=json.dumps({"preload": list(preload), "cases": payload}),
        capture_output=True,
        text=True,
        timeout=60 + case_timeout * len(cases),
        env={**os.environ, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    results = []
    for case, row in zip(payload, rows, strict=True):
        results.append(
            CliResult(
                args=case["args"],
                code=row["code"],
                stdout=Path(case["stdout"]).read_text(errors="replace"),
                stderr=Path(case["stderr"]).read_text(errors="replace"),
                peak_rss_mib=max(0, row["maxrss_kib"] - row["base_rss_kib"]) / 1024.0,
                seconds=row["seconds"],
            )
        )
    return results


def run_cli(args: list, cwd: Path = REPO, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """One cold `python -c "from cli import main; main()" ARGS` (bytes arguments allowed)."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, timeout=timeout, **kw)


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured, depth-cued test photo uint8 [H, W, 3]: sky gradient on top, a checkered ground plane
    below, a few coloured blocks (edges for the depth prior and the outpainter to work with)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = v / max(height - 1, 1), u / max(width - 1, 1)
    img = np.zeros((height, width, 3), np.float32)
    img[...] = np.stack([0.45 + 0.3 * y, 0.6 + 0.25 * y, 0.95 - 0.1 * y], -1)  # sky
    ground = y > 0.55
    depth_cue = 1.0 / np.maximum(y - 0.5, 0.02)
    checker = ((np.floor(x * 12 * (1 + 0.1 * depth_cue)) + np.floor(depth_cue * 2)) % 2).astype(np.float32)
    img[ground] = (np.stack([0.35 + 0.3 * checker, 0.3 + 0.2 * checker, 0.2 + 0.1 * checker], -1))[ground]
    for _ in range(5):
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.3, 0.7)
        w, h = rng.uniform(0.05, 0.15), rng.uniform(0.1, 0.3)
        box = (abs(x - cx) < w) & (abs(y - cy) < h)
        img[box] = rng.uniform(0.1, 0.9, 3)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_photo(path: Path, width: int = 96, height: int = 64, seed: int = 0, **save_kw) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_photo(width, height, seed)).save(path, **save_kw)
    return path
