"""MLflow tracking of a run, against a local SQLite store in a temporary folder (no server, no network)."""

import json
import signal
import sys

import pytest
from helpers import train_argv

from mnistkit import cli, runs
from mnistkit.errors import ConfigError
from mnistkit.mlflow_log import MISSING, MlflowReporter, flat_params, require_mlflow
from mnistkit.progress import ConsoleReporter
from mnistkit.train import EpochStats, SilentReporter


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts go under the working directory's mlruns/
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield mlflow.tracking.MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture
def without_mlflow(monkeypatch):
    """Make the mlflow package look uninstalled, whether or not it is (importlib then finds no spec)."""
    monkeypatch.setitem(sys.modules, "mlflow", None)


def the_only_run(tracking):
    experiment = tracking.get_experiment_by_name("mnistkit")
    (run,) = tracking.search_runs([experiment.experiment_id])
    return run


def test_params_metrics_and_run_folder_are_logged(tmp_path, tracking):
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    reporter = MlflowReporter(run_dir, SilentReporter(), {"model": "cnn", "lr": 0.01, "data": None})
    for epoch, loss in ((1, 0.5), (2, 0.25)):
        reporter.epoch_start(epoch, 2, 10)
        reporter.epoch_end(EpochStats(epoch, loss, loss + 0.1, 0.9 + epoch / 100, 0.01, 1.5))
    reporter.finish(test_loss=0.2, test_accuracy=0.95)
    reporter.close()

    run = tracking.get_run(reporter.run.info.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "a"
    assert run.data.params == {"model": "cnn", "lr": "0.01", "data": "null"}
    assert [m.value for m in tracking.get_metric_history(run.info.run_id, "train_loss")] == [0.5, 0.25]
    assert run.data.metrics["test_accuracy"] == 0.95 and run.data.metrics["test_loss"] == 0.2
    assert [a.path for a in tracking.list_artifacts(run.info.run_id)] == ["metrics.csv"]


def test_a_run_that_stops_early_is_marked_killed(tmp_path, tracking):
    reporter = MlflowReporter(tmp_path, SilentReporter(), {"model": "mlp"})
    reporter.close()
    assert tracking.get_run(reporter.run.info.run_id).info.status == "KILLED"


def test_params_are_strings():
    assert flat_params({"augment": ["shift"], "seed": 0}) == {"augment": "['shift']", "seed": "0"}


def test_train_with_mlflow_logs_what_the_run_folder_holds(tiny_idx, tmp_path, tracking, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, out, "--mlflow", "--quiet"))
    assert exit_info.value.code == 0, capsys.readouterr().err

    run = the_only_run(tracking)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    config = json.loads((out / "config.json").read_text())
    assert run.data.params == flat_params(config)
    metrics = runs.read_metrics(out)
    for column in ("train_loss", "val_loss", "val_accuracy", "lr"):
        history = tracking.get_metric_history(run.info.run_id, column)
        assert [m.step for m in history] == [row["epoch"] for row in metrics]
        assert [m.value for m in history] == pytest.approx([row[column] for row in metrics], rel=1e-6)
    meta = json.loads((out / "model.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(meta["metrics"]["test_accuracy"])
    assert run.data.metrics["test_loss"] == pytest.approx(meta["metrics"]["test_loss"])
    logged = {a.path for a in tracking.list_artifacts(run.info.run_id)}
    assert logged == {p.name for p in out.iterdir()}


def test_ctrl_c_keeps_the_logged_epochs_and_marks_the_run_killed(tiny_idx, tmp_path, tracking, monkeypatch, capsys):
    def ctrl_c_in_epoch_2(self, epoch, epochs, steps):
        if epoch == 2:
            signal.raise_signal(signal.SIGINT)  # handled as a real Ctrl-C: stop after this batch, save, exit 130

    monkeypatch.setattr(ConsoleReporter, "epoch_start", ctrl_c_in_epoch_2)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, tmp_path / "run", "--mlflow", "--quiet"))
    assert exit_info.value.code == 130, capsys.readouterr().err

    run = the_only_run(tracking)
    assert run.info.status == "KILLED"
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "train_loss")] == [1]


def test_a_tracking_store_that_fails_mid_run_is_said_once_and_training_goes_on(
    tiny_idx, tmp_path, tracking, monkeypatch, capsys
):
    import mlflow

    real_log_batch, calls = mlflow.MlflowClient.log_batch, []

    def log_batch(self, run_id, metrics=(), **kwargs):  # the tracking server goes away after epoch 1
        if metrics:
            calls.append(metrics)
            if len(calls) > 1:
                raise mlflow.exceptions.MlflowException("API request to http://tracking/api failed: Connection refused")
        return real_log_batch(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", log_batch)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, out, "--mlflow", "--quiet", epochs=3))
    err = capsys.readouterr().err
    assert exit_info.value.code == 0, err
    said = [line for line in err.splitlines() if line.startswith("mnistkit: ")]
    assert said == [
        "mnistkit: mlflow: logging epoch 2 failed, so the run is no longer tracked there (API request to "
        f"http://tracking/api failed: Connection refused); training goes on, and the run folder {out} keeps "
        "everything"
    ]
    assert len(calls) == 2 and len(runs.read_metrics(out)) == 3 and (out / "model.safetensors").is_file()
    run = the_only_run(tracking)
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "train_loss")] == [1]
    assert mlflow.active_run() is None  # nothing left behind in the process for the caller's next run


def test_mlflow_experiment_name_chooses_the_experiment(tiny_idx, tmp_path, tracking, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "digits-sweep")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, tmp_path / "run", "--mlflow", "--quiet"))
    assert exit_info.value.code == 0, capsys.readouterr().err
    experiment = tracking.get_experiment_by_name("digits-sweep")
    (run,) = tracking.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and tracking.get_experiment_by_name("mnistkit") is None


def test_a_notebooks_active_experiment_is_left_as_it_was(tiny_idx, tmp_path, tracking, capsys):
    import mlflow

    mine = mlflow.set_experiment("my-notebook")
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(train_argv(tiny_idx, tmp_path / "run", "--mlflow", "--quiet"))
        assert exit_info.value.code == 0, capsys.readouterr().err
        with mlflow.start_run() as after:  # the notebook's next run goes where it went before
            assert after.info.experiment_id == mine.experiment_id
    finally:
        mlflow.set_experiment("Default")
    assert the_only_run(tracking).info.status == "FINISHED"


def test_training_inside_an_active_run_is_its_child(tiny_idx, tmp_path, tracking, capsys):
    import mlflow

    mlflow.set_experiment("sweep")
    try:
        with mlflow.start_run(run_name="sweep") as parent:
            for seed in (0, 1):
                with pytest.raises(SystemExit) as exit_info:
                    cli.main(train_argv(tiny_idx, tmp_path / f"seed{seed}", "--mlflow", "--quiet", "--seed", str(seed)))
                assert exit_info.value.code == 0, capsys.readouterr().err
                assert mlflow.active_run().info.run_id == parent.info.run_id  # still the caller's, still running
    finally:
        mlflow.set_experiment("Default")
    children = tracking.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(run.info.run_name for run in children) == ["seed0", "seed1"]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert tracking.get_run(parent.info.run_id).info.status == "FINISHED"  # ended by its `with`, not by mnistkit
    assert tracking.get_experiment_by_name("mnistkit") is None


def test_the_run_carries_mlflows_own_tags(tmp_path, tracking):
    reporter = MlflowReporter(tmp_path / "a", SilentReporter(), {"model": "mlp"})
    reporter.close()
    tags = tracking.get_run(reporter.run_id).data.tags
    assert {"mlflow.user", "mlflow.source.name", "mlflow.source.type"} <= set(tags)  # as mlflow.start_run adds


def test_under_mlflow_run_the_named_run_is_the_one_logged_to(tiny_idx, tmp_path, tracking, monkeypatch, capsys):
    given = tracking.create_run(tracking.create_experiment("project")).info.run_id  # as `mlflow run` makes it
    monkeypatch.setenv("MLFLOW_RUN_ID", given)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, tmp_path / "run", "--mlflow", "--quiet"))
    assert exit_info.value.code == 0, capsys.readouterr().err
    run = tracking.get_run(given)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics and run.data.params["model"]
    assert tracking.get_experiment_by_name("mnistkit") is None  # no run of its own beside it


def test_an_experiment_made_meanwhile_by_another_run_is_used(tmp_path, tracking, monkeypatch):
    """Two runs of a sweep starting at once on a new store: both find no experiment, one creates it first."""
    import mlflow

    tracking.create_experiment("mnistkit")
    real, calls = mlflow.MlflowClient.get_experiment_by_name, []

    def not_yet(self, name):  # the first look happens before the other run created it
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", not_yet)
    reporter = MlflowReporter(tmp_path / "a", SilentReporter(), {"model": "mlp"})
    reporter.close()
    assert tracking.get_run(reporter.run_id).info.experiment_id == real(tracking, "mnistkit").experiment_id


def test_options_the_store_refuses_leave_no_run_running(tmp_path, tracking, monkeypatch):
    import mlflow

    def refuse(self, run_id, params=(), **kwargs):
        raise mlflow.exceptions.MlflowException("Param value 'x' had length 7000, which exceeded length limit")

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", refuse)
    with pytest.raises(ConfigError, match="^mlflow: cannot log the run's options: Param value 'x' had length"):
        MlflowReporter(tmp_path / "a", SilentReporter(), {"model": "mlp"})
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("mnistkit").experiment_id])
    assert run.info.status == "FAILED"


def test_a_deleted_experiment_is_one_clear_line(tiny_idx, tmp_path, tracking, capsys):
    tracking.delete_experiment(tracking.create_experiment("mnistkit"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, tmp_path / "run", "--mlflow", "--quiet"))
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and stderr.count("\n") == 1
    assert stderr.startswith("mnistkit: error: mlflow: the experiment 'mnistkit' is deleted in sqlite:///")
    assert not (tmp_path / "run").exists()


def test_under_torchrun_only_the_main_process_logs(tiny_idx, tmp_path, tracking):
    """Two Gloo processes through --nproc: one MLflow run, from rank 0."""
    import subprocess

    out = tmp_path / "run"
    flags = ("--mlflow", "--quiet", "--nproc", "2", "--batch-size", "64")
    argv = [sys.executable, "-m", "mnistkit", *train_argv(tiny_idx, out, *flags)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = the_only_run(tracking)
    assert run.info.status == "FINISHED" and run.data.params["model"] == "logreg"


def test_missing_mlflow_is_one_clear_line_before_anything_is_written(without_mlflow, tiny_idx, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, out, "--mlflow", "--quiet"))
    stdout, stderr = capsys.readouterr()
    assert exit_info.value.code == 2 and stdout == ""
    assert stderr == f"mnistkit: error: {MISSING}\n"
    assert "pip install 'mnistkit[mlflow]'" in stderr
    assert not out.exists()  # checked before the run folder is made


def test_require_mlflow(without_mlflow):
    with pytest.raises(Exception, match="mlflow package is not installed"):
        require_mlflow()


def test_a_store_mlflow_refuses_is_one_clear_line(tiny_idx, tmp_path, monkeypatch, capsys):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()  # a plain folder, which MLflow 3 no longer takes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(train_argv(tiny_idx, tmp_path / "run", "--mlflow", "--quiet"))
    finally:
        mlflow.set_tracking_uri(None)
    stderr = capsys.readouterr().err
    if exit_info.value.code == 0:
        pytest.skip(f"MLflow {mlflow.__version__} still takes a plain folder as its store")
    assert exit_info.value.code == 2 and stderr.startswith(f"mnistkit: error: mlflow: cannot track the run in {uri}:")
    assert "Traceback" not in stderr and stderr.count("mnistkit: error") == 1
    assert not (tmp_path / "run").exists()  # the empty run folder is taken back
