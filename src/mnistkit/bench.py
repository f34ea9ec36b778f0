"""Benchmarks: time to a target test accuracy for each speed preset, side by side with the tutorial's loop.

Every measurement runs in a fresh child process (``python -m mnistkit.bench JOB``), so one job's warm
caches, threads or memory do not flatter the next, and each reports its own peak RSS. Training time is
counted from the first training step to the end of training; loading the data and testing are reported
separately. The test set is only ever used for the final figure. The ``ensemble`` entry trains several
members of a preset, each in its own process, and tests the mean of their probabilities.

The roofline: each preset's FLOPs per epoch (its real model's matrix products and convolutions, forward and
backward, counted by PyTorch's ``FlopCounterMode``), the rate it achieved, and that rate as a fraction of the
peak that this machine's matrix products reach in the same precision, measured in the same run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import torchrun
from .errors import MnistkitError

if TYPE_CHECKING:
    import torch

# preset -> (target test accuracy, training-time goal in seconds on a 2-core CPU)
TARGETS: dict[str, tuple[float, float]] = {
    "fast": (0.98, 0.8),
    "cnn": (0.99, 2.5),
    "accurate": (0.995, 25.0),
    "best": (0.9975, 900.0),
}
MAX_SEEDS = 1000  # runs of one preset in one benchmark: more would take days, and an int that large, forever
MAX_MEMBERS = 100
ENSEMBLE = "ensemble"  # not a preset: several members of one (``run_ensemble``)
ENSEMBLE_TARGET = (0.998, 1800.0)  # its target test accuracy, and the goal for all its members' training together
PRECISIONS = ("float32", "bfloat16")  # the peaks measured; a preset trains in one of them
PRECISION_NAMES = {"float32": "fp32", "bfloat16": "bf16"}
MAX_PRODUCT_SECONDS = 0.5  # matmul_peak times no larger size once one product would take this long
TUTORIAL_FINAL_VAL_LOSS = 0.379  # the tutorial's loop after 25 epochs, measured on the bundled data
TUTORIAL_EPOCHS = 25  # the tutorial's loop, as it ran
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # what caps a job's compute threads (``run_job``)


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# --------------------------------------------------------------------------------------------------
# The roofline: the work of a training step, and the machine's peak rate


def training_step_flops(model: torch.nn.Module, batch_size: int) -> int:
    """FLOPs of one training step's forward and backward pass (cross-entropy loss) on ``batch_size`` 28x28
    images, as ``FlopCounterMode`` counts them: the matrix products and convolutions, which are nearly all
    the arithmetic; elementwise work (BatchNorm, ReLU, pooling, the optimizer) is not counted. Counted on a
    copy, so the model's weights, gradients and BatchNorm statistics stay as they were."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    counted = copy.deepcopy(model).train()
    device = next(counted.parameters()).device
    x = torch.randn(batch_size, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        logits = counted(x)
        y = torch.zeros(batch_size, dtype=torch.long, device=device)
        F.cross_entropy(logits, y).backward()
    return int(counter.get_total_flops())


def matmul_peak(
    dtype: torch.dtype,
    sizes: tuple[int, ...] = (256, 384, 512, 1024, 2048),
    repeats: int = 5,
    device: str = "cpu",
    seconds: float = 0.1,
) -> float:
    """The highest rate, in FLOP/s, of square matrix products ``n x n @ n x n`` in ``dtype`` over ``sizes`` and
    ``repeats`` timings of about ``seconds`` each: the machine's practical peak. On a CPU shared with other work
    the fastest timing is the one least disturbed. Which size is fastest depends on the CPU: with AVX-512 alone
    the ones that fit the caches (256-512), with Intel's AMX tiles the larger ones (2048: twice 512's rate).

    A size whose one product would take longer than ``MAX_PRODUCT_SECONDS`` at the best rate so far is not
    timed: that precision is emulated there (bf16 on a CPU without AVX512-BF16 runs at about 1 GFLOP/s, where
    the 2048 product alone takes 15 s), and larger products would not raise its rate."""
    import torch

    best = 0.0
    for n in sizes:
        flops = 2 * n**3
        if best and flops / best > MAX_PRODUCT_SECONDS:
            break
        a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, dtype=dtype, device=device)
        for _ in range(3):  # warm-up: the kernels' first calls pick and pack; the last one sizes the timings
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            _synchronize(device)
            one = time.perf_counter() - start
        calls = max(1, int(seconds / max(one, 1e-9)))
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b, out=out)
            _synchronize(device)
            best = max(best, flops * calls / (time.perf_counter() - start))
    return best


def _synchronize(device: str) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------
# Jobs (each runs in its own process)


def job_preset(
    preset: str, seed: int, device: str, data: str | None = None, compile: bool = False, out: str | None = None
) -> dict[str, Any]:
    """Train one preset with one seed exactly as ``mnistkit train --preset`` does, without writing files unless
    ``out`` names a run folder to save it in. ``compile`` trains it torch.compiled, as ``mnistkit train --compile``."""
    from .config import make_config
    from .runs import create_run_dir
    from .train import resolve_device, train_run, use_bf16

    cfg = make_config(preset, seed=seed, device=device, data=data, compile=compile or None)
    result = train_run(cfg, create_run_dir(out, cfg.model) if out is not None else None)
    m = result.meta["metrics"]
    images = result.meta["dataset"]["train"]
    # Matrix-product FLOPs grow with the batch, so the last, partial batch counts by its share.
    step_flops = training_step_flops(result.model, cfg.batch_size)
    return {
        "preset": preset,
        "seed": seed,
        "model": result.meta["model"],
        "epochs": m["epochs"],
        "test_accuracy": m["test_accuracy"],
        "train_seconds": m["train_seconds"],
        "load_seconds": m["load_seconds"],
        "test_seconds": m["test_seconds"],
        "train_images": images,
        "flops_per_epoch": step_flops * images / cfg.batch_size,
        "precision": "bfloat16" if use_bf16(cfg.amp, resolve_device(cfg.device)) else "float32",
        "threads": cpu_threads(),
        "peak_rss_mb": peak_rss_mb(),
    }


def job_matmul_peak(device: str = "auto") -> dict[str, Any]:
    """The machine's peak matrix-product rate in float32 and in bfloat16, FLOP/s (``matmul_peak``)."""
    import torch

    from .train import resolve_device

    where = str(resolve_device(device))
    return {"device": where, **{name: matmul_peak(getattr(torch, name), device=where) for name in PRECISIONS}}


def job_tutorial_loop(epochs: int = TUTORIAL_EPOCHS, chunks: list[int] | None = None) -> dict[str, Any]:
    """The tutorial's own loop: its MLP, TensorDataset + DataLoader at batch 64, SGD lr 0.001, one
    ``fit`` call per epoch so each epoch is timed (its validation pass included, as in the tutorial).

    With ``chunks`` (epochs per chunk, instead of ``epochs`` in one) the loop prints a line once loaded and after each
    chunk, and waits for a line on standard input before each: ``TutorialLoop`` runs the presets' jobs in
    those pauses."""
    import torch
    from torch.utils.data import TensorDataset

    from . import tutorial
    from .data import Normalization, load_bundled_mnist
    from .evaluate import loss_and_accuracy

    torch.manual_seed(0)
    start = time.perf_counter()
    x_train, y_train, x_valid, y_valid = tutorial.load_mnist()
    train_dl, valid_dl = tutorial.get_data(TensorDataset(x_train, y_train), TensorDataset(x_valid, y_valid), 64)
    load_seconds = time.perf_counter() - start
    model, opt = tutorial.get_model()
    epoch_seconds: list[float] = []
    val_losses: list[float] = []
    if chunks:
        print(json.dumps({"epochs_done": 0}), flush=True)  # loaded: nothing else runs beside the chunks
    for chunk in chunks or [epochs]:
        if chunks and not sys.stdin.readline():
            raise SystemExit("the benchmark that ran this loop has stopped")
        for _ in range(chunk):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                val_losses += tutorial.fit(1, model, torch.nn.functional.cross_entropy, opt, train_dl, valid_dl)
            epoch_seconds.append(time.perf_counter() - start)
        if chunks:
            print(json.dumps({"epochs_done": len(epoch_seconds)}), flush=True)
    with torch.no_grad():
        val_accuracy = (model(x_valid).argmax(1) == y_valid).float().mean().item()
    test = load_bundled_mnist().test
    assert test is not None  # the bundled MNIST has its test set
    _, test_accuracy = loss_and_accuracy(model, test, Normalization(0.0, 1.0, 256.0))
    return {
        "epochs": len(epoch_seconds),
        "chunks": chunks or [epochs],
        "train_seconds": sum(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "val_losses": val_losses,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "load_seconds": load_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def job_tutorial_preset(epochs: int = 3) -> dict[str, Any]:
    """mnistkit's fast path on the tutorial's exact settings (``--preset tutorial``): per-epoch seconds."""
    from .config import make_config
    from .train import train_run

    result = train_run(make_config("tutorial", epochs=epochs))
    return {
        "epochs": epochs,
        "epoch_seconds": [h.seconds for h in result.history],
        "val_losses": [h.val_loss for h in result.history],
        "peak_rss_mb": peak_rss_mb(),
    }


def job_gemm_floor(batch_size: int = 64, epochs: int = 3) -> dict[str, Any]:
    """The floor under any mlp epoch at ``batch_size``: only the eight float32 matrix products of every
    step (three forward, three weight gradients, two input gradients), into preallocated outputs, with no
    autograd, optimizer, data or Python bookkeeping around them. Seconds per epoch of 50,000 images."""
    import torch

    from .models import MLP

    torch.manual_seed(0)
    model = MLP()
    weights = [layer.weight.detach().t().contiguous() for layer in (model.hidden1, model.hidden2, model.out)]
    sizes = [784, 128, 256, 10]
    acts = [torch.randn(batch_size, n) for n in sizes]  # layer inputs and outputs
    grads = [torch.randn(batch_size, n) for n in sizes]  # gradients at the same places
    weight_grads = [torch.empty_like(w) for w in weights]

    def step() -> None:
        for i, w in enumerate(weights):  # forward
            torch.mm(acts[i], w, out=acts[i + 1])
        for i in reversed(range(3)):  # backward: weight gradients, and input gradients except the first layer's
            torch.mm(acts[i].t(), grads[i + 1], out=weight_grads[i])
            if i:
                torch.mm(grads[i + 1], weights[i].t(), out=grads[i])

    steps = 50_000 // batch_size
    for _ in range(100):
        step()
    epoch_seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        epoch_seconds.append(time.perf_counter() - start)
    return {"batch_size": batch_size, "epoch_seconds": epoch_seconds}


class _TargetReached(Exception):
    pass


def job_time_to_val_loss(
    target: float = TUTORIAL_FINAL_VAL_LOSS, preset: str = "fast", **overrides: Any
) -> dict[str, Any]:
    """Training seconds until the validation loss (the tutorial's 10,000 held-out images) drops to
    ``target``, checked every few dozen steps; the checks themselves are not counted. ``overrides``
    change the preset's options (a constant learning rate, say)."""
    from . import data
    from .config import make_config
    from .evaluate import loss_and_accuracy
    from .models import create_model
    from .train import fit, resolve_device, seed_everything

    cfg = make_config(preset, val_size=10_000, device="cpu", **overrides)
    seed_everything(cfg.seed)
    splits = data.split_dataset(data.load_bundled_mnist(), cfg.val_size)
    norm = data.standardization(splits.train)
    device = resolve_device(cfg.device)
    model = create_model(cfg.model, **cfg.model_options()).to(device)
    assert splits.val is not None  # the preset holds validation images out
    train, val = splits.train.to(device), splits.val.to(device)
    start, excluded, last = None, 0.0, {}

    class Probe:
        def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            nonlocal start
            if start is None:  # the clock starts at the first training step, as for the presets
                start = time.perf_counter()

        def step_done(self, steps_done: int) -> None:
            pass

        def batches_done(self, steps_done: int, running_loss: float) -> None:
            nonlocal excluded
            paused = time.perf_counter()
            assert start is not None  # set by epoch_start
            last["seconds"] = paused - start - excluded
            last["val_loss"], _ = loss_and_accuracy(model, val, norm)
            excluded += time.perf_counter() - paused
            if last["val_loss"] <= target:
                raise _TargetReached

        def epoch_end(self, stats) -> None:
            pass

    try:
        fit(model, train, None, cfg, norm, reporter=Probe())
    except _TargetReached:
        return {"preset": preset, "target": target, "seconds": last["seconds"], "val_loss": last["val_loss"]}
    return {"preset": preset, "target": target, "seconds": None, "val_loss": last.get("val_loss")}


def job_ensemble(paths: list[str]) -> dict[str, Any]:
    """The test accuracy of the ensemble of the saved runs at ``paths``: the mean of their probabilities."""
    from .evaluate import evaluate_ensemble

    start = time.perf_counter()
    accuracy = evaluate_ensemble(paths).accuracy
    return {"test_accuracy": accuracy, "test_seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "preset": job_preset,
    "ensemble": job_ensemble,
    "tutorial_loop": job_tutorial_loop,
    "tutorial_preset": job_tutorial_preset,
    "time_to_val_loss": job_time_to_val_loss,
    "gemm_floor": job_gemm_floor,
    "matmul_peak": job_matmul_peak,
}


def run_job(kind: str, threads: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run one job in a fresh Python process and return its JSON result; ``threads`` caps the process's
    compute threads (PyTorch's and its libraries' thread pools), otherwise they take every core."""
    env = None if threads is None else {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}
    proc = subprocess.run(_job_command(kind, **kwargs), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise _job_failed(kind, kwargs, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _job_command(kind: str, **kwargs: Any) -> list[str]:
    return [sys.executable, "-m", "mnistkit.bench", json.dumps({"kind": kind, **kwargs})]


def _job_failed(kind: str, kwargs: dict[str, Any], stderr: str) -> MnistkitError:
    """The error for a job whose process failed: the last line it wrote to standard error, without the name of
    the exception's class when it is one of mnistkit's own (their messages say what is wrong)."""
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    tail = re.sub(r"^mnistkit\.errors\.\w+: ", "", tail)
    what = f"the {kwargs['preset']} preset (seed {kwargs['seed']})" if kind == "preset" else f"the {kind} job"
    return MnistkitError(f"benchmark: {what} failed: {tail}")


class TutorialLoop:
    """The tutorial's loop in a process of its own, its epochs run in ``chunks`` between other jobs.

    On a shared machine the pace wanders for tens of seconds at a time: a reference timed all at once, before
    the presets, can fall in a slow spell while they run in a quick one, and every ratio moves with it. Spread
    between their runs, its median epoch is the pace of the whole benchmark."""

    def __init__(self, chunks: list[int]):
        self.chunks = chunks
        self.done = 0
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            _job_command("tutorial_loop", chunks=chunks),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self._wait_for_chunk()  # the loop's loading

    def __enter__(self) -> TutorialLoop:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.proc.poll() is None:  # a preset's job failed: the loop is not needed any more
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.stderr):
            if pipe is not None:
                pipe.close()

    def run_chunk(self) -> None:
        """Run the next chunk of epochs, and wait until it is done."""
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # the process ended
            self._failed()
        self._wait_for_chunk()
        self.done += 1

    def _wait_for_chunk(self) -> None:
        assert self.proc.stdout is not None  # a pipe
        while not (line := self.proc.stdout.readline()).startswith('{"epochs_done"'):
            if not line:  # the process ended
                self._failed()

    def finish(self) -> dict[str, Any]:
        """Run the chunks left, and return the loop's result (``job_tutorial_loop``)."""
        while self.done < len(self.chunks):
            self.run_chunk()
        assert self.proc.stdout is not None  # a pipe
        out = self.proc.stdout.read()
        if self.proc.wait() != 0 or not out.strip():
            self._failed()
        return json.loads(out.strip().splitlines()[-1])

    def _failed(self) -> None:
        self.proc.wait()
        self.stderr.seek(0)
        raise _job_failed("tutorial_loop", {"chunks": self.chunks}, self.stderr.read())


def spread(epochs: int, pauses: int) -> list[int]:
    """``epochs`` split into ``pauses`` chunks as even as can be, the larger ones first."""
    return [epochs // pauses + (i < epochs % pauses) for i in range(pauses)]


# --------------------------------------------------------------------------------------------------
# The whole benchmark


def run_ensemble(
    index: int,
    members: int,
    member_preset: str,
    device: str,
    data: str | None = None,
    compile: bool = False,
    log=print,
    side_by_side: int = 1,
) -> dict[str, Any]:
    """One ensemble: ``members`` runs of ``member_preset`` (seeds ``index * members`` on, so that ensembles share
    none), each trained in a fresh process as ``mnistkit train --preset`` does and saved in a temporary folder, then
    the mean of their probabilities tested.

    ``side_by_side`` members train at once, the cores shared out evenly among them: a small network keeps two
    cores busier as two one-thread runs than as one two-thread run. The ensemble's training time is then the wall
    time from the first member's start to the last one's end (their loading and own testing included, so it is
    never less than the training alone); one at a time, it is the sum of the members' training times."""
    side_by_side = max(1, min(side_by_side, members))
    threads = max(1, cpu_threads() // side_by_side) if side_by_side > 1 else None

    failed = threading.Event()
    log_lock = threading.Lock()  # members start from several threads: one line at a time

    def member(k: int) -> dict[str, Any]:
        if failed.is_set():  # an earlier member failed: start no more (the failure is raised, not this)
            raise MnistkitError(f"{ENSEMBLE} member {k + 1} not started")
        seed = index * members + k
        with log_lock:
            log(f"{ENSEMBLE} {index + 1}: member {k + 1}/{members} ({member_preset}, seed {seed}) ...")
        try:
            return run_job(
                "preset",
                threads=threads,
                preset=member_preset,
                seed=seed,
                device=device,
                data=data,
                compile=compile,
                out=paths[k],
            )
        except BaseException:
            failed.set()
            raise

    with tempfile.TemporaryDirectory(prefix="mnistkit-ensemble-") as tmp:
        paths = [f"{tmp}/member-{k + 1}" for k in range(members)]
        start = time.perf_counter()
        with ThreadPoolExecutor(side_by_side) as pool:  # waits for the members running when one fails
            futures = [pool.submit(member, k) for k in range(members)]
        # Members start in order, so a failed one comes before any it kept from starting.
        rows = [future.result() for future in futures]
        wall_seconds = time.perf_counter() - start
        tested = run_job("ensemble", paths=paths)
    return {
        "preset": ENSEMBLE,
        "seed": index,
        "model": f"{members}×{member_preset}",
        "epochs": rows[0]["epochs"],
        "side_by_side": side_by_side,
        "test_accuracy": tested["test_accuracy"],
        "train_seconds": wall_seconds if side_by_side > 1 else sum(r["train_seconds"] for r in rows),
        "load_seconds": sum(r["load_seconds"] for r in rows),
        "test_seconds": tested["test_seconds"],
        "peak_rss_mb": max(tested["peak_rss_mb"], *(r["peak_rss_mb"] for r in rows)),
        "flops_per_epoch": sum(r["flops_per_epoch"] for r in rows),  # an epoch of every member
        "precision": rows[0]["precision"],
        "members": rows,
    }


def tutorial_reference_seconds(loop: dict[str, Any]) -> float:
    """What the presets' speed-ups are measured against: the tutorial loop's epochs at its median epoch's pace.
    The presets' times are medians of their seeds too; a burst of other work on a shared machine during a few
    of the loop's epochs must not move every ratio."""
    return statistics.median(loop["epoch_seconds"]) * loop["epochs"]


def summarize(
    preset: str, rows: list[dict[str, Any]], reference_seconds: float | None, peaks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One preset's figures over its seeds; with ``peaks`` (``job_matmul_peak``), its place on the roofline."""
    target, goal = ENSEMBLE_TARGET if preset == ENSEMBLE else TARGETS[preset]
    accs = [r["test_accuracy"] for r in rows]
    secs = [r["train_seconds"] for r in rows]
    median = statistics.median(secs)
    precision = rows[0]["precision"]
    achieved = rows[0]["flops_per_epoch"] * rows[0]["epochs"] / median
    return {
        "preset": preset,
        "model": rows[0]["model"],
        "epochs": rows[0]["epochs"],
        "seeds": len(rows),
        "target_accuracy": target,
        "time_goal_seconds": goal,
        "accuracy_mean": statistics.fmean(accs),
        "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "accuracy_min": min(accs),
        "reached_target": sum(a >= target for a in accs),
        "train_seconds_median": median,
        "train_seconds_max": max(secs),
        "load_seconds_median": statistics.median(r["load_seconds"] for r in rows),
        "test_seconds_median": statistics.median(r["test_seconds"] for r in rows),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "speedup_vs_tutorial": reference_seconds / median if reference_seconds else None,
        "flops_per_epoch": rows[0]["flops_per_epoch"],
        "precision": precision,
        "achieved_flops_per_second": achieved,  # the epochs' FLOPs over the median training time
        "peak_fraction": achieved / peaks[precision] if peaks else None,
        "runs": rows,
    }


def cpu_threads() -> int:
    """The compute threads a job takes by default: PyTorch's count (the cores this process may use)."""
    import torch

    return torch.get_num_threads()


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": cpu_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_benchmark(
    presets: list[str],
    seeds: int,
    against_tutorial: bool,
    device: str = "auto",
    log=print,
    data: str | None = None,
    compile: bool = False,
    members: int = 3,
    member_preset: str = "best",
    side_by_side: int | None = None,
) -> dict[str, Any]:
    """Run every preset with ``seeds`` seeds (and the tutorial's loop as the reference) and collect the report.
    The ``ensemble`` entry runs ``seeds`` ensembles of ``members`` runs of ``member_preset`` (``run_ensemble``),
    ``side_by_side`` members at a time: by default one on a GPU, and on a CPU one per core.

    ``data`` trains the presets on another dataset (a path, as ``mnistkit train --data``); the tutorial's
    reference always runs on the bundled MNIST, as the tutorial did. ``compile`` trains the presets
    torch.compiled (the compilation counts in the training time); the reference never is.
    """
    unknown = [p for p in presets if p not in TARGETS and p != ENSEMBLE]
    if unknown:
        raise MnistkitError(f"unknown benchmark preset '{unknown[0]}'; choose from: {', '.join([*TARGETS, ENSEMBLE])}")
    if not 1 <= seeds <= MAX_SEEDS:
        raise MnistkitError(f"seeds must be from 1 to {MAX_SEEDS:,}, got {seeds}", options=("seeds",))
    if ENSEMBLE in presets and not 1 <= members <= MAX_MEMBERS:
        raise MnistkitError(f"members must be from 1 to {MAX_MEMBERS}, got {members}", options=("members",))
    if side_by_side is not None and side_by_side < 1:
        raise MnistkitError(f"side_by_side must be at least 1, got {side_by_side}", options=("side_by_side",))
    from .distributed import PROCESSES_PER_CORE, max_processes  # torch, imported only once a benchmark runs

    if side_by_side is not None and side_by_side > max_processes():  # each a process with PyTorch and the data
        raise MnistkitError(
            f"side_by_side must be at most {max_processes()} ({PROCESSES_PER_CORE} per CPU core of this machine), "
            f"got {side_by_side}",
            options=("side_by_side",),
        )
    if ENSEMBLE in presets and member_preset not in TARGETS:
        raise MnistkitError(
            f"unknown member preset '{member_preset}'; choose from: {', '.join(TARGETS)}", options=("member_preset",)
        )
    if data is not None:  # a wrong path or an unreadable file stops here, not after minutes of reference runs
        from .data import load_dataset

        load_dataset(data)
    report: dict[str, Any] = {
        "machine": machine(),
        "device": device,
        "compile": compile,
        "data": data or "mnist (bundled)",
        "presets": [],
        "tutorial": None,
        "matmul_peak": None,
    }
    with contextlib.ExitStack() as stack:
        loop = None
        if against_tutorial:
            # paused before the presets' first run and after each one (an ensemble is one run)
            chunks = spread(TUTORIAL_EPOCHS, len(presets) * seeds + 1)
            log(f"tutorial loop (DataLoader, batch 64, SGD lr 0.001, {TUTORIAL_EPOCHS} epochs between the runs) ...")
            loop = stack.enter_context(TutorialLoop(chunks))
            fast_path = run_job("tutorial_preset")
            to_loss = run_job("time_to_val_loss")
            floor = run_job("gemm_floor")
        log("peak matrix-product rate, float32 and bfloat16 ...")
        peaks = report["matmul_peak"] = run_job("matmul_peak", device=device)
        if side_by_side is None:
            side_by_side = cpu_threads() if peaks["device"] == "cpu" else 1
        if loop is not None:
            loop.run_chunk()
        runs: dict[str, list[dict[str, Any]]] = {}
        for preset in presets:
            rows = runs[preset] = []
            for seed in range(seeds):
                if preset == ENSEMBLE:
                    rows.append(run_ensemble(seed, members, member_preset, device, data, compile, log, side_by_side))
                else:
                    log(f"{preset}: seed {seed + 1}/{seeds} ...")
                    rows.append(run_job("preset", preset=preset, seed=seed, device=device, data=data, compile=compile))
                if loop is not None:
                    loop.run_chunk()
        reference_seconds = None
        if loop is not None:
            tutorial_loop = loop.finish()
            loop_epoch = statistics.median(tutorial_loop["epoch_seconds"])
            reference_seconds = tutorial_reference_seconds(tutorial_loop)
            ours_epoch = statistics.median(fast_path["epoch_seconds"])
            report["tutorial"] = {
                "loop": tutorial_loop,
                "reference_seconds": reference_seconds,
                "preset_tutorial": fast_path,
                "time_to_val_loss": to_loss,
                "gemm_floor": floor,
                "epoch_seconds_ratio": ours_epoch / loop_epoch,
                "gemm_floor_ratio": statistics.median(floor["epoch_seconds"]) / loop_epoch,
                "time_to_final_val_loss_ratio": (to_loss["seconds"] / tutorial_loop["train_seconds"])
                if to_loss["seconds"]
                else None,
            }
    report["presets"] = [summarize(preset, rows, reference_seconds, peaks) for preset, rows in runs.items()]
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    header = (
        f"{'preset':<9}{'model':<6}{'target':>8}{'accuracy mean ± std':>22}{'min':>8}{'reached':>9}{'train s':>9}"
        f"{'goal s':>8}{'load s':>8}{'test s':>8}{'RSS MB':>8}{'speed-up':>10}"
        f"{'GFLOP/epoch':>13}{'GFLOP/s':>9}{'of peak':>14}"
    )
    lines += [header, "-" * len(header)]
    for p in report["presets"]:
        speedup = f"{p['speedup_vs_tutorial']:.1f}x" if p["speedup_vs_tutorial"] else "-"
        of_peak = f"{p['peak_fraction']:.1%} {PRECISION_NAMES[p['precision']]}" if p["peak_fraction"] else "-"
        lines.append(
            f"{p['preset']:<9}{p['model']:<6}{p['target_accuracy']:>8.2%}"
            f"{p['accuracy_mean']:>13.2%} ± {p['accuracy_std']:.2%}{p['accuracy_min']:>8.2%}"
            f"{p['reached_target']:>5}/{p['seeds']:<3}{p['train_seconds_median']:>9.2f}{p['time_goal_seconds']:>8g}"
            f"{p['load_seconds_median']:>8.2f}{p['test_seconds_median']:>8.2f}{p['peak_rss_mb']:>8.0f}{speedup:>10}"
            f"{p['flops_per_epoch'] / 1e9:>13,.0f}{p['achieved_flops_per_second'] / 1e9:>9,.0f}{of_peak:>14}"
        )
    for p in report["presets"]:
        if p["preset"] == ENSEMBLE:
            first = p["runs"][0]
            side_by_side, threads = first["side_by_side"], first["members"][0]["threads"]
            lines.append(
                f"{ENSEMBLE}: each {p['model']}, {side_by_side} member{'s' if side_by_side > 1 else ''} at a time "
                f"on {threads} thread{'s' if threads > 1 else ''} each; "
                + (
                    "train s is their wall time, loading and testing included"
                    if side_by_side > 1
                    else "train s is the sum of their training times"
                )
            )
    t = report.get("tutorial")
    if t:
        loop, ours, to_loss = t["loop"], t["preset_tutorial"], t["time_to_val_loss"]
        chunks = len(loop.get("chunks", []))
        parts = f", in {chunks} parts between the presets' runs" if chunks > 1 else ""
        lines += [
            "",
            f"tutorial loop: {loop['epochs']} epochs in {loop['train_seconds']:.1f} s{parts} "
            f"({statistics.median(loop['epoch_seconds']):.3f} s/epoch; speed-ups are against "
            f"{loop['epochs']} of those, {t['reference_seconds']:.1f} s), "
            f"val loss {loop['val_losses'][0]:.4f} -> {loop['val_losses'][-1]:.4f}, "
            f"val accuracy {loop['val_accuracy']:.2%}, test accuracy {loop['test_accuracy']:.2%}, "
            f"peak RSS {loop['peak_rss_mb']:.0f} MB",
            f"mnistkit --preset tutorial: {statistics.median(ours['epoch_seconds']):.3f} s/epoch "
            f"= {t['epoch_seconds_ratio']:.2f}x the tutorial loop's epoch; "
            f"val loss after epoch 1: {ours['val_losses'][0]:.4f}",
            "floor: the float32 matrix products alone of an mlp epoch at batch 64 take "
            f"{statistics.median(t['gemm_floor']['epoch_seconds']):.3f} s "
            f"= {t['gemm_floor_ratio']:.2f}x the tutorial loop's epoch",
        ]
        if to_loss["seconds"] is not None:
            lines.append(
                f"time to the tutorial's final val loss {to_loss['target']}: {to_loss['seconds']:.2f} s "
                f"with --preset {to_loss['preset']} "
                f"= 1/{1 / t['time_to_final_val_loss_ratio']:.0f} of the tutorial loop's {loop['train_seconds']:.1f} s"
            )
    peaks = report.get("matmul_peak")
    if peaks:
        lines += [
            "",
            "roofline: GFLOP/epoch counts the matrix products and convolutions of the preset's training steps "
            "(forward and backward); its peak is the fastest square matrix product in the same precision on "
            f"{peaks['device']} in this run: float32 {peaks['float32'] / 1e9:,.0f} GFLOP/s, "
            f"bfloat16 {peaks['bfloat16'] / 1e9:,.0f} GFLOP/s",
        ]
    m = report["machine"]
    lines += [
        "",
        f"machine: {m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}, {m['platform']}"
        + (f", GPU {m['cuda']}" if m["cuda"] else "")
        + (", models torch.compiled" if report.get("compile") else ""),
    ]
    return "\n".join(lines)


def main() -> None:
    # A job would otherwise outlive a benchmark killed with SIGTERM or SIGKILL, training on for minutes.
    torchrun.die_with_parent()
    job = json.loads(sys.argv[1])
    kind = job.pop("kind")
    print(json.dumps(JOBS[kind](**job)))


if __name__ == "__main__":
    main()
