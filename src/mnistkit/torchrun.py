"""This process as a torchrun worker: what it learns from the environment, and how it lives and ends.

Imports no torch, so the command line can ask these questions for free.
"""

from __future__ import annotations

import os
import signal
import sys


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def prints_errors() -> bool:
    """Whether this process prints a user error: rank 0, and the first process of each other node (an
    error there, such as a data path missing on that machine, is otherwise invisible). On one machine that
    is one line, not one per process."""
    return os.environ.get("RANK", "0") == "0" or os.environ.get("LOCAL_RANK", "0") == "0"


def restart_count() -> int:
    """How often torchrun restarted the worker group after a failure (``--max-restarts``); 0 on the first try."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_launcher() -> None:
    """Ask Linux to send SIGTERM here when the torchrun agent that started this worker dies.

    The agent starts workers in their own session, so without this a ``kill -9`` of the launcher leaves
    them training on and writing the run folder, racing any resume started meanwhile. Only for workers of
    a torchrun agent (TORCHELASTIC_RUN_ID), whose parent is that agent; elsewhere, and off Linux, a no-op.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def exit_worker(code: int) -> None:
    """End a torchrun worker with ``code`` after flushing its output, skipping interpreter finalization.

    Gloo's threads may still drop objects that need the GIL after the last collective; if that happens
    while Python finalizes, CPython (before 3.14) ends the thread in a way that runs into a noexcept C++
    destructor and the worker aborts (SIGABRT, "terminate called without an active exception"). A worker
    has nothing left to do at that point, so it leaves without finalizing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
