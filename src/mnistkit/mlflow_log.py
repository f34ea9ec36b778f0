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
from collections.abc import Callable
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
    """Passes training events on to ``inner`` and records them in an MLflow run named after the run folder."""

    def __init__(
        self, run_dir: str | Path, inner: Reporter, config: dict[str, Any], experiment: str | None = None
    ) -> None:
        require_mlflow()
        import mlflow

        experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT

        super().__init__(inner)
        self.mlflow = mlflow
        self.run_dir = Path(run_dir)
        try:
            mlflow.set_experiment(experiment)
            self.run = mlflow.start_run(run_name=self.run_dir.name)
        except mlflow.exceptions.MlflowException as exc:  # a store MLflow refuses, such as a plain folder
            reason = " ".join(str(exc).split())  # MLflow says what to do instead: keep all of it, on one line
            raise ConfigError(f"mlflow: cannot track the run in {mlflow.get_tracking_uri()}: {reason}") from None
        mlflow.log_params(flat_params(config))
        self.lost = False  # the store failed once: nothing more is sent to it

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
            reason = " ".join(str(exc).split())
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            print(
                f"mnistkit: mlflow: {what} failed, so the run is no longer tracked there ({reason}); training goes "
                f"on, and the run folder {self.run_dir} keeps everything",
                file=sys.stderr,
                flush=True,
            )

    def epoch_end(self, stats: EpochStats) -> None:
        self.track(f"logging epoch {stats.epoch}", lambda: self.mlflow.log_metrics(stats.metrics(), step=stats.epoch))
        super().epoch_end(stats)

    def finish(self, test_accuracy: float | None) -> None:
        """Record the test accuracy and the finished run folder, and end the MLflow run as finished."""
        if test_accuracy is not None:
            self.track("logging the test accuracy", lambda: self.mlflow.log_metric("test_accuracy", test_accuracy))
        self.track("logging the run folder", lambda: self.mlflow.log_artifacts(str(self.run_dir)))
        self.track("ending the run", lambda: self.mlflow.end_run())

    def close(self) -> None:
        # Still active here means training stopped early (an error or Ctrl-C): keep what was logged, marked so.
        if self.mlflow.active_run() is not None:
            self.track("ending the run", lambda: self.mlflow.end_run(status="KILLED"))
