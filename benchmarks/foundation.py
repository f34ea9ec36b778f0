"""The foundation's figures, side by side in one run on this machine (each measurement in a fresh process):

- per-epoch time of the mlp at batch 64: mnistkit's loop (--preset tutorial) vs the tutorial's own loop
  (its TensorDataset + DataLoader, SGD lr 0.001, 25 epochs; goal: <= 0.5x), and the floor under it: the
  float32 matrix products alone of such an epoch;
- training time to the tutorial's final validation loss (0.379): goal <= 1/30 of the tutorial's 25 epochs;
- the mlp to >= 98.0% test accuracy (--preset fast, 5 seeds): goal <= 3 s of training;
- peak RSS of a plain `mnistkit train` (the default cnn, run folder included): goal <= 1.5 GB.

    .venv/bin/python benchmarks/foundation.py [--seeds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnistkit import bench

# A fresh parent whose only child is `mnistkit train`: its children's peak RSS is exactly that command's.
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def peak_rss_of_train() -> dict:
    """Run `mnistkit train` (all defaults) and report its peak RSS, wall time and test accuracy line."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cmd = [
            sys.executable,
            "-c",
            MEASURE,
            sys.executable,
            "-m",
            "mnistkit",
            "train",
            "--quiet",
            "--out",
            str(Path(tmp) / "run"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mnistkit train failed: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    test_line = next(line for line in lines if line.startswith("test accuracy"))
    return {"peak_rss_mb": int(lines[-1]) / 1024, "wall_seconds": seconds, "result": test_line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    # The tutorial's loop, --preset tutorial, the time to its final val loss and --preset fast: mnistkit bench's jobs.
    report = bench.run_benchmark(["fast"], args.seeds, against_tutorial=True, device="cpu", log=log)
    log("mnistkit train (defaults) for its peak memory ...")
    report["mnistkit_train"] = train = peak_rss_of_train()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    t, fast = report["tutorial"], report["presets"][0]
    loop, ours, to_loss = t["loop"], t["preset_tutorial"], t["time_to_val_loss"]
    rows = [
        (
            "mlp epoch at batch 64 (s)",
            f"{statistics.median(ours['epoch_seconds']):.3f} "
            f"vs tutorial {statistics.median(loop['epoch_seconds']):.3f}",
            f"{t['epoch_seconds_ratio']:.2f}x",
            "<= 0.5x",
        ),
        (
            "  floor: its float32 matmuls alone (s)",
            f"{statistics.median(t['gemm_floor']['epoch_seconds']):.3f}",
            f"{t['gemm_floor_ratio']:.2f}x",
            "",
        ),
        (
            "time to val loss 0.379 (s)",
            f"{to_loss['seconds']:.2f} vs tutorial {loop['train_seconds']:.1f}"
            if to_loss["seconds"]
            else "not reached",
            f"1/{1 / t['time_to_final_val_loss_ratio']:.0f}" if to_loss["seconds"] else "-",
            "<= 1/30",
        ),
        (
            f"mlp >= 98.0% test ({args.seeds} seeds)",
            f"{fast['accuracy_mean']:.2%} ± {fast['accuracy_std']:.2%}, "
            f"{fast['reached_target']}/{fast['seeds']} reach it",
            f"{fast['train_seconds_median']:.2f} s",
            "<= 3 s",
        ),
        ("peak RSS of mnistkit train (MB)", train["result"], f"{train['peak_rss_mb']:.0f}", "<= 1536"),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in [("figure", "measured", "value", "goal"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))
    print(
        f"\ntutorial loop: val loss {loop['val_losses'][0]:.4f} -> {loop['val_losses'][-1]:.4f} "
        f"over {loop['epochs']} epochs, val accuracy {loop['val_accuracy']:.2%}; "
        f"mnistkit --preset tutorial: val loss {ours['val_losses'][0]:.4f} after epoch 1"
    )
    m = report["machine"]
    print(f"machine: {m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}, {m['platform']}")


if __name__ == "__main__":
    main()
