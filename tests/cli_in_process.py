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
    except SystemExit as exc:  # the status the interpreter would exit with: None -> 0, a message -> 1
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
