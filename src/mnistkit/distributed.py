"""Multi-process training on PyTorch's own engine: torchrun, DistributedDataParallel, all-reduce.

``torchrun --nproc-per-node N -m mnistkit train …`` starts N processes and tells each its place through
environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). ``process_group`` reads
them and joins the group: NCCL on CUDA (one GPU per process), Gloo on CPU. ``mnistkit train --nproc N``
launches the same through torchrun's launcher. Tasks that ``srun`` started directly join the same way
(``torchrun.adopt_slurm_task``), and a process group that a framework made already (Ray Train, accelerate) is
used as it is. Started any other way, everything here is a no-op for one process, so the training code has a
single path.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from . import data, resume, runs
from .errors import ConfigError, MnistkitError, TrainingError, stopped_by
from .torchrun import (
    adopt_slurm_task,
    check_launch_environment,
    die_with_launcher,
    launched_by_torchrun,
    restart_count,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job (rank 0 of 1 unless torchrun started it), and the collective calls
    the training loop makes through it. For one process every call is a no-op, so the loop has one path."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine
    backend: str | None = None
    control_group: dist.ProcessGroup | None = None  # a Gloo group for small CPU-side votes (stop now?) beside NCCL

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}

    # ----------------------------------------------------------------------------------------------
    # Collectives

    def on_main(self, work: Callable[[], T]) -> T | None:
        """Run ``work`` on rank 0 only (creating the run folder, say); every rank learns whether it failed, so
        none waits forever for a rank that has already given up. Returns its result on rank 0, None elsewhere."""
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except MnistkitError as exc:
                error = exc
        if self.agree(error is not None) and error is None:
            raise PeerFailed("rank 0 failed; see its message")
        if error is not None:
            raise error
        return result

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (a blocking vote on the CPU)."""
        if not self.distributed:
            return flag
        vote = torch.tensor([int(flag)])
        dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=self.control_group)
        return bool(vote.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control_group)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place; returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (same shape on all), stacked: row r is rank r's."""
        if not self.distributed:
            return tensor[None]
        rows = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(rows, tensor.contiguous())
        return torch.stack(rows)

    # ----------------------------------------------------------------------------------------------
    # The model and the data

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(
                f"batch_size {batch_size} is the global batch and must divide evenly among {self.world_size} "
                f"processes; use a multiple of {self.world_size}",
                options=("batch_size",),
            )

    def steps_per_epoch(self, examples: int, batch_size: int) -> int:
        """Batches per epoch on every rank, as ``data.batches`` cuts this rank's shard."""
        shard = examples // self.world_size
        local_batch = max(1, batch_size // self.world_size)
        return -(-shard // local_batch)

    def shard(self, split: data.Split) -> data.Split:
        """Every world_size-th example of ``split``, from this rank's: what it evaluates."""
        if not self.distributed:
            return split
        return data.Split(split.images[self.rank :: self.world_size], split.labels[self.rank :: self.world_size])

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``model`` (rank 0's weights are broadcast to all); the model itself
        for one process."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def evaluation_model(self, model: nn.Module, trained: nn.Module) -> nn.Module:
        """What scores a shard: the bare ``model`` when distributed (each rank its own shard, outside DDP),
        else ``trained``, the model as the loop calls it (compiled, say)."""
        return model if self.distributed else trained

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics): each rank updated its own on its last batch."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def check_in_sync(self, model: nn.Module) -> None:
        """Raise TrainingError unless every rank holds bitwise the same weights and buffers as rank 0."""
        if not self.distributed:
            return
        differ = []
        for name, tensor in model.state_dict().items():
            reference = tensor.detach().clone()
            dist.broadcast(reference, src=0)
            if not torch.equal(reference, tensor):
                differ.append(name)
        if self.agree(bool(differ)):
            raise TrainingError(
                f"the ranks' weights differ ({', '.join(differ[:3]) or 'on another rank'}); "
                "distributed training went out of step"
            )


class PeerFailed(MnistkitError):
    """Another rank failed; it printed why."""


@contextmanager
def process_group(device: torch.device) -> Iterator[Context]:
    """Join torchrun's process group for the lifetime of the block; a single-process Context otherwise.

    ``device`` is the resolved device of the run; on CUDA each process takes GPU ``LOCAL_RANK``. Leaving
    the block waits for every rank, then takes the group down safely (see ``_leave``). A process group that
    exists already is used instead, and left up (see ``_existing_group``).
    """
    if dist.is_available() and dist.is_initialized():
        with _existing_group(device) as ctx:
            yield ctx
        return
    adopt_slurm_task()
    check_launch_environment()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not launched_by_torchrun():
        yield Context(device)
        return
    die_with_launcher()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device, backend = _device_and_backend(device, local_rank)
    _init_group(backend, device if backend == "nccl" else None, rank, world_size)
    control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    try:
        yield Context(device, rank, world_size, local_rank, local_world_size, backend, control)
    except BaseException:
        _leave(control, LEAVE_AFTER_ERROR)
        raise
    _leave(control, None)


@contextmanager
def _existing_group(device: torch.device) -> Iterator[Context]:
    """The default process group that the caller made (Ray Train and accelerate do, before calling in) as the
    job: its ranks and backend, and the GPU the caller chose for this process. The group is the caller's, so
    it stays up; only a Gloo group made here for the votes is taken down."""
    backend = str(dist.get_backend())
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    elif "gloo" not in backend:
        raise ConfigError(
            f"the existing process group uses {backend}, which cannot train on {device.type}; "
            "train on cuda (--device cuda) or make the group with the gloo backend"
        )
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    local_rank = int(os.environ.get("LOCAL_RANK", rank % local_world_size))
    control = dist.group.WORLD if backend == "gloo" else dist.new_group(backend="gloo")
    context = Context(device, rank, world_size, local_rank, local_world_size, backend, control)
    try:
        yield context
    except BaseException:
        _leave(control, LEAVE_AFTER_ERROR, owns_world=False)
        raise
    _leave(control, None, owns_world=False)


def _device_and_backend(device: torch.device, local_rank: int) -> tuple[torch.device, str]:
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local_rank} on this node has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device, "nccl"
    if device.type == "cpu":
        return device, "gloo"
    raise ConfigError(
        f"multi-process training runs on CUDA (NCCL) or CPU (Gloo), not on {device.type}; use device cpu or cuda",
        options=("device",),
    )


def _init_group(backend: str, device_id: torch.device | None, rank: int, world_size: int) -> None:
    """``init_process_group`` from torchrun's environment. A group that torchrun restarted after a failure
    (``--max-restarts``) meets in the same store as the failed one, whose keys still name the dead workers'
    addresses (Gloo would connect to them and fail): it meets under a prefix of its own attempt instead."""
    attempt = restart_count()
    if attempt == 0:
        dist.init_process_group(backend, device_id=device_id)
        return
    hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and rank == 0  # else the agent hosts it
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=hosts, multi_tenant=True
    )
    prefixed = dist.PrefixStore(f"mnistkit/attempt-{attempt}", store)
    dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world_size, device_id=device_id)


PROCESSES_PER_CORE = 4  # --nproc beyond this many per core is a mistake, not a plan
LEAVE_AFTER_ERROR = timedelta(seconds=10)  # how long a failing rank waits for the others before leaving alone
DRAIN_SECONDS = 0.2  # for Gloo's threads to let go of their last work objects


def _leave(control_group: dist.ProcessGroup | None, timeout: timedelta | None, owns_world: bool = True) -> None:
    """Take the process group down so that the process can exit cleanly.

    After the last collective, Gloo's threads release work objects that hold Python objects; that needs
    the GIL. Should the main thread already be finalizing the interpreter, CPython (before 3.14) ends such a
    thread with a forced unwind through a noexcept C++ destructor, and the process aborts ("terminate
    called without an active exception"). So: a barrier (every rank's collectives are complete), destroying
    the group (its threads stop), and a short sleep that releases the GIL while they finish. A rank that
    failed alone waits ``timeout`` at most for the others (None: the group's own timeout).

    In a process group that the caller made (not ``owns_world``), only ``control_group`` is ours to destroy,
    if it is a group of its own.
    """
    try:
        dist.monitored_barrier(group=control_group, timeout=timeout, wait_all_ranks=True)
    except RuntimeError:  # another rank did not come: it failed too, or is stuck; torchrun ends it
        pass
    if owns_world:
        dist.destroy_process_group()
    elif control_group is not dist.group.WORLD:
        dist.destroy_process_group(control_group)
    else:
        return
    time.sleep(DRAIN_SECONDS)


# --------------------------------------------------------------------------------------------------
# mnistkit train --nproc N


def max_processes() -> int:
    """The most processes ``launch`` starts: each holds a copy of PyTorch and the data (some 300 MB), and more
    processes than cores only wait for each other; an absurd count must not start them one by one until memory
    runs out."""
    return PROCESSES_PER_CORE * (os.cpu_count() or 1)


def launch(nproc: int, argv: list[str], *, out: str | None = None, resumed: str | None = None) -> int:
    """Run ``mnistkit <argv>`` as ``nproc`` processes on this machine with torchrun's launcher (standalone
    rendezvous on a free local port). Returns the exit code: the first failed rank's, else 0. ``out`` and
    ``resumed``: the run folder that ``argv`` names, if any (``--out``, ``--resume``), for the message that
    says how to resume the run when the launcher is stopped.

    Each process prints and reports like a torchrun worker: rank 0 speaks, the others stay silent. The
    launcher's own failure report is replaced by one line, since the failed rank has already said why.
    """
    most = max_processes()
    if not 1 <= nproc <= most:
        raise ConfigError(
            f"nproc must be from 1 to {most} ({PROCESSES_PER_CORE} per CPU core of this machine), got {nproc}",
            options=("nproc",),
        )
    # torchrun would set 1 thread per process and say so in a banner; share this machine's cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    _quiet_launcher_logs()

    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "mnistkit"])
    args.training_script_args = list(argv)  # not parsed by torchrun: its --nproc-per-node would claim our --nproc
    try:
        run(args)  # torchrun itself, less its crash report
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode in (MnistkitError.exit_code, 130):
            # Process 0 printed its own error; another process left its line (torchrun.record_error), and unless
            # process 0 failed on an error too, the launcher stopped it before it could say one.
            first = exc.failures.get(0)
            said = first is not None and first.exitcode == MnistkitError.exit_code
            if rank != 0 and not said and os.path.isfile(failure.error_file):
                print(failure.message, file=sys.stderr)
            return failure.exitcode
        reason = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        print(f"mnistkit: error: process {rank} of {nproc} failed ({reason}); see its output above", file=sys.stderr)
        return 1
    except SignalException as exc:
        if exc.sigval != signal.SIGTERM:  # Ctrl-C: the launcher passed it to every process, which saved and stopped
            return 130
        # The launcher stopped its processes with SIGTERM, which they cannot agree to stop after one batch on: the
        # run keeps the resume state it saved last, and no process was left to say so.
        folder = Path(resumed) if resumed is not None else runs.claimed_by(args.rdzv_id, out)
        print(f"mnistkit: error: {stopped_by(signal.SIGTERM)}; {_what_is_left(folder, nproc)}", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


def _what_is_left(folder: Path | None, nproc: int) -> str:
    """What a run stopped from outside leaves, and what to do next, said in part of a line."""
    if folder is not None and resume.has_state(folder):
        return (
            "the run keeps its last checkpoint (each epoch's end, or every --checkpoint-every batches). "
            f"Resume with: {resume.command(folder, nproc)}"
        )
    if folder is None or not folder.exists():
        return "the run had no checkpoint yet: train it again"
    return f"the run had no checkpoint yet: train it again, with --overwrite to reuse {folder}"


def _quiet_launcher_logs() -> None:
    """Silence the launcher's log lines (closing signals, exit codes): a rank that fails says why itself."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
