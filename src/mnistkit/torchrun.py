"""This process as a torchrun worker: what it learns from the environment, and how it lives and ends.

A task that Slurm's ``srun`` started directly, one of several in its job step, becomes such a worker too: it
takes the place Slurm gave it as torchrun would give it. Imports no torch, so the command line can ask these
questions for free.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from .errors import ConfigError


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def adopt_slurm_task() -> None:
    """Started by ``srun`` as one of several tasks of a job step, without torchrun: set the variables torchrun
    would set (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) from Slurm's, so that the tasks train as one job
    rather than as N runs writing the same folder. They meet at MASTER_ADDR:MASTER_PORT, which the job script
    exports (the first node, a free port); without them, a ConfigError saying so. Elsewhere, a no-op.

    ``SLURM_STEP_NUM_TASKS`` is set by ``srun`` only: a batch script itself (SLURM_NTASKS=N, SLURM_PROCID=0)
    is one process, not task 0 of N.
    """
    tasks = slurm_step_tasks()
    if launched_by_torchrun() or tasks <= 1:
        return
    # First, so that only the first task of each node prints the error below.
    os.environ["RANK"], os.environ["WORLD_SIZE"] = os.environ["SLURM_PROCID"], str(tasks)
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    on_node = _tasks_on_node(os.environ.get("SLURM_STEP_TASKS_PER_NODE", ""), int(os.environ.get("SLURM_NODEID", "0")))
    if on_node is not None:
        os.environ["LOCAL_WORLD_SIZE"] = str(on_node)
    missing = _missing_meeting_point()
    if missing:
        raise ConfigError(
            f"srun started {tasks} tasks without torchrun, and {missing} not set: export "
            "MASTER_ADDR (the first node) and MASTER_PORT (a free port), or start with srun torchrun as "
            "examples/slurm.sbatch does"
        )


def _missing_meeting_point() -> str:
    """Which of MASTER_ADDR and MASTER_PORT are not set, as "X is" or "X and Y are"; "" if both are."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}" if missing else ""


LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT")  # whole numbers


def check_launch_environment() -> None:
    """The variables torchrun gives its workers, where they are set: whole numbers, a rank below the world size,
    and where to meet (MASTER_ADDR, MASTER_PORT). A ConfigError naming the first that is wrong: set by hand or
    left over in a shell, they would otherwise fail deep inside torch.distributed, with a traceback."""
    fix = "start with torchrun (mnistkit train --nproc N), or unset it"
    for name in LAUNCH_VARIABLES:
        value = os.environ.get(name)
        if value is not None and not value.strip().isdigit():
            raise ConfigError(f"{name}={value!r} in the environment is not a whole number: {fix}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not launched_by_torchrun():
        return
    rank = int(os.environ.get("RANK", "0"))
    if rank >= world_size:
        raise ConfigError(f"RANK={rank} in the environment is not below WORLD_SIZE={world_size}: {fix}")
    missing = _missing_meeting_point()
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world_size} in the environment asks for {world_size} processes, but {missing} not set: "
            "start with torchrun (mnistkit train --nproc N), or unset RANK and WORLD_SIZE"
        )


def slurm_step_tasks() -> int:
    """How many tasks ``srun`` started in this job step (1 outside one)."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))


def _tasks_on_node(spec: str, node: int) -> int | None:
    """The number of tasks on node ``node`` from Slurm's compact list ("4(x2),3": 4, 4, 3); None if unreadable."""
    counts: list[int] = []
    try:
        for part in spec.split(","):
            count, _, repeat = part.partition("(x")
            counts += [int(count)] * int(repeat.rstrip(")") or 1)
    except ValueError:
        return None
    return counts[node] if 0 <= node < len(counts) else None


def prints_errors() -> bool:
    """Whether this process prints a user error: rank 0, and the first process of each other node (an
    error there, such as a data path missing on that machine, is otherwise invisible). On one machine that
    is one line, not one per process."""
    return os.environ.get("RANK", "0") == "0" or os.environ.get("LOCAL_RANK", "0") == "0"


def record_error(line: str) -> None:
    """The error of a process that does not print it (``prints_errors``), left where torchrun's launcher reads a
    failed worker's reason (``TORCHELASTIC_ERROR_FILE``): when this process fails first, the launcher stops process
    0 before it can say anything, and ``mnistkit train --nproc`` says this line instead."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w", encoding="utf-8") as file:
                json.dump({"message": line, "timestamp": int(time.time())}, file)
        except OSError:
            pass  # the launcher then says which process failed, without the reason


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
    a torchrun agent (TORCHELASTIC_RUN_ID), whose parent is that agent; elsewhere a no-op.
    """
    if "TORCHELASTIC_RUN_ID" in os.environ:
        die_with_parent()


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM here when the process that started this one dies; off Linux, a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
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
