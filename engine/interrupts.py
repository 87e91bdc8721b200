"""Ctrl-C during a long run: an interrupt that Python would drop inside a finaliser still stops the run."""

from __future__ import annotations

import contextlib
import signal
import threading

from engine.events import PipelineEvent


def _ctrl_c_can_reach_us() -> bool:
    """Only the main thread can handle signals, and a SIGINT ignored by the parent (nohup, `&`) stays
    ignored: there neither helper below installs a handler."""
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    )


@contextlib.contextmanager
def interrupts_that_stick():
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered; the callback this yields raises it
    again at the next pipeline event. Why: a KeyboardInterrupt that lands while Python runs a finaliser
    (`__del__` of a torch/numba object) is printed and dropped, and the run would go on to finish with exit
    0. Outside the main thread (the viewer's Stitch-here worker) signals cannot be handled here and nothing
    changes."""
    caught: list[int] = []

    def check(event: PipelineEvent) -> None:
        if caught:
            raise KeyboardInterrupt

    if not _ctrl_c_can_reach_us():
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
    """Block until Ctrl-C (a viewer left open). The handler sets an event as well as raising: a
    KeyboardInterrupt that lands in a finaliser is dropped by Python, and the wait would never end."""
    stop = threading.Event()
    if not _ctrl_c_can_reach_us():
        stop.wait()  # no Ctrl-C can arrive here; the process ends by other signals
        return

    def handler(signum, frame):
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass  # the Ctrl-C this waited for
    finally:
        signal.signal(signal.SIGINT, previous)
