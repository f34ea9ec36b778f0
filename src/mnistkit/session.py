"""One ``mnistkit train`` from start to end: a new or a resumed run, in one process or under torchrun.

The command line parses its options into a ``TrainRequest`` and prints what comes back; this does the
rest: the config (given, or the run's own when resuming), the process group, Ctrl-C and SIGTERM, the run folder, the
reporters, the clean-up after a failed start, the command that resumes an interrupted run, and going on
from the last resume state when torchrun restarts the worker group after a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from . import distributed, fileio, resume, runs, torchrun
from .config import TrainConfig
from .errors import FULL_DISK, FULL_DISK_ADVICE, ConfigError, WriteError, stopped_by
from .mlflow_log import MlflowReporter, require_mlflow
from .train import Interrupt, Reporter, RunResult, TrainingInterrupted, check_resume_every, resolve_device, train_run


@dataclass
class TrainRequest:
    """What to train and how to report it: a new run's ``config``, or the run folder to ``resume``."""

    config: TrainConfig | None = None
    resume: str | Path | None = None  # a run folder: go on with its saved options from its resume state
    device: str | None = None  # where a resumed run runs now [default: where it ran]
    out: str | Path | None = None  # a new run's folder [default: runs/<time>-<model>]
    overwrite: bool = False  # replace an existing run folder
    quiet: bool = False
    tensorboard: bool = False
    mlflow: bool = False  # also track the run in MLflow (MLFLOW_TRACKING_URI, else MLflow's local default)
    resume_every: int = 0  # save the resume state every N batches too, not only at each epoch's end
    command: str | None = None  # the command line that started the run, recorded in model.json


def train(request: TrainRequest, announce: Callable[[str], None] = lambda line: None) -> RunResult:
    """Run the request to its end; ``announce`` receives the line saying what starts (on rank 0 only), once the
    data is loaded and training set up.

    Returns the run's result on every rank; its ``run_dir`` is None on every rank but 0.
    """
    check_resume_every(request.resume_every)
    request = _after_restart(request)
    cfg = _config(request)
    if request.tensorboard:
        from .tensorboard_log import require_tensorboard

        require_tensorboard()  # before the run folder exists, so a missing extra leaves nothing behind
    if request.mlflow:
        require_mlflow()
    with ExitStack() as stack:
        ctx = stack.enter_context(distributed.process_group(resolve_device(cfg.device)))
        # Under torchrun, SIGTERM is how the agent stops a worker group that cannot go on: the workers could
        # no longer agree on a batch to stop after, so it keeps its default there.
        interrupt = stack.enter_context(Interrupt(announce=ctx.is_main, terminate=not ctx.distributed))
        ctx.check_batch_size(cfg.batch_size)
        run_dir = _run_folder(stack, request, cfg, ctx)
        state = resume.open_state(request.resume) if request.resume is not None else None
        # Announced only when training starts: a run refused by its data (a val_size as large as the training set)
        # must not first claim to be training.
        started = partial(announce, _start_line(cfg, state, run_dir, ctx)) if run_dir is not None else None
        try:
            # Every rank learns when rank 0 cannot start its reporters (a tracking store MLflow refuses, say).
            reporter = ctx.on_main(lambda: _reporter(stack, request, cfg, run_dir))
            result = train_run(
                cfg,
                run_dir,
                reporter,
                request.command,
                ctx=ctx,
                resume_from=state,
                resume_every=request.resume_every,
                interrupt=interrupt,
                started=started,
            )
        except TrainingInterrupted as exc:
            if run_dir is None:
                raise
            raise TrainingInterrupted(
                f"{exc}; checkpoint saved. Resume with: {resume_command(run_dir, ctx)}", signum=exc.signum
            ) from None
        except BaseException as exc:
            if run_dir is None or not resume.has_state(run_dir):
                if state is None and run_dir is not None:
                    runs.take_back(run_dir)
                raise
            # metrics.csv, the final model or the progress lines (output to a full disk) could not be written: the
            # resume state has the work done
            if isinstance(exc, WriteError) or (isinstance(exc, OSError) and exc.errno in FULL_DISK):
                # Less the advice to run again, which would find the run folder there: it is resumed instead.
                if isinstance(exc, WriteError):
                    what = str(exc).removesuffix(f"; {FULL_DISK_ADVICE}")
                else:
                    what = f"cannot write: {exc.strerror}"
                raise WriteError(
                    f"{what}; the run's last checkpoint is intact: free some space (or fix the folder), then resume "
                    f"with: {resume_command(run_dir, ctx)}"
                ) from None
            if isinstance(exc, KeyboardInterrupt):  # a second signal: no new checkpoint, but the last one is there
                raise TrainingInterrupted(
                    f"{stopped_by(interrupt.signum)} at once; the last checkpoint is intact. "
                    f"Resume with: {resume_command(run_dir, ctx)}",
                    signum=interrupt.signum,
                ) from None
            raise
        if run_dir is not None:
            runs.release(run_dir)
        if isinstance(reporter, MlflowReporter):
            # The finished run folder becomes the MLflow run's artifacts.
            reporter.finish(result.test_loss, result.test_accuracy)
    return result


def resume_command(run_dir: Path, ctx: distributed.Context) -> str:
    """The command that continues ``run_dir`` where it stopped, with the same number of processes."""
    if ctx.world_size != ctx.local_world_size:  # several machines: only their torchrun commands can start it
        return f"{resume.command(run_dir)} (under the same torchrun command)"
    return resume.command(run_dir, ctx.world_size)


def _after_restart(request: TrainRequest) -> TrainRequest:
    """Started again by torchrun after a failure (``--max-restarts``), a new run goes on from the resume
    state of the folder this torchrun job claimed, rather than starting over or refusing its own folder."""
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if torchrun.restart_count() == 0 or request.resume is not None or request.config is None or job is None:
        return request
    folder = runs.claimed_by(job, request.out)
    if folder is None:
        return request
    if resume.has_state(folder):
        return replace(request, config=None, resume=folder, device=request.config.device)
    return replace(request, out=folder, overwrite=True)  # it failed before its first resume state


def _config(request: TrainRequest) -> TrainConfig:
    if request.resume is not None:
        return resume.open_config(request.resume, device=request.device)
    if request.config is None:
        raise ConfigError("give a config for a new run, or a run folder to resume")
    if request.config.data:  # recorded so, the run can be evaluated or resumed from any folder
        return replace(request.config, data=os.path.abspath(os.path.expanduser(request.config.data)))
    return request.config


def _run_folder(
    stack: ExitStack,
    request: TrainRequest,
    cfg: TrainConfig,
    ctx: distributed.Context,
) -> Path | None:
    """The run folder on rank 0 (a new one is created and claimed by this torchrun job), held until ``stack``
    closes so that no other run writes into it meanwhile; None elsewhere."""
    if request.resume is not None:
        resumed = fileio.recorded_path(request.resume)
        return ctx.on_main(lambda: _hold_to_resume(stack, resumed))
    run_dir = ctx.on_main(lambda: stack.enter_context(runs.writing(request.out, cfg.model, request.overwrite)))
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_dir is not None and job is not None:
        runs.claim(run_dir, job)
    return run_dir


def _hold_to_resume(stack: ExitStack, run_dir: Path) -> Path:
    """Held, and found writable before training rather than at the end of the first epoch."""
    held = stack.enter_context(runs.hold(run_dir))
    runs.check_writable(held, [held, resume.state_dir(held)], "resume")
    return held


def _start_line(cfg: TrainConfig, state: resume.ResumeState | None, run_dir: Path, ctx: distributed.Context) -> str:
    processes = f" in {ctx.world_size} processes ({ctx.backend})" if ctx.distributed else ""
    if state is not None:
        return f"resuming {run_dir} at {state.position}{processes}"
    epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    init = f" from {cfg.init}" if cfg.init is not None else ""
    mixed = f" with {cfg.mix_mnist:.0%} MNIST" if cfg.mix_mnist else ""
    return f"training {cfg.model}{init} on {cfg.data or cfg.dataset}{mixed} for {epochs}{processes} -> {run_dir}"


def _reporter(stack: ExitStack, request: TrainRequest, cfg: TrainConfig, run_dir: Path | None) -> Reporter | None:
    """The progress display, and TensorBoard's event files and MLflow tracking when asked for, for the process
    that writes the run folder (None elsewhere); closed when the stack closes (an MLflow run still open then is
    marked KILLED)."""
    if run_dir is None:
        return None
    from .progress import ConsoleReporter

    reporter: Reporter = stack.enter_context(closing(ConsoleReporter(quiet=request.quiet, batch_size=cfg.batch_size)))
    if request.tensorboard:
        from .tensorboard_log import TensorBoardReporter

        reporter = stack.enter_context(closing(TensorBoardReporter(run_dir, reporter, config=cfg.to_dict())))
    if request.mlflow:
        reporter = stack.enter_context(closing(MlflowReporter(run_dir, reporter, config=cfg.to_dict())))
    return reporter
