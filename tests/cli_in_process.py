"""Run `stitch ARGS` inside the test process (fast, no interpreter start): (exit code, stdout, stderr)."""

from __future__ import annotations

import sys


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    import cli

    old = sys.argv
    sys.argv = ["stitch", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
