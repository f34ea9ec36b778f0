"""Stress the two-process (Gloo) torchrun path and count aborted processes.

A Gloo worker that exits right after its last collective could abort with SIGABRT ("terminate called
without an active exception") while Python finalized. This runs the two-rank path many times under induced
CPU contention (both ranks and the launcher pinned onto one core with ``taskset``) and prints, per mode,
how many runs aborted and how many failed otherwise:

  library  a script that joins ``mnistkit.distributed.process_group`` and makes 20 all-reduces through its
           Context (rank 1 writes nothing, so its last collective comes just before it exits), as a library
           user would under torchrun;
  train    a script that trains with ``train_run`` inside ``process_group``, as the library's users do
           (1 epoch of the mlp on a small generated data set);
  cli      ``mnistkit train --nproc 2`` on a small generated data set (1 epoch of the mlp);
  raw      the same all-reduces on a plain ``init_process_group``, leaving the group to interpreter exit:
           the reference that shows the abort this guards against.

Usage: python benchmarks/stress_ddp.py [--runs 50] [--modes library train cli raw] [--no-taskset]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ALL_REDUCES = 20

LIBRARY_SCRIPT = textwrap.dedent(f"""
    import torch
    from mnistkit import distributed

    with distributed.process_group(torch.device("cpu")) as ctx:
        total = torch.zeros(1)
        for _ in range({ALL_REDUCES}):
            total += ctx.all_sum(torch.ones(1))
        if ctx.is_main:
            print(int(total.item()))
""")

RAW_SCRIPT = textwrap.dedent(f"""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    total = torch.zeros(1)
    for _ in range({ALL_REDUCES}):
        t = torch.ones(1)
        dist.all_reduce(t)
        total += t
    if dist.get_rank() == 0:
        print(int(total.item()))
""")

TRAIN_SCRIPT = textwrap.dedent("""
    import sys
    from mnistkit import distributed, runs
    from mnistkit.config import make_config
    from mnistkit.train import resolve_device, train_run

    cfg = make_config(model="mlp", epochs=1, batch_size=64, val_size=100, device="cpu", data=sys.argv[1])
    with distributed.process_group(resolve_device(cfg.device)) as ctx:
        run_dir = ctx.on_main(lambda: runs.create_run_dir(sys.argv[2], cfg.model))
        train_run(cfg, run_dir, ctx=ctx)
""")


def write_digits(folder: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """A small learnable IDX data set: class k lights up its own block of the image."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            row, col = divmod(int(k), 5)
            images[i, 2 + row * 12 : 12 + row * 12, 1 + col * 5 : 5 + col * 5] = 250
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (folder / f"{prefix}-{kind}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return folder


def command(mode: str, work: Path, run: int) -> list[str]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    if mode == "library":
        return [*torchrun, str(work / "library.py")]
    if mode == "raw":
        return [*torchrun, str(work / "raw.py")]
    if mode == "train":
        return [*torchrun, str(work / "train.py"), str(work / "digits"), str(work / f"train-{run}")]
    return [
        *[sys.executable, "-m", "mnistkit", "train", "--nproc", "2", "--data", str(work / "digits")],
        *["--model", "mlp", "--epochs", "1", "--val-size", "100", "--batch-size", "64", "--quiet"],
        *["--out", str(work / f"cli-{run}")],
    ]


def classify(done: subprocess.CompletedProcess) -> str:
    text = done.stdout + done.stderr
    if "terminate called" in text or "SIGABRT" in text or done.returncode in (-6, 134):
        return "abort"
    return "ok" if done.returncode == 0 else "failed"


def stress(mode: str, runs: int, work: Path, pin: list[str]) -> dict:
    counts = {"ok": 0, "abort": 0, "failed": 0}
    first_failure = None
    start = time.perf_counter()
    for run in range(runs):
        done = subprocess.run([*pin, *command(mode, work, run)], capture_output=True, text=True, timeout=600)
        outcome = classify(done)
        counts[outcome] += 1
        if outcome != "ok" and first_failure is None:
            first_failure = (done.stdout + done.stderr).strip().splitlines()[-3:]
        print(f"  {mode} run {run + 1}/{runs}: {outcome} (exit {done.returncode})", file=sys.stderr, flush=True)
    return {"mode": mode, "runs": runs, **counts, "seconds": time.perf_counter() - start, "first": first_failure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs per mode [default: 50]")
    parser.add_argument(
        "--modes", nargs="+", choices=["library", "train", "cli", "raw"], default=["library", "train", "cli"]
    )
    parser.add_argument("--no-taskset", action="store_true", help="do not pin the processes onto one core")
    args = parser.parse_args()
    pin = [] if args.no_taskset or shutil.which("taskset") is None else ["taskset", "-c", "0"]
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "library.py").write_text(LIBRARY_SCRIPT)
        (work / "raw.py").write_text(RAW_SCRIPT)
        (work / "train.py").write_text(TRAIN_SCRIPT)
        write_digits(work / "digits")
        results = [stress(mode, args.runs, work, pin) for mode in args.modes]
    print(
        f"{platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"{'pinned with ' + ' '.join(pin) if pin else 'not pinned'}"
    )
    for r in results:
        print(
            f"{r['mode']:<8} {r['runs']} runs: {r['abort']} aborted, {r['failed']} failed otherwise, "
            f"{r['ok']} clean ({r['seconds']:.0f} s)"
        )
        if r["first"]:
            print("         first failure: " + " | ".join(r["first"]))


if __name__ == "__main__":
    main()
