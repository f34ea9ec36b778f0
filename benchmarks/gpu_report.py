"""Collects the steps of benchmarks/gpu.sh into one JSON file and prints their figures, one line per step.

    python benchmarks/gpu_report.py STEPS_FOLDER OUT_JSON

STEPS_FOLDER holds steps.tsv (one line per step: name, exit status, seconds, timeout, command) and each step's
standard output as NAME.out, which is JSON when the step succeeded. OUT_JSON is replaced atomically, so a run
stopped at any point leaves the steps done so far.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TIMED_OUT = {124, 137}  # timeout's own status, and a process it had to kill


def read_steps(folder: Path) -> list[dict[str, Any]]:
    steps = []
    for line in (folder / "steps.tsv").read_text().splitlines():
        name, code, seconds, limit, command = line.split("\t", 4)
        step: dict[str, Any] = {"name": name, "command": command, "seconds": int(seconds), "result": None}
        if code == "skipped":
            step["status"] = "skipped: too little of the time budget left"
        elif int(code) in TIMED_OUT:
            step["status"] = f"timed out after {limit} s"
        else:
            step["status"] = "ok" if code == "0" else f"failed (exit {code})"
        output = folder / f"{name}.out"
        text = output.read_text(errors="replace").strip() if output.exists() else ""
        try:
            step["result"] = json.loads(text) if text else None
        except json.JSONDecodeError:
            step["output"] = text.splitlines()[-20:]
        steps.append(step)
    return steps


def summary(step: dict[str, Any]) -> str:
    """One line of the step's headline figures."""
    r = step["result"]
    if not isinstance(r, dict):
        return ""
    if "presets" in r:
        compiled = ", compiled" if r.get("compile") else ""
        return "; ".join(
            f"{p['preset']}{compiled}: {p['accuracy_mean']:.2%} ± {p['accuracy_std']:.2%}, "
            f"{p['reached_target']}/{p['seeds']} reach {p['target_accuracy']:.1%}, "
            f"train s median {p['train_seconds_median']:.2f} max {p['train_seconds_max']:.2f}"
            for p in r["presets"]
        )
    if "by_threads" in r:
        return "; ".join(
            f"{threads} threads: predict_array {f['batch_images_per_s']:,} images/s, "
            f"single 28×28 median {f['single_28x28_ms_median']} ms"
            for threads, f in r["by_threads"].items()
        )
    if "requests_per_s" in r:
        lat = r["latency_ms"]
        return (
            f"{r['requests_per_s']} requests/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"errors {sum(r['errors'].values())}, wrong {r['wrong_digits']}"
        )
    return json.dumps(r)[:300]


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    steps = read_steps(folder)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps({"steps": steps}, indent=2))
    os.replace(partial, out)
    for step in steps:
        print(f"{step['name']:<18} {step['status']:<22} {step['seconds']:>4} s  {summary(step)}")


if __name__ == "__main__":
    main()
