"""Optional MLflow tracking for a run (``mnistkit train --mlflow``).

The run's configuration becomes MLflow params, every epoch's numbers become metrics (step = epoch), and when
training ends the run folder (config, metrics.csv, model, curves) is logged as the run's artifacts. The
tracking store is MLflow's own choice: ``MLFLOW_TRACKING_URI`` when set, else its local default in the
current directory, so nothing leaves the machine unless the user points it elsewhere. Needs the ``mlflow``
extra.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .train import EpochStats, ForwardingReporter, Reporter

EXPERIMENT = "mnistkit"  # unless MLFLOW_EXPERIMENT_NAME names another, as it does for MLflow itself
MISSING = "mlflow: the mlflow package is not installed; install it with: pip install 'mnistkit[mlflow]'"


def require_mlflow() -> None:
    """Raise a one-line ConfigError when MLflow is not installed (check before training starts)."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(MISSING)


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """MLflow params are strings; lists and None are written as they read in config.json."""
    return {name: "null" if value is None else str(value) for name, value in config.items()}


class MlflowReporter(ForwardingReporter):
    """Passes training events on to ``inner`` and records them in an MLflow run named after the run folder.

    It speaks to the store through its own client, so a notebook's active experiment and run are left as they
    were; a run active in this thread (``mlflow.start_run()``) becomes the parent of this one, in its experiment.
    Under ``mlflow run`` (``MLFLOW_RUN_ID`` set, no run active) it records in the run that names.
    """

    def __init__(
        self, run_dir: str | Path, inner: Reporter, config: dict[str, Any], experiment: str | None = None
    ) -> None:
        require_mlflow()
        import mlflow
        from mlflow.entities import Param

        super().__init__(inner)
        self.run_dir = Path(run_dir)
        try:
            self.client = mlflow.MlflowClient()
            self.run = self._open_run(experiment)
            self.run_id = self.run.info.run_id
        except mlflow.exceptions.MlflowException as exc:  # a store MLflow refuses, such as a plain folder
            raise ConfigError(
                f"mlflow: cannot track the run in {mlflow.get_tracking_uri()}: {_one_line(exc)}"
            ) from None
        try:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat_params(config).items()])
        except mlflow.exceptions.MlflowException as exc:
            with suppress(Exception):  # a run that never trains is not left RUNNING, where the store still answers
                self.client.set_terminated(self.run_id, "FAILED")
            raise ConfigError(f"mlflow: cannot log the run's options: {_one_line(exc)}") from None
        self.lost = False  # the store failed once: nothing more is sent to it
        self.ended = False

    def _open_run(self, experiment: str | None) -> Any:
        import mlflow
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        parent = mlflow.active_run()
        if parent is None and os.environ.get("MLFLOW_RUN_ID"):
            return self.client.get_run(os.environ["MLFLOW_RUN_ID"])
        if parent is not None:
            experiment_id, tags = parent.info.experiment_id, {MLFLOW_PARENT_RUN_ID: parent.info.run_id}
        else:
            experiment_id, tags = self._experiment_id(experiment), {}
        # MLflow's own tags (user, source, git commit), as mlflow.start_run adds them.
        return self.client.create_run(experiment_id, run_name=self.run_dir.name, tags=resolve_tags(tags))

    def _experiment_id(self, name: str | None) -> str:
        import mlflow

        name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name)
            except mlflow.exceptions.MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self.client.get_experiment_by_name(name)  # another run made it meanwhile (a sweep)
        if found is None or found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"mlflow: the experiment {name!r} is deleted in {mlflow.get_tracking_uri()}: restore it (mlflow "
                "experiments restore) or name another with MLFLOW_EXPERIMENT_NAME"
            )
        return found.experiment_id

    def track(self, what: str, call: Callable[[], object]) -> None:
        """One call to the tracking store. Where it fails (a tracking server gone mid-run, a full disk under a
        local store), training goes on, since the run folder holds all of it: the failure is said once, in one
        line, and nothing more is sent (each call to a server that is gone waits out MLflow's retries)."""
        if self.lost:
            return
        try:
            call()
        except Exception as exc:  # whatever MLflow or its HTTP client raises: tracking is not the run
            self.lost = True
            reason = _one_line(exc)
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            print(
                f"mnistkit: mlflow: {what} failed, so the run is no longer tracked there ({reason}); training goes "
                f"on, and the run folder {self.run_dir} keeps everything",
                file=sys.stderr,
                flush=True,
            )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def epoch_end(self, stats: EpochStats) -> None:
        self.track(f"logging epoch {stats.epoch}", lambda: self.log_metrics(stats.metrics(), stats.epoch))
        super().epoch_end(stats)

    def finish(self, test_loss: float | None, test_accuracy: float | None) -> None:
        """Record the test figures and the finished run folder, and end the MLflow run as finished."""
        tested = {
            name: value
            for name, value in (("test_loss", test_loss), ("test_accuracy", test_accuracy))
            if value is not None
        }
        self.track("logging the test figures", lambda: self.log_metrics(tested, 0))
        self.track("logging the run folder", lambda: self.client.log_artifacts(self.run_id, str(self.run_dir)))
        self.end("FINISHED")

    def end(self, status: str) -> None:
        self.ended = True
        self.track("ending the run", lambda: self.client.set_terminated(self.run_id, status))

    def close(self) -> None:
        # Not ended here means training stopped early (an error or Ctrl-C): keep what was logged, marked so.
        if not self.ended:
            self.end("KILLED")


def _one_line(exc: BaseException) -> str:
    """What MLflow (or its HTTP client) says, on one line: it says what to do instead, so all of it is kept."""
    return " ".join(str(exc).split())
