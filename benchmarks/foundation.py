"""The foundation's figures, side by side in one run on this machine (each measurement in a fresh process):

- per-epoch time of the mlp at batch 64: mnistkit's loop (--preset tutorial) vs the tutorial's own loop
  (its TensorDataset + DataLoader, SGD lr 0.001, 25 epochs; goal: <= 0.5x);
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
        cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "mnistkit", "train", "--quiet", "--out", str(Path(tmp) / "run")]
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
    log("the tutorial's loop, 25 epochs ...")
    loop = bench.run_job("tutorial_loop")
    log("mnistkit --preset tutorial, 3 epochs ...")
    ours = bench.run_job("tutorial_preset")
    log("time to the tutorial's final validation loss ...")
    to_loss = bench.run_job("time_to_val_loss")
    fast = []
    for seed in range(args.seeds):
        log(f"--preset fast, seed {seed} ...")
        fast.append(bench.run_job("preset", preset="fast", seed=seed, device="cpu"))
    log("mnistkit train (defaults) for its peak memory ...")
    train = peak_rss_of_train()

    loop_epoch = statistics.median(loop["epoch_seconds"])
    ours_epoch = statistics.median(ours["epoch_seconds"])
    fast_secs = statistics.median(r["train_seconds"] for r in fast)
    accs = [r["test_accuracy"] for r in fast]
    figures = {
        "tutorial_loop": loop, "preset_tutorial": ours, "time_to_val_loss": to_loss, "preset_fast": fast,
        "mnistkit_train": train, "machine": bench.machine(),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    rows = [
        ("mlp epoch at batch 64 (s)", f"{ours_epoch:.3f} vs tutorial {loop_epoch:.3f}", f"{ours_epoch / loop_epoch:.2f}x", "<= 0.5x"),
        ("time to val loss 0.379 (s)",
         f"{to_loss['seconds']:.2f} vs tutorial {loop['train_seconds']:.1f}" if to_loss["seconds"] else "not reached",
         f"1/{loop['train_seconds'] / to_loss['seconds']:.0f}" if to_loss["seconds"] else "-", "<= 1/30"),
        (f"mlp >= 98.0% test ({args.seeds} seeds)",
         f"{statistics.fmean(accs):.2%} ± {statistics.pstdev(accs):.2%}, {sum(a >= 0.98 for a in accs)}/{len(accs)} reach it",
         f"{fast_secs:.2f} s", "<= 3 s"),
        ("peak RSS of mnistkit train (MB)", train["result"], f"{train['peak_rss_mb']:.0f}", "<= 1536"),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in [("figure", "measured", "value", "goal"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))
    print(f"\ntutorial loop: val loss {loop['val_losses'][0]:.4f} -> {loop['val_losses'][-1]:.4f} over {loop['epochs']} epochs, "
          f"val accuracy {loop['val_accuracy']:.2%}; mnistkit --preset tutorial: val loss {ours['val_losses'][0]:.4f} after epoch 1")
    m = figures["machine"]
    print(f"machine: {m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}, {m['platform']}")


if __name__ == "__main__":
    main()
