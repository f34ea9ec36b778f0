"""mnistkit compare: the table of runs, the overlaid curves, and one clear line for anything that is not a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli
from test_plots import BLUE, ORANGE, env_without_matplotlib_folders, pixels_of, read_png, unusable_home

from mnistkit import compare, runs
from mnistkit.config import make_config
from mnistkit.train import train_run


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, tiny_idx_session) -> Path:
    """A second finished run with a different model and more epochs (3) than tiny_run (2)."""
    cfg = make_config(model="mlp", epochs=3, val_size=100, data=str(tiny_idx_session), batch_size=64)
    out = tmp_path_factory.mktemp("mlp") / "mlp-run"
    train_run(cfg, runs.create_run_dir(out, cfg.model))
    return out


def test_table_of_runs_with_different_epochs(tiny_run, mlp_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the terminal's width
    out = tmp_path / "compare.png"
    code, stdout, stderr = run_cli(capsys, "compare", str(tiny_run), str(mlp_run), "-o", str(out))
    assert code == 0 and stderr == ""
    header, cnn_row, mlp_row, curves = stdout.splitlines()
    # how the runs did first, then the options that differ; the mlp has no width
    assert header.split() == ["run", "epochs", "best", "val", "acc", "test", "acc", "time", "model", "width"]
    assert cnn_row.split()[:2] == ["run", "2"] and cnn_row.split()[-2:] == ["cnn", "4"]
    assert mlp_row.split()[:2] == ["mlp-run", "3"] and mlp_row.split()[-2:] == ["mlp", "-"]
    for row, run in ((cnn_row, tiny_run), (mlp_row, mlp_run)):
        meta = json.loads((run / "model.json").read_text())
        assert f"{meta['metrics']['test_accuracy']:.2%}" in row
        best = max(r["val_accuracy"] for r in runs.read_metrics(run))
        assert f"{best:.2%} (epoch" in row
    assert curves == f"curves: {out}"
    rgb = read_png(out, (1000, 400))
    assert pixels_of(rgb, BLUE) > 200 and pixels_of(rgb, ORANGE) > 200  # one colour per run


def test_figure_overlays_every_epoch_of_every_run(tiny_run, mlp_run):
    summaries = compare.read_runs([tiny_run, mlp_run])
    fig = compare.compare_figure(summaries)
    fig.canvas.draw()
    loss_ax, acc_ax = fig.axes
    # per run: a dashed train line and a solid validation line, each as long as that run
    assert [len(line.get_xdata()) for line in loss_ax.lines] == [2, 2, 3, 3]
    assert [line.get_linestyle() for line in loss_ax.lines] == ["--", "-", "--", "-"]
    assert [len(line.get_xdata()) for line in acc_ax.lines] == [2, 3]
    # the runs are named on the accuracy panel, with solid lines like their validation curves
    legend = acc_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        f"run: cnn (width 4), test {summaries[0].test_accuracy:.2%}",
        f"mlp-run: mlp, test {summaries[1].test_accuracy:.2%}",
    ]
    assert [line.get_linestyle() for line in legend.get_lines()] == ["-", "-"]
    # the loss panel's legend says which line style is which
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "validation"]
    assert [line.get_linestyle() for line in loss_ax.get_legend().get_lines()] == ["--", "-"]
    assert (
        fig.get_suptitle()
        == f"2 runs on {Path(summaries[0].config['data']).name}: loss and validation accuracy by epoch"
    )
    labels = [t.get_text() for t in acc_ax.get_xticklabels() if 0.5 <= t.get_position()[0] <= 3.5]
    assert labels == ["1", "2", "3"]  # whole epochs only


def test_json_and_differences(tiny_run, mlp_run, capsys):
    code, stdout, _ = run_cli(capsys, "compare", str(tiny_run), str(mlp_run), "--json", "--no-plot")
    assert code == 0
    report = json.loads(stdout)
    assert report["differences"] == ["model", "width"]  # epochs are always shown, so not a "difference"
    assert [r["epochs"] for r in report["runs"]] == [2, 3]
    assert report["runs"][1]["config"] == {"model": "mlp", "width": None}
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_seconds"] > 0 for r in report["runs"])


def test_stopped_run_and_run_without_validation(tiny_run, tmp_path):
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(tiny_run / runs.CONFIG_NAME, stopped)
    runs.write_metrics(stopped, runs.read_metrics(tiny_run)[:1])  # killed after epoch 1 of 2: no model.json
    no_val = tmp_path / "no-val"
    no_val.mkdir()
    shutil.copy(tiny_run / runs.CONFIG_NAME, no_val)
    runs.write_metrics(no_val, [{"epoch": 1, "train_loss": 0.5, "lr": 0.01, "seconds": 75.0}])
    summaries = compare.read_runs([stopped, no_val])
    rows = compare.table(summaries)
    assert rows[1][1:] == ["1/2", f"{summaries[0].best_val[0]:.2%} (epoch 1)", "-", f"{summaries[0].seconds:.1f}s"]
    assert rows[2][1:] == ["1/2", "-", "-", "1m 15s"]
    fig = compare.compare_figure(summaries)
    assert len(fig.axes[1].lines) == 2 and len(fig.axes[1].lines[1].get_xdata()) == 0
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [
        "stopped: cnn (width 4), not tested",
        "no-val: cnn (width 4), not tested (no validation set)",
    ]
    fig = compare.compare_figure(summaries[1:])
    assert [t.get_text() for t in fig.axes[1].texts] == ["no run has a validation set"]


def test_only_options_that_apply_and_a_narrow_table(tiny_run, tmp_path):
    """An SGD run with a step schedule beside an AdamW run with onecycle: momentum, nesterov, step_size and
    gamma apply to the SGD run only; and a table wider than the screen turns to a run per column."""
    sgd = tmp_path / "sgd"
    shutil.copytree(tiny_run, sgd)
    config = json.loads((sgd / runs.CONFIG_NAME).read_text())
    config.update(optimizer="sgd", momentum=0.5, nesterov=True, lr=0.1, schedule="step")
    (sgd / runs.CONFIG_NAME).write_text(json.dumps(config))
    adamw = tmp_path / "adamw"
    shutil.copytree(tiny_run, adamw)
    config.update(optimizer="adamw", momentum=0.9, nesterov=False, lr=0.01, schedule="onecycle")
    (adamw / runs.CONFIG_NAME).write_text(json.dumps(config))
    summaries = compare.read_runs([sgd, adamw])
    options = ["lr", "optimizer", "momentum", "nesterov", "schedule", "step_size", "gamma"]
    assert compare.config_differences(summaries) == options
    rows = compare.table(summaries)
    assert rows[0][5:] == options
    assert rows[1][5:] == ["0.1", "sgd", "0.5", "True", "step", "10", "0.1"]
    assert rows[2][5:] == ["0.01", "adamw", "-", "-", "onecycle", "-", "-"]
    assert len(compare.format_table(summaries, width=200).splitlines()) == 3
    narrow = compare.format_table(summaries, width=60).splitlines()
    assert max(map(len, narrow)) <= 60
    assert [line.split()[0] for line in narrow] == ["run", "epochs", "best", "test", "time", *options]
    assert narrow[0].split() == ["run", "sgd", "adamw"] and narrow[7].split() == ["momentum", "0.5", "-"]


def test_same_folder_names_are_told_apart(tiny_run, tmp_path):
    other = tmp_path / "x" / tiny_run.name
    shutil.copytree(tiny_run, other)
    names = [s.name for s in compare.read_runs([tiny_run, other])]
    assert names == [str(tiny_run), str(other)]


def test_a_run_not_named_in_utf8_lines_up_and_is_valid_json(tiny_run, mlp_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / os.fsdecode(b"caf\xe9"))  # the byte is kept as a lone surrogate
    summaries = compare.read_runs([run, mlp_run])
    header, first, _ = compare.format_table(summaries, width=200).splitlines()
    assert first.startswith("caf\\xe9 ")  # as its JSON writes it
    assert first.index(" 2 ") + 2 == header.index("epochs") + len("epochs")  # its epochs under their heading
    document = compare.to_dict(summaries)
    assert [document["runs"][0][key] for key in ("name", "path")] == ["caf\\xe9", f"{tmp_path}/caf\\xe9"]
    assert "\\ud" not in json.dumps(document)  # no escaped surrogate, which strict JSON parsers refuse


def test_compare_where_matplotlib_cannot_write_its_folders_warns_nothing(tiny_run, mlp_run, tmp_path):
    # compare's module is loaded before plots': matplotlib must still be first loaded where plots chooses its folders
    (tmp_path / "tmp").mkdir()
    env = env_without_matplotlib_folders(unusable_home(tmp_path), tmp_path / "tmp")
    command = [sys.executable, "-m", "mnistkit", "compare", tiny_run, mlp_run, "-o", tmp_path / "compare.png"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    read_png(tmp_path / "compare.png", (1000, 400))


def test_format_duration():
    assert [compare.format_duration(s) for s in (3.25, 59.9, 61, 3599, 3600 * 2 + 60 * 5)] == [
        "3.2s",
        "59.9s",
        "1m 01s",
        "59m 59s",
        "2h 05m",
    ]


def bad_runs(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_config = tmp_path / "bad-config"
    bad_config.mkdir()
    (bad_config / runs.CONFIG_NAME).write_text("{not json")
    bad_metrics = tmp_path / "bad-metrics"
    shutil.copytree(good, bad_metrics)
    (bad_metrics / runs.METRICS_NAME).write_text("epoch,train_loss\n1,lots\n")
    damaged = {}
    for key, value in [("seconds", "nan"), ("seconds", "inf"), ("val_accuracy", "7"), ("seconds", "1e300")]:
        folder = tmp_path / f"{key}-{value}"
        shutil.copytree(good, folder)
        row = {
            "epoch": "1",
            "train_loss": "0.5",
            "val_loss": "0.3",
            "val_accuracy": "0.9",
            "lr": "0.01",
            "seconds": "2",
        }
        (folder / runs.METRICS_NAME).write_text(",".join(row) + "\n" + ",".join({**row, key: value}.values()) + "\n")
        damaged[f"{key} {value}"] = (folder, f"line 2: {key} {float(value):g} is outside")
    return {
        **damaged,
        "missing": (tmp_path / "no-such-run", "no such run folder"),
        "a file": (good / runs.CONFIG_NAME, "a file, not a run folder"),
        "empty": (empty, "not a run folder (no config.json)"),
        "bad config": (bad_config, "cannot read the run's config"),
        "bad metrics": (bad_metrics, "not the metrics mnistkit train writes"),
    }


def test_bad_run_folders_give_one_clear_line(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for what, (path, message) in bad_runs(tmp_path, tiny_run).items():
        code, stdout, stderr = run_cli(capsys, "compare", str(tiny_run), str(path))
        assert code == 2 and stdout == "", what
        assert stderr == stderr.strip() + "\n" and stderr.startswith(f"mnistkit: error: {path}"), what
        assert message in stderr and "Traceback" not in stderr, what
    assert not (tmp_path / "compare.png").exists()


def test_a_figure_name_that_is_not_a_png_stops_before_the_table(tiny_run, tmp_path, capsys):
    code, stdout, stderr = run_cli(capsys, "compare", str(tiny_run), "-o", str(tmp_path / "figure"))
    assert code == 2 and stdout == "" and "give a file name ending in .png" in stderr and stderr.count("\n") == 1


def test_a_figure_in_a_missing_folder_stops_before_the_table(tiny_run, tmp_path, capsys):
    out = tmp_path / "missing" / "compare.png"
    code, stdout, stderr = run_cli(capsys, "compare", str(tiny_run), "-o", str(out))
    assert code == 2 and stdout == ""
    assert stderr == (
        f"mnistkit: error: cannot write {out}: No such file or directory; check the folder exists and is writable\n"
    )
    assert list(tmp_path.iterdir()) == []  # show -o and export -o make no folder either


def test_compare_runs_from_another_version(tiny_run, tmp_path):
    """A run recorded with config keys this version does not know still compares."""
    other = tmp_path / "older"
    shutil.copytree(tiny_run, other)
    config = json.loads((other / runs.CONFIG_NAME).read_text())
    config["retired_option"] = 1
    (other / runs.CONFIG_NAME).write_text(json.dumps(config))
    rows = compare.table(compare.read_runs([tiny_run, other]))
    assert rows[0][-1] == "retired_option" and rows[2][-1] == "1"


def test_a_hugging_face_folder_is_not_a_run_to_compare(tiny_run, tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    hub_config = {"num_classes": 10, "architecture": "cnn", "mnistkit": {"format": "mnistkit-hub/1"}}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hub_config))
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    code, stdout, stderr = run_cli(capsys, "compare", str(tiny_run), str(tmp_path / "hf"))
    assert code == 2 and stdout == ""
    assert (
        stderr == f"mnistkit: error: {tmp_path / 'hf'}: a Hugging Face folder, not a run folder; pass folders "
        "written by mnistkit train\n"
    )
