"""Ctrl-C during training: finish the step in flight, then stop at a clean point."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopRequest:
    """Set by SIGINT while training runs; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def deferred_sigint():
    """Within the block, the first SIGINT only sets ``stop.requested`` (the training loop
    checks it between steps); outside the main thread nothing changes."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
