"""Resumable training: a run killed (SIGKILL) or interrupted (Ctrl-C) in the middle of an epoch and resumed
ends bitwise where the same run left alone ends; saving survives a full disk and a vanished folder."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli, train_argv, write_mnist_npz
from safetensors.torch import load_file

from mnistkit import resume, runs
from mnistkit.checkpoint import load_checkpoint
from mnistkit.cli import main
from mnistkit.config import make_config
from mnistkit.errors import CheckpointError
from mnistkit.train import build_optimizer, build_scheduler, fit_schedule, train_run

# The mlp on 1,000 real MNIST digits (800 to train): 25 batches an epoch, a checkpoint every 5.
TRAIN_ARGS = [
    "--model",
    "mlp",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--val-size",
    "200",
    "--deterministic",
    "--device",
    "cpu",
    "--quiet",
    "--checkpoint-every",
    "5",
]


@pytest.fixture(scope="module")
def digits(tmp_path_factory, mnist) -> Path:
    return write_mnist_npz(tmp_path_factory.mktemp("digits") / "digits.npz", mnist, 1000, 200)


@pytest.fixture(scope="module")
def left_alone(tmp_path_factory, digits) -> Path:
    """The reference: the same run, never stopped."""
    out = tmp_path_factory.mktemp("alone") / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(digits), *TRAIN_ARGS, "--out", str(out)])
    assert exit_info.value.code == 0
    torch.use_deterministic_algorithms(False)
    return out


def start(digits: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "train", "--data", str(digits), *TRAIN_ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    state = run_dir / resume.FOLDER / resume.STATE_NAME
    deadline = time.monotonic() + timeout
    while not state.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def resume_cli(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistkit", "train", "--resume", str(run_dir), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def metrics_without_time(run_dir: Path) -> list[dict]:
    with open(run_dir / runs.METRICS_NAME, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def assert_same_result(run_dir: Path, reference: Path) -> None:
    ours, theirs = load_file(run_dir / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert metrics_without_time(run_dir) == metrics_without_time(reference)
    meta, reference_meta = (
        json.loads((run_dir / "model.json").read_text()),
        json.loads((reference / "model.json").read_text()),
    )
    for key in ("test_loss", "test_accuracy", "val_loss", "val_accuracy", "train_loss", "epochs"):
        assert meta["metrics"][key] == reference_meta["metrics"][key], key


def test_a_run_killed_mid_epoch_resumes_to_bitwise_the_same_weights_and_metrics(digits, left_alone, tmp_path):
    run_dir = tmp_path / "run"
    process = start(digits, run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGSTOP)  # freeze it where it is, then kill it: no chance to clean up
    state = resume.load(run_dir)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert state.step > 0 and not state.done, "killed in the middle of an epoch"
    assert not (run_dir / "model.safetensors").exists()

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} at epoch {state.epoch}, step {state.step}" in resumed.stdout
    assert_same_result(run_dir, left_alone)


@pytest.mark.parametrize(
    ("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_or_sigterm_saves_a_checkpoint_prints_how_to_resume_and_exits_as_a_shell_says(
    digits, left_alone, tmp_path, signum, code, said
):
    """SIGTERM is what a job scheduler or ``kill`` sends before it kills: the run stops as for Ctrl-C."""
    run_dir = tmp_path / "run"
    process = start(digits, run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "stopping after this batch" in err and "Traceback" not in err
    assert f"mnistkit: error: {said}" in err
    assert f"Resume with: mnistkit train --resume {run_dir}" in err.strip().splitlines()[-1]
    state = resume.load(run_dir)
    assert not state.done
    assert (
        f"at epoch {state.epoch}, step {state.step} of 25" if state.step else f"after epoch {state.epoch - 1}"
    ) in err

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run_dir, left_alone)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_second_signal_quits_at_once_and_the_last_checkpoint_stays_good(digits, tmp_path, signum, code):
    run_dir = tmp_path / "run"
    process = start(digits, run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signum)
    assert "stopping after this batch" in process.stderr.readline() + process.stderr.readline()
    process.send_signal(signum)  # while it finishes the batch or writes the checkpoint
    out, err = process.communicate(timeout=60)
    # Landing after the stop's own checkpoint, as the message is printed, the second SIGTERM ends the process as
    # SIGTERM does (the handlers are back).
    assert process.returncode in (code, -signum), err
    assert "Traceback" not in err and all(line.startswith("mnistkit: ") for line in err.strip().splitlines()[-1:])
    resume.load(run_dir)  # verified: checksum and format
    assert not [p.name for p in (run_dir / resume.FOLDER).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]
)
def test_a_second_signal_after_a_checkpoint_still_prints_how_to_resume(
    tiny_idx, tmp_path, monkeypatch, capsys, signum, code, said
):
    """Both signals land as epoch 2's metrics are written, after epoch 1's checkpoint: the second quits at once."""
    real_write_metrics = runs.write_metrics

    def write_metrics(run_dir, rows):
        if len(rows) == 2:
            os.kill(os.getpid(), signum)
            os.kill(os.getpid(), signum)
        real_write_metrics(run_dir, rows)

    monkeypatch.setattr(runs, "write_metrics", write_metrics)
    run_dir = tmp_path / "run"
    code_now, _, err = run_cli(capsys, *train_argv(tiny_idx, run_dir, "--quiet", epochs=3))
    last = err.strip().splitlines()[-1]  # after the first signal's "stopping after this batch"
    assert code_now == code, err
    assert last.startswith(f"mnistkit: error: {said} at once; the last checkpoint is intact. ")
    assert last.endswith(f"Resume with: mnistkit train --resume {run_dir}")
    assert resume.load(run_dir).epoch == 2


@pytest.mark.parametrize("when", ["last epoch's end", "testing"])
def test_a_signal_once_training_is_over_lets_the_run_finish_and_says_so(tiny_idx, tmp_path, monkeypatch, capsys, when):
    """No batch is left to stop after: the run tests and saves its model (seconds), exit 0, and says that it does."""
    from mnistkit import train

    real_write_metrics, real_loss_and_accuracy = runs.write_metrics, train.loss_and_accuracy

    def write_metrics(run_dir, rows):
        if when == "last epoch's end" and len(rows) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        real_write_metrics(run_dir, rows)

    def loss_and_accuracy(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_loss_and_accuracy(*args, **kwargs)

    monkeypatch.setattr(runs, "write_metrics", write_metrics)
    if when == "testing":
        monkeypatch.setattr(train, "loss_and_accuracy", loss_and_accuracy)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_argv(tiny_idx, run_dir, "--quiet", val_size=0, epochs=2))
    assert code == 0, err
    said = [line for line in err.splitlines() if line]
    if when == "testing":
        assert said == ["training is over: testing and saving the model; press Ctrl-C again to quit at once"]
    else:
        assert said == [
            "stopping after this batch to save a checkpoint; press Ctrl-C again to quit at once",
            "training is over: testing and saving the model (the last epoch had ended)",
        ]
    assert (run_dir / "model.safetensors").exists() and resume.load(run_dir).done


def test_a_resume_reads_the_state_only_while_it_holds_the_folder(tiny_idx, tmp_path, monkeypatch, capsys):
    """Read before the hold, the state could be older than the folder: a run still writing it that ended in
    between would have its last epoch trained again over its finished model."""
    import fcntl

    real_write_metrics = runs.write_metrics

    def write_metrics(run_dir, rows):
        if len(rows) == 2:
            raise KeyboardInterrupt  # quit at once after epoch 1's checkpoint
        real_write_metrics(run_dir, rows)

    monkeypatch.setattr(runs, "write_metrics", write_metrics)
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_argv(tiny_idx, run_dir, "--quiet", epochs=2))[0] == 130
    monkeypatch.setattr(runs, "write_metrics", real_write_metrics)
    real_load, held = resume.load, []

    def load(folder):
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        return real_load(folder)

    monkeypatch.setattr(resume, "load", load)
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--quiet")
    assert code == 0, err
    assert held == [True]


def test_a_save_removes_what_a_killed_save_left_half_written(tmp_path):
    from mnistkit.models import create_model

    model = create_model("logreg")
    optimizer, generator = build_optimizer(model, make_config(model="logreg")), torch.Generator()
    (tmp_path / resume.FOLDER).mkdir()
    stale = tmp_path / resume.FOLDER / ".state-0001-000003-0123456789ab.safetensors.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint, then SIGKILL")
    resume.save(tmp_path, *resume.capture(resume.LoopState(), model, optimizer, None, generator))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / resume.FOLDER).iterdir()) == ["state", "state.json"]


def test_the_second_ctrl_c_raises_at_once_and_leaves_the_checkpoint_as_it_was(tmp_path, monkeypatch):
    """Deterministically: the second SIGINT lands in the middle of writing a checkpoint."""
    from mnistkit.models import create_model
    from mnistkit.train import Interrupt

    cfg = make_config(model="mlp")
    model = create_model("mlp")
    optimizer, generator = build_optimizer(model, cfg), torch.Generator()
    progress = resume.LoopState()
    progress.start_epoch(10, torch.device("cpu"), generator)
    resume.save(tmp_path, *resume.capture(progress, model, optimizer, None, generator))
    before = (tmp_path / resume.FOLDER / resume.STATE_NAME).read_bytes()

    with Interrupt(announce=False) as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested  # the first only asks to stop
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (os.kill(os.getpid(), signal.SIGINT), real_fsync(fd)))
        with torch.no_grad():
            model.out.bias += 1
        progress.step = 4
        with pytest.raises(KeyboardInterrupt):
            resume.save(tmp_path, *resume.capture(progress, model, optimizer, None, generator))
    monkeypatch.undo()
    assert (tmp_path / resume.FOLDER / resume.STATE_NAME).read_bytes() == before
    assert resume.load(tmp_path).step == 0
    assert not [p.name for p in (tmp_path / resume.FOLDER).iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------------
# Saving fails


def disk_full_at(monkeypatch, marker: str, nth: int = 1):
    """Make the ``nth`` fsync of a file whose path holds ``marker`` fail as a full disk does (ENOSPC surfaces at
    fsync), and every later one of them too; returns the real ``os.fsync``."""
    real_fsync, seen = os.fsync, []

    def fsync(fd):
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            seen.append(fd)
            if len(seen) >= nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return real_fsync


def test_a_full_disk_while_saving_is_one_clear_line_and_keeps_the_previous_checkpoint(
    tiny_idx, tmp_path, monkeypatch, capsys
):
    """ENOSPC from the file system while the third checkpoint is written (at fsync, where it surfaces)."""
    real_fsync = disk_full_at(monkeypatch, "/resume/.state-", nth=3)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(tiny_idx, run_dir, "--batch-size", "50", "--checkpoint-every", "3", "--quiet", model="mlp"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("mnistkit: error: could not save the checkpoint")
    assert "No space left on device" in err and "previous checkpoint there is intact" in err
    monkeypatch.setattr(os, "fsync", real_fsync)
    state = resume.load(run_dir)  # the second save, whole
    assert (state.epoch, state.step) == (1, 6)
    assert not [p for p in (run_dir / resume.FOLDER).iterdir() if p.name.startswith(".")]


def test_a_full_disk_at_the_first_checkpoint_does_not_claim_an_earlier_one(tiny_idx, tmp_path, monkeypatch, capsys):
    """ENOSPC while the very first checkpoint is written: there is nothing to resume, and the message says so."""
    real_fsync = disk_full_at(monkeypatch, "/resume/.state-")
    run_dir = tmp_path / "run"
    argv = ["train", "--data", str(tiny_idx), "--model", "logreg", "--epochs", "1", "--val-size", "100"]
    argv += ["--batch-size", "50", "--checkpoint-every", "2", "--quiet", "--out", str(run_dir)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and "there is no earlier checkpoint to resume from" in err
    assert "run the same command again" in err and "intact" not in err
    assert not (run_dir / resume.FOLDER / resume.STATE_NAME).exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)  # as the message says: the failed run took its folder back
    assert exit_info.value.code == 0, capsys.readouterr().err


def test_a_full_disk_when_the_model_is_saved_says_how_to_resume_and_the_resume_finishes(
    tiny_idx, tmp_path, monkeypatch, capsys
):
    """ENOSPC at the very end, as the model is written: the training done is in the resume state, and the
    message must say so rather than leave the run for lost."""
    real_fsync = disk_full_at(monkeypatch, "/.model.safetensors.")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_argv(tiny_idx, run_dir, "--quiet", epochs=1))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and f"resume with: mnistkit train --resume {run_dir}" in err
    assert "run again" not in err  # the same command again would find the run folder there
    monkeypatch.setattr(os, "fsync", real_fsync)
    code, out, err = run_cli(capsys, "train", "--resume", run_dir, "--quiet")
    assert code == 0, err
    assert out.startswith(f"resuming {run_dir} at the end of its 1 epoch, to test and save the model")
    assert (run_dir / "model.json").is_file()


def test_a_finished_run_missing_its_last_files_is_finished_again_on_resume(tiny_idx, tmp_path, monkeypatch, capsys):
    """A full disk as curves.png, the last file, is written; then a model file lost: the advice to resume holds."""
    real_fsync = disk_full_at(monkeypatch, "/.curves.png.")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_argv(tiny_idx, run_dir, "--quiet", epochs=1))
    assert code == 2 and f"resume with: mnistkit train --resume {run_dir}" in err, err
    monkeypatch.setattr(os, "fsync", real_fsync)
    for lost in ("curves.png", "model.safetensors"):
        (run_dir / lost).unlink(missing_ok=True)
        if lost == "model.safetensors":
            with pytest.raises(CheckpointError, match=f"mnistkit train --resume {run_dir} writes them again"):
                load_checkpoint(run_dir)
        code, out, err = run_cli(capsys, "train", "--resume", run_dir, "--quiet")
        assert code == 0 and "to test and save the model" in out, err
        assert all((run_dir / name).is_file() for name in resume.FINAL_FILES)
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--quiet")
    assert code == 2 and "already finished" in err


def test_a_run_stopped_before_its_first_checkpoint_says_to_train_again(tiny_idx, tmp_path, capsys):
    run_dir = runs.create_run_dir(tmp_path / "run", "logreg")
    runs.write_config(run_dir, make_config(model="logreg", data=str(tiny_idx)))  # killed while loading, say
    code, _, err = run_cli(capsys, "train", "--resume", run_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no resumable checkpoint" in err and "train it again, with --overwrite to reuse the folder" in err


def test_a_run_folder_that_vanishes_while_training_is_a_clear_error(tiny_idx, tmp_path):
    import shutil

    run_dir = runs.create_run_dir(tmp_path / "run", "mlp")

    class RemoveTheFolder:
        def epoch_start(self, *args):
            pass

        def step_done(self, *args):
            pass

        def batches_done(self, *args):
            pass

        def epoch_end(self, stats):
            shutil.rmtree(run_dir)

    cfg = make_config(model="mlp", epochs=2, val_size=100, data=str(tiny_idx))
    with pytest.raises(CheckpointError, match=f"the run folder {run_dir} no longer exists .*resume it from its new"):
        train_run(cfg, run_dir, RemoveTheFolder())
    assert not run_dir.exists()  # not silently recreated somewhere the user did not ask for


# --------------------------------------------------------------------------------------------------
# The state itself, and --resume's rules


def test_optimizer_and_scheduler_state_round_trips_exactly_through_json_and_safetensors(tmp_path):
    from mnistkit.models import create_model

    cfg = make_config(model="mlp", optimizer="adamw", schedule="onecycle")
    model = create_model("mlp")
    optimizer, generator = build_optimizer(model, cfg), torch.Generator().manual_seed(3)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    for _ in range(3):
        model(torch.randn(4, 1, 28, 28, generator=generator)).sum().backward()
        optimizer.step()
        scheduler.step()
    progress = resume.LoopState(epoch=1, step=3, history=[])
    progress.start_epoch(10, torch.device("cpu"), generator)
    progress.step = 3
    resume.save(tmp_path, *resume.capture(progress, model, optimizer, scheduler, generator))

    fresh = create_model("mlp")
    fresh_optimizer = build_optimizer(fresh, cfg)
    fresh_scheduler, fresh_generator = build_scheduler(fresh_optimizer, cfg, steps_per_epoch=10), torch.Generator()
    restored = resume.restore(resume.load(tmp_path), fresh, fresh_optimizer, fresh_scheduler, fresh_generator, 10)
    assert (restored.epoch, restored.step) == (1, 3)
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    ours, theirs = fresh_optimizer.state_dict(), optimizer.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]  # betas come back as tuples, lr bit for bit
    for index, values in theirs["state"].items():
        for key, value in values.items():
            assert torch.equal(ours["state"][index][key], value)
    assert torch.equal(fresh_generator.get_state(), generator.get_state())
    assert not list(tmp_path.glob("*.pkl")) and "pickle" not in (tmp_path / "resume" / "state.json").read_text()


@pytest.mark.parametrize(("saved", "now"), [("adamw", "sgd"), ("adam", "sgd")])
def test_a_checkpoint_of_another_optimizer_is_one_clear_error_not_a_failed_step(tmp_path, saved, now):
    """config.json edited (or written by something else) to name another optimizer than the checkpoint's."""
    from mnistkit.models import create_model

    model, generator = create_model("logreg"), torch.Generator()
    optimizer = build_optimizer(model, make_config(model="logreg", optimizer=saved))
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    resume.save(tmp_path, *resume.capture(resume.LoopState(), model, optimizer, None, generator))

    fresh = create_model("logreg")
    fresh_optimizer = build_optimizer(fresh, make_config(model="logreg", optimizer=now))
    with pytest.raises(CheckpointError, match="does not fit this run .*optimizer has no"):
        resume.restore(resume.load(tmp_path), fresh, fresh_optimizer, None, torch.Generator(), 10)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", "x"),
        ("lr", -1.0),
        ("eps", float("nan")),
        ("weight_decay", True),
        ("betas", {"$tuple": [0.9]}),
        ("betas", {"$tuple": [0.9, 5.0]}),  # of the right kind, but the loss would be NaN at the first step
    ],
)
def test_a_checkpoint_with_a_hyper_parameter_of_the_wrong_kind_is_refused_before_training(tmp_path, key, value):
    """state.json edited by hand: the first step would fail on it (lr='x'), or train on a negative learning rate."""
    from mnistkit.models import create_model

    cfg = make_config(model="logreg", optimizer="adamw")
    model = create_model("logreg")
    optimizer = build_optimizer(model, cfg)
    resume.save(tmp_path, *resume.capture(resume.LoopState(), model, optimizer, None, torch.Generator()))
    path = tmp_path / "resume" / "state.json"
    record = json.loads(path.read_text())
    record["state"]["optimizer"]["param_groups"][0][key] = value
    path.write_text(json.dumps(record))

    fresh = create_model("logreg")
    with pytest.raises(CheckpointError, match=f"does not fit this run .*gives AdamW {key}="):
        resume.restore(resume.load(tmp_path), fresh, build_optimizer(fresh, cfg), None, torch.Generator(), 10)


def saved_adamw_onecycle_run(tmp_path):
    """A logreg run one step into AdamW with a one-cycle schedule, saved; returns its config and state.json."""
    from mnistkit.models import create_model

    cfg = make_config(model="logreg", optimizer="adamw", schedule="onecycle")
    model = create_model("logreg")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    scheduler.step()
    resume.save(tmp_path, *resume.capture(resume.LoopState(), model, optimizer, scheduler, torch.Generator()))
    return cfg, tmp_path / "resume" / "state.json"


def restore_saved(tmp_path, cfg):
    from mnistkit.models import create_model

    fresh = create_model("logreg")
    optimizer = build_optimizer(fresh, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    return resume.restore(resume.load(tmp_path), fresh, optimizer, scheduler, torch.Generator(), 10)


OPTIMIZER_STATE_EDITS = {
    # A fused step walks the raw memory of a weight and its moments: a smaller moment read and wrote past its end.
    "a moment of another weight's size": (("0", "exp_avg"), "state.optimizer.state.1.exp_avg", "is shaped \\(10,\\)"),
    "a step that is a whole tensor": (("0", "step"), "state.optimizer.state.0.exp_avg", "step of weight 0 is shaped"),
    "a step that is a number": (("1", "step"), 3, "step of weight 1 is 3, not a float tensor"),
}


@pytest.mark.parametrize("edit", OPTIMIZER_STATE_EDITS, ids=list(OPTIMIZER_STATE_EDITS))
def test_optimizer_state_that_does_not_fit_its_weights_is_refused_before_training(tmp_path, edit):
    (index, key), value, message = OPTIMIZER_STATE_EDITS[edit]
    cfg, path = saved_adamw_onecycle_run(tmp_path)
    record = json.loads(path.read_text())
    states = dict((str(i), state) for i, state in record["state"]["optimizer"]["state"]["$items"])
    states[index][key] = {"$tensor": value} if isinstance(value, str) else value
    path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not fit this run .*" + message):
        restore_saved(tmp_path, cfg)


def test_negative_squared_moments_are_refused_before_training(tmp_path):
    from safetensors.torch import save_file

    cfg, path = saved_adamw_onecycle_run(tmp_path)
    record = json.loads(path.read_text())
    tensors_path = path.parent / record["tensors"]
    tensors = load_file(tensors_path)
    tensors["state.optimizer.state.0.exp_avg_sq"] = -tensors["state.optimizer.state.0.exp_avg_sq"] - 1
    save_file(tensors, tensors_path)
    record["sha256"] = hashlib.sha256(tensors_path.read_bytes()).hexdigest()
    path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="exp_avg_sq of weight 0 holds values that are not finite or too low"):
        restore_saved(tmp_path, cfg)


SCHEDULE_EDITS = {
    "an unknown annealing": ("_anneal_func_type", "evil", "_anneal_func_type is 'evil', where this run's config makes"),
    "a key of its own": ("optimizer", 5, "schedule holds 'optimizer', a key it has not"),
    "a step count below 0": ("last_epoch", -5, "last_epoch is -5, where it cannot be negative"),
    "one rate for two groups": ("base_lrs", [0.1], "base_lrs is a list of 1 items, where it takes 2 values"),
    "a rate that is no number": ("base_lrs", [0.1, float("nan")], "base_lrs is nan, not a finite number"),
}


@pytest.mark.parametrize("edit", SCHEDULE_EDITS, ids=list(SCHEDULE_EDITS))
def test_a_schedule_edited_by_hand_is_refused_before_training(tmp_path, edit):
    key, value, message = SCHEDULE_EDITS[edit]
    cfg, path = saved_adamw_onecycle_run(tmp_path)
    record = json.loads(path.read_text())
    record["state"]["scheduler"][key] = value
    path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not fit this run .*" + re.escape(message)):
        restore_saved(tmp_path, cfg)


def test_a_channels_last_models_moments_come_back_in_its_layout_so_the_next_step_is_the_same(tmp_path):
    """The fused optimizer steps through raw memory: moments restored dense beside channels_last weights
    would be added to the wrong elements."""
    from mnistkit.models import create_model

    cfg = make_config(model="cnn", width=4, optimizer="adamw")
    batch = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def step(model, optimizer):
        model(batch.contiguous(memory_format=torch.channels_last)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    model = create_model("cnn", width=4).to(memory_format=torch.channels_last)
    optimizer, generator = build_optimizer(model, cfg), torch.Generator()
    step(model, optimizer)
    progress = resume.LoopState(epoch=1, step=1, history=[])
    progress.start_epoch(10, torch.device("cpu"), generator)
    resume.save(tmp_path, *resume.capture(progress, model, optimizer, None, generator))

    fresh = create_model("cnn", width=4).to(memory_format=torch.channels_last)
    fresh_optimizer = build_optimizer(fresh, cfg)
    resume.restore(resume.load(tmp_path), fresh, fresh_optimizer, None, torch.Generator(), 10)
    step(model, optimizer)
    step(fresh, fresh_optimizer)
    for (name, ours), theirs in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("steps_now", [8, 10, 12])
def test_a_resume_with_another_number_of_processes_ends_the_schedule_with_the_run(tmp_path, steps_now):
    """Another process count gives an epoch another number of steps: the restored OneCycleLR is stretched or
    shrunk to the steps left, instead of refusing to step past its old end in the last epoch (or being refused
    for a length that is not this run's)."""
    from mnistkit.models import create_model

    cfg = make_config(model="mlp", epochs=3, schedule="onecycle")
    model = create_model("mlp")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    for _ in range(10):  # the first epoch, at 10 steps an epoch
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    first = {"epoch": 1, "train_loss": 1.0, "val_loss": None, "val_accuracy": None, "lr": 0.01, "seconds": 1.0}
    state = resume.capture(resume.LoopState(epoch=2, history=[first]), model, optimizer, scheduler, torch.Generator())
    resume.save(tmp_path, *state)

    optimizer = build_optimizer(model, cfg)
    resumed = build_scheduler(optimizer, cfg, steps_per_epoch=steps_now)
    progress = resume.restore(resume.load(tmp_path), model, optimizer, resumed, torch.Generator(), steps_now)
    fit_schedule(resumed, cfg, steps_now, progress)
    if steps_now == 10:
        assert resumed.state_dict() == saved  # the same process count: the schedule is left exactly as it was
    lrs = []
    for _ in range(2 * steps_now):  # the two epochs left: no step past the schedule's end
        optimizer.step()
        resumed.step()
        lrs.append(resumed.get_last_lr()[0])
    assert resumed.total_steps == 10 + 2 * steps_now
    assert lrs[-2] == pytest.approx(cfg.lr / 25 / 1e4)  # annealed to its floor on the run's last step


def test_resume_keeps_the_runs_options_and_refuses_a_finished_run(tiny_run, tmp_path, capsys):
    for argv, message in [
        (["train", "--resume", str(tiny_run), "--epochs", "5"], "drop --epochs"),
        (["train", "--resume", str(tiny_run)], "already finished (2 epochs); nothing to resume"),
        (["train", "--resume", str(tmp_path / "nothing")], "no such run folder"),
        (["train", "--resume", str(tmp_path)], "cannot read the run's config"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_run_not_named_in_utf8_resumes_by_the_name_mnistkit_prints(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / os.fsdecode(b"caf\xe9"))
    code, _, err = run_cli(capsys, "train", "--resume", f"{tmp_path}/caf\\xe9")
    assert code == 2 and "already finished (2 epochs); nothing to resume" in err, err
    assert resume.open_config(f"{tmp_path}/caf\\xe9") == resume.open_config(run)


def test_a_resumed_run_keeps_the_batch_losses_of_its_finished_epochs(tmp_path):
    from mnistkit.train import EpochStats, SilentReporter, _SavingReporter

    run_dir = runs.create_run_dir(tmp_path / "run", "mlp")
    runs.write_batch_losses(run_dir, {1: [2.0, 1.0], 2: [0.5, 0.25], 3: [9.0, 9.0]})  # epoch 3 was cut short
    done = [EpochStats(e, 1.0 / e, None, None, 0.01, 1.0).row() for e in (1, 2)]
    reporter = _SavingReporter(SilentReporter(), run_dir, done)
    reporter.epoch_end(EpochStats(3, 0.2, None, None, 0.01, 1.0, batch_losses=[0.2, 0.125]))
    assert runs.read_batch_losses(run_dir) == {1: [2.0, 1.0], 2: [0.5, 0.25], 3: [0.2, 0.125]}
    assert [row["epoch"] for row in runs.read_metrics(run_dir)] == [1.0, 2.0, 3.0]
    fresh = _SavingReporter(SilentReporter(), run_dir, [])  # a new run in that folder (--overwrite) starts empty
    assert fresh.batch_losses == {}
    (run_dir / runs.BATCH_LOSSES_NAME).write_text("epoch,batch,train_loss\n1,1,lots\n")
    with pytest.raises(CheckpointError, match="not the per-batch losses mnistkit train writes"):
        runs.read_batch_losses(run_dir)


def test_a_config_edited_since_the_checkpoint_is_refused(tiny_run, tmp_path):
    # Fewer epochs than the checkpoint's would end the run at once, its half-trained weights saved as the model.
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    resume.load(run)  # as saved
    config = json.loads((run / runs.CONFIG_NAME).read_text())
    (run / runs.CONFIG_NAME).write_text(json.dumps(config, indent=4))  # the same options, spaced otherwise
    resume.load(run)
    (run / runs.CONFIG_NAME).write_text(json.dumps({**config, "batch_size": config["batch_size"] * 2}))
    with pytest.raises(CheckpointError, match="its config.json changed since the last checkpoint, and a resumed run"):
        resume.load(run)
