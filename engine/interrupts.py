"""Ctrl-C during a long run: an interrupt that Python would drop inside a finaliser still stops the run."""

from __future__ import annotations

import contextlib
import time

from engine.events import PipelineEvent


@contextlib.contextmanager
def interrupts_that_stick():
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered; the callback this yields raises it
    again at the next pipeline event. Why: a KeyboardInterrupt that lands while Python runs a finaliser
    (`__del__` of a torch/numba object) is printed and dropped, and the run would go on to finish with exit
    0. Outside the main thread (the viewer's Stitch-here worker) signals cannot be handled here and nothing
    changes."""
    import signal
    import threading

    caught: list[int] = []

    def check(event: PipelineEvent) -> None:
        if caught:
            raise KeyboardInterrupt

    # Outside the main thread signals cannot be handled; a SIGINT ignored by the parent (nohup, `&`)
    # stays ignored.
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        yield check
        return

    def handler(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
