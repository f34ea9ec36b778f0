"""The benchmark's plumbing: every preset trains on a small slice, and the report has the fields it promises.
(No test asserts a time: the figures come from `mnistkit bench` itself.)"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_all_end, children
from torch import nn

from mnistkit import bench
from mnistkit.cli import main
from mnistkit.config import make_config
from mnistkit.errors import MnistkitError
from mnistkit.train import train_run

PRESET_FIELDS = {
    "preset",
    "model",
    "epochs",
    "seeds",
    "target_accuracy",
    "time_goal_seconds",
    "accuracy_mean",
    "accuracy_std",
    "accuracy_min",
    "reached_target",
    "train_seconds_median",
    "train_seconds_max",
    "load_seconds_median",
    "test_seconds_median",
    "peak_rss_mb",
    "speedup_vs_tutorial",
    "flops_per_epoch",
    "precision",
    "achieved_flops_per_second",
    "peak_fraction",
    "runs",
}


@pytest.mark.parametrize("preset", sorted(bench.TARGETS))
def test_every_speed_preset_trains_on_a_small_slice(preset, tiny_idx_session):
    result = train_run(make_config(preset, data=str(tiny_idx_session), epochs=1))
    assert result.history[0].epoch == 1 and math.isfinite(result.history[0].train_loss)
    assert 0.0 <= result.test_accuracy <= 1.0


def test_bench_json_has_the_promised_fields(tiny_idx_session, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench",
                "--preset",
                "fast",
                "--seeds",
                "2",
                "--against",
                "none",
                "--data",
                str(tiny_idx_session),
                "--json",
            ]
        )
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert {"machine", "device", "data", "presets", "tutorial", "matmul_peak"} <= set(report)
    assert report["tutorial"] is None
    assert report["matmul_peak"]["float32"] > 0 and report["matmul_peak"]["bfloat16"] > 0
    assert [p["preset"] for p in report["presets"]] == ["fast"]
    for row in report["presets"]:
        assert PRESET_FIELDS <= set(row) and row["seeds"] == len(row["runs"]) == 2
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        assert row["accuracy_min"] <= row["accuracy_mean"] and row["peak_rss_mb"] > 0
        assert 0 <= row["reached_target"] <= 2
        # the mlp's 784x128, 128x256, 256x10 products: forward, weight gradients, and the input gradients of
        # the last two layers, for each of the slice's training images
        images = 600  # tiny_idx_session's training images, all trained on
        assert {r["train_images"] for r in row["runs"]} == {images}
        assert row["flops_per_epoch"] == pytest.approx(images * 2 * (2 * 135_680 + 128 * 256 + 256 * 10))
        assert row["precision"] in bench.PRECISIONS
        assert row["achieved_flops_per_second"] > 0 and row["peak_fraction"] > 0
    text = bench.format_report(report)
    assert "preset" in text and "GFLOP/s" in text and "roofline:" in text


def test_bench_compile_trains_every_seed_compiled(monkeypatch, capsys):
    jobs = []

    def run_job(kind, **kwargs):  # records what each fresh process would be asked to do
        if kind == "matmul_peak":
            return {"device": "cpu", "float32": 2e11, "bfloat16": 8e11}
        jobs.append(kwargs)
        row = {"model": "mlp", "epochs": 4, "test_accuracy": 0.98, "train_seconds": 1.0, "load_seconds": 0.1}
        roofline = {"flops_per_epoch": 3.7e10, "precision": "bfloat16"}
        return {**kwargs, **row, **roofline, "test_seconds": 0.1, "peak_rss_mb": 100.0}

    monkeypatch.setattr(bench, "run_job", run_job)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "fast", "--seeds", "2", "--against", "none", "--compile", "--json"])
    assert exit_info.value.code == 0
    assert [job["compile"] for job in jobs] == [True, True]
    assert json.loads(capsys.readouterr().out)["compile"] is True


def test_bench_ensemble_trains_its_members_and_tests_their_mean(tiny_idx_session, capsys):
    argv = ["bench", "--preset", "ensemble", "--members", "2", "--member-preset", "fast", "--seeds", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--side-by-side", "1", "--against", "none", "--data", str(tiny_idx_session), "--json"])
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["presets"]
    assert PRESET_FIELDS <= set(row) and row["preset"] == "ensemble" and row["model"] == "2×fast"
    assert (row["target_accuracy"], row["time_goal_seconds"]) == bench.ENSEMBLE_TARGET and row["seeds"] == 1
    (ensemble,) = row["runs"]
    assert [(m["preset"], m["seed"]) for m in ensemble["members"]] == [("fast", 0), ("fast", 1)]
    assert ensemble["side_by_side"] == 1 and {m["threads"] for m in ensemble["members"]} == {bench.cpu_threads()}
    assert ensemble["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in ensemble["members"]))
    assert 0.0 <= ensemble["test_accuracy"] <= 1.0 and ensemble["test_seconds"] > 0
    assert "ensemble 2×fast" in bench.format_report(report)
    assert "1 member at a time" in bench.format_report(report)


def test_ensemble_members_side_by_side_share_the_cores_and_count_their_wall_time(tiny_idx_session, monkeypatch):
    monkeypatch.setattr(bench, "cpu_threads", lambda: 4)  # as on a 4-core machine, whatever this one has
    row = bench.run_ensemble(0, 2, "fast", "cpu", data=str(tiny_idx_session), log=lambda _: None, side_by_side=2)
    assert [(m["seed"], m["threads"]) for m in row["members"]] == [(0, 2), (1, 2)]
    assert row["side_by_side"] == 2
    # the wall time of both runs: at least the longer one's training, with its loading and testing
    slowest = max(row["members"], key=lambda m: m["train_seconds"])
    assert row["train_seconds"] >= slowest["train_seconds"] + slowest["load_seconds"]
    assert 0.0 <= row["test_accuracy"] <= 1.0


def test_each_ensemble_trains_new_seeds_and_tests_the_runs_it_saved(monkeypatch, capsys):
    jobs = []

    def run_job(kind, **kwargs):  # records what each fresh process would be asked to do
        jobs.append((kind, kwargs))
        row = {"model": "cnn", "epochs": 7, "train_seconds": 10.0, "load_seconds": 0.5, "peak_rss_mb": 400.0}
        row |= {"flops_per_epoch": 1e12, "precision": "float32", "float32": 1e11, "bfloat16": 4e11, "threads": 1}
        return {**kwargs, **row, "device": "cpu", "test_accuracy": 0.99, "test_seconds": 1.0}

    monkeypatch.setattr(bench, "run_job", run_job)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "ensemble", "--member-preset", "accurate", "--seeds", "2", "--against", "none"])
    assert exit_info.value.code == 0
    # members train side by side (one per core here), so they may start in any order
    trained = sorted((job for kind, job in jobs if kind == "preset"), key=lambda job: job["seed"])
    assert [(job["preset"], job["seed"]) for job in trained] == [("accurate", seed) for seed in range(6)]
    tested = [job["paths"] for kind, job in jobs if kind == "ensemble"]
    assert tested == [[job["out"] for job in trained[:3]], [job["out"] for job in trained[3:]]]
    assert len({job["out"] for job in trained}) == 6
    assert "ensemble 3×accurate" in capsys.readouterr().out


def test_an_ensemble_whose_member_fails_starts_no_more_members(monkeypatch):
    started = []

    def run_job(kind, **kwargs):
        started.append(kwargs["seed"])
        raise MnistkitError(f"benchmark job preset (seed {kwargs['seed']}) failed: out of memory")

    monkeypatch.setattr(bench, "run_job", run_job)
    with pytest.raises(MnistkitError, match=r"seed 0\) failed: out of memory"):
        bench.run_ensemble(0, 4, "best", "cpu", log=lambda _: None, side_by_side=1)
    assert started == [0]  # the other three were never started


def test_members_side_by_side_log_one_line_at_a_time(monkeypatch):
    writing, lines = [], []

    def log(message):  # as print does it: the text, then the newline, in two writes
        writing.append(message)
        time.sleep(0.05)
        lines.append((len(writing), message))
        writing.pop()

    def run_job(kind, **kwargs):
        row = {"model": "mlp", "epochs": 4, "train_seconds": 1.0, "load_seconds": 0.1, "peak_rss_mb": 100.0}
        row |= {"flops_per_epoch": 3.7e10, "precision": "bfloat16", "threads": 1}
        return {**kwargs, **row, "test_accuracy": 0.98, "test_seconds": 0.1}

    monkeypatch.setattr(bench, "run_job", run_job)
    bench.run_ensemble(0, 4, "fast", "cpu", log=log, side_by_side=4)
    assert len(lines) == 4 and all(writers == 1 for writers, _ in lines)


def test_training_step_flops_counts_the_products_forward_and_backward():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 784, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = 4
    conv = 2 * (9 * 1 * 2) * 784 * batch  # multiply-adds of each output pixel, at 28x28, times two
    linear = 2 * (2 * 784 * 10) * batch
    # forward and weight gradient of both; the input gradient of the linear layer only (the images need none)
    assert bench.training_step_flops(model, batch) == 2 * conv + 3 * linear == 602_112
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # counted on a copy
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_peak_is_a_positive_rate(dtype):
    assert bench.matmul_peak(dtype, sizes=(64,), repeats=1) > 0


def test_matmul_peak_times_no_size_too_slow_for_the_rate_so_far(monkeypatch):
    # Where a precision is emulated (bf16 without AVX512-BF16: about 1 GFLOP/s), the larger products would take
    # seconds each and not raise the rate: only the sizes that one product at the rate so far allows are timed.
    sizes = []
    mm = torch.mm

    def recording_mm(a, b, out):
        sizes.append(a.shape[0])
        return mm(a, b, out=out)

    monkeypatch.setattr(torch, "mm", recording_mm)
    monkeypatch.setattr(bench, "MAX_PRODUCT_SECONDS", 0.0)
    assert bench.matmul_peak(torch.float32, sizes=(32, 64, 128), repeats=2, seconds=0.001) > 0
    assert set(sizes) == {32}


def test_bench_refuses_bad_arguments(capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_ensemble", lambda *args: pytest.fail("refused arguments train nothing"))
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--seeds", "0", "--against", "none"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "mnistkit: error: --seeds must be from 1 to 1,000, got 0"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "ensemble", "--members", "0", "--against", "none"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "mnistkit: error: --members must be from 1 to 100, got 0"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "ensemble", "--side-by-side", "0", "--against", "none"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "mnistkit: error: --side-by-side must be at least 1, got 0"
    huge = str(10**9)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "ensemble", "--members", "5", "--side-by-side", huge, "--against", "none"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("mnistkit: error: --side-by-side must be at most ")
    for option, message in (
        ("--seeds", "--seeds must be from 1 to 1,000"),
        ("--members", "--members must be from 1 to 100"),
    ):
        with pytest.raises(SystemExit) as exit_info:  # a benchmark that would never end
            main(["bench", "--preset", "ensemble", option, huge, "--against", "none"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == f"mnistkit: error: {message}, got {huge}"


@pytest.mark.slow
def test_speed_ups_are_against_the_tutorial_loop_at_its_median_epochs_pace():
    steady = {"epochs": 5, "epoch_seconds": [0.5, 0.5, 0.5, 0.5, 0.5]}
    burst = {"epochs": 5, "epoch_seconds": [0.5, 0.5, 1.2, 1.1, 0.5]}  # other work slowed two epochs
    assert bench.tutorial_reference_seconds(steady) == bench.tutorial_reference_seconds(burst) == 2.5
    row = {
        "model": "cnn",
        "epochs": 1,
        "test_accuracy": 0.991,
        "train_seconds": 0.25,
        "load_seconds": 0.1,
        "test_seconds": 0.1,
        "peak_rss_mb": 400.0,
        "flops_per_epoch": 1e9,
        "precision": "bfloat16",
    }
    assert bench.summarize("cnn", [row], 2.5)["speedup_vs_tutorial"] == pytest.approx(10.0)


def test_the_tutorial_loops_epochs_are_spread_evenly_between_the_runs():
    assert bench.spread(25, 1) == [25]
    assert bench.spread(25, 11) == [3, 3, 3] + [2] * 8
    assert bench.spread(2, 4) == [1, 1, 0, 0]


def test_the_tutorial_loop_runs_between_the_presets_runs(monkeypatch, capsys):
    events = []

    class Loop:  # records when the tutorial's loop would run its chunks
        def __init__(self, chunks):
            self.chunks = chunks

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            events.append("closed")

        def run_chunk(self):
            events.append("tutorial")

        def finish(self):
            epoch_seconds = [1.0] * 20 + [9.0] * 5  # one slow spell
            return {"epochs": 25, "chunks": self.chunks, "train_seconds": 65.0, "epoch_seconds": epoch_seconds}

    def run_job(kind, **kwargs):
        events.append(f"{kind} {kwargs.get('seed', '')}".strip())
        row = {"model": "mlp", "epochs": 4, "test_accuracy": 0.98, "train_seconds": 1.0, "load_seconds": 0.1}
        row |= {"test_seconds": 0.1, "peak_rss_mb": 100.0, "flops_per_epoch": 3.7e10, "precision": "bfloat16"}
        tutorial = {"epoch_seconds": [0.5], "seconds": 2.0, "val_loss": 0.37}
        return {**row, **tutorial, "device": "cpu", "float32": 2e11, "bfloat16": 8e11}

    monkeypatch.setattr(bench, "TutorialLoop", Loop)
    monkeypatch.setattr(bench, "run_job", run_job)
    report = bench.run_benchmark(["fast"], 2, against_tutorial=True, log=lambda _: None)
    runs = ["tutorial", "preset 0", "tutorial", "preset 1", "tutorial", "closed"]
    assert events[-len(runs) :] == runs
    assert report["tutorial"]["loop"]["chunks"] == [9, 8, 8]
    assert report["tutorial"]["reference_seconds"] == 25.0  # its median epoch's pace
    assert report["presets"][0]["speedup_vs_tutorial"] == 25.0


def test_a_failed_run_stops_the_tutorial_loop_waiting_beside_it(monkeypatch):
    loops = []

    class Loop(bench.TutorialLoop):
        def __init__(self, chunks):
            super().__init__(chunks)
            loops.append(self)

    def run_job(kind, **kwargs):
        if kind == "preset":
            raise MnistkitError("benchmark job preset failed: out of memory")
        return {"device": "cpu", "float32": 2e11, "bfloat16": 8e11, "epoch_seconds": [0.5], "seconds": 2.0}

    monkeypatch.setattr(bench, "TutorialLoop", Loop)
    monkeypatch.setattr(bench, "run_job", run_job)
    with pytest.raises(MnistkitError, match="out of memory"):
        bench.run_benchmark(["fast"], 2, against_tutorial=True, log=lambda _: None)
    (loop,) = loops
    assert loop.done == 1 and loop.proc.returncode is not None  # one chunk run, then the process ended


def test_the_tutorial_loop_in_chunks_trains_as_one_loop():
    with bench.TutorialLoop([1, 0, 1]) as loop:
        loop.run_chunk()
        result = loop.finish()
    assert result["epochs"] == 2 and result["chunks"] == [1, 0, 1] and len(result["epoch_seconds"]) == 2
    assert result["val_losses"][0] == pytest.approx(2.28, abs=0.03)  # the tutorial's first epoch
    assert result["val_losses"][1] < result["val_losses"][0]  # the second epoch went on from the first


def test_tutorial_reference_jobs_report_what_the_table_shows():
    loop = bench.job_tutorial_loop(epochs=1)
    assert {
        "epochs",
        "train_seconds",
        "epoch_seconds",
        "val_losses",
        "val_accuracy",
        "test_accuracy",
        "peak_rss_mb",
    } <= set(loop)
    assert loop["val_losses"][0] == pytest.approx(2.28, abs=0.03)  # the tutorial's first epoch
    ours = bench.job_tutorial_preset(epochs=1)
    to_loss = bench.job_time_to_val_loss()
    assert to_loss["seconds"] is not None and to_loss["val_loss"] <= bench.TUTORIAL_FINAL_VAL_LOSS
    floor = bench.job_gemm_floor(epochs=1)
    assert len(floor["epoch_seconds"]) == 1 and floor["epoch_seconds"][0] > 0
    report = {
        "machine": bench.machine(),
        "presets": [],
        "tutorial": {
            "loop": loop,
            "reference_seconds": bench.tutorial_reference_seconds(loop),
            "preset_tutorial": ours,
            "time_to_val_loss": to_loss,
            "gemm_floor": floor,
            "epoch_seconds_ratio": ours["epoch_seconds"][0] / loop["epoch_seconds"][0],
            "gemm_floor_ratio": floor["epoch_seconds"][0] / loop["epoch_seconds"][0],
            "time_to_final_val_loss_ratio": to_loss["seconds"] / loop["train_seconds"],
        },
    }
    text = bench.format_report(report)
    assert "tutorial loop: 1 epochs" in text and "time to the tutorial's final val loss" in text
    assert "floor: the float32 matrix products alone" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_benchmark_leaves_no_job_running():
    """Each job runs in a process of its own: killing ``mnistkit bench`` must not leave it training on."""
    command = [sys.executable, "-m", "mnistkit", "bench", "--preset", "best", "--seeds", "1", "--against", "none"]
    benchmark = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120

    def training() -> list[int]:  # the preset's job, minutes long (the peak's job before it takes seconds)
        found = []
        for pid in children(benchmark.pid):
            with contextlib.suppress(FileNotFoundError):  # a job that has just ended
                found += [pid] if b'"kind": "preset"' in Path(f"/proc/{pid}/cmdline").read_bytes() else []
        return found

    while not (jobs := training()):
        assert benchmark.poll() is None and time.monotonic() < deadline, "no job started"
        time.sleep(0.05)
    benchmark.kill()  # SIGKILL: it can pass nothing on to its job
    benchmark.wait()
    assert_all_end(jobs, "a job outlived the benchmark")


def test_unreadable_data_is_refused_before_any_job(monkeypatch, tmp_path):
    def run_job(kind, **kwargs):
        raise AssertionError(f"{kind} ran")

    monkeypatch.setattr(bench, "run_job", run_job)
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 not a whole archive")
    for path in (tmp_path / "missing.npz", tmp_path / "cut.npz"):
        with pytest.raises(MnistkitError, match=str(path.name)):
            bench.run_benchmark(["fast"], 1, against_tutorial=True, data=str(path), log=lambda _: None)


def test_a_failed_job_is_told_in_words():
    stderr = "Traceback (most recent call last):\n  ...\nmnistkit.errors.DataError: x.npz: not a readable .npz file\n"
    error = bench._job_failed("preset", {"preset": "fast", "seed": 2, "device": "cpu"}, stderr)
    assert str(error) == "benchmark: the fast preset (seed 2) failed: x.npz: not a readable .npz file"
