"""MLflow tracking of a run, against a local SQLite store in a temporary folder (no server, no network)."""

import pytest

from mnistkit.train import EpochStats, SilentReporter

mlflow = pytest.importorskip("mlflow")

from mnistkit.mlflow_log import MlflowReporter, flat_params  # noqa: E402


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts go under the working directory's mlruns/
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield mlflow.tracking.MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def test_params_metrics_and_run_folder_are_logged(tmp_path, tracking):
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    reporter = MlflowReporter(run_dir, SilentReporter(), {"model": "cnn", "lr": 0.01, "data": None})
    for epoch, loss in ((1, 0.5), (2, 0.25)):
        reporter.epoch_start(epoch, 2, 10)
        reporter.epoch_end(EpochStats(epoch, loss, loss + 0.1, 0.9 + epoch / 100, 0.01, 1.5))
    reporter.finish(test_accuracy=0.95)
    reporter.close()

    run = tracking.get_run(reporter.run.info.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "a"
    assert run.data.params == {"model": "cnn", "lr": "0.01", "data": "null"}
    assert [m.value for m in tracking.get_metric_history(run.info.run_id, "train_loss")] == [0.5, 0.25]
    assert run.data.metrics["test_accuracy"] == 0.95
    assert [a.path for a in tracking.list_artifacts(run.info.run_id)] == ["metrics.csv"]


def test_a_run_that_stops_early_is_marked_killed(tmp_path, tracking):
    reporter = MlflowReporter(tmp_path, SilentReporter(), {"model": "mlp"})
    reporter.close()
    assert tracking.get_run(reporter.run.info.run_id).info.status == "KILLED"


def test_params_are_strings():
    assert flat_params({"augment": ["shift"], "seed": 0}) == {"augment": "['shift']", "seed": "0"}
