"""mnistkit.evaluate: loss and accuracy of a model on a split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistkit.data import Normalization, Split
from mnistkit.evaluate import loss_and_accuracy


class FirstPixelSays(nn.Module):
    """Predicts the class written in each image's top-left pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0, 0, 0].long(), 10).float()


def test_accuracy_is_exact_at_a_target():
    # 9,970 right of 10,000 is exactly 99.7%; a float32 mean gives 0.99699998 and missed the target.
    labels = torch.arange(10_000) % 10
    images = torch.zeros(10_000, 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = labels.to(torch.uint8)
    images[:30, 0, 0] = (labels[:30] + 1) % 10  # 30 wrong
    _, accuracy = loss_and_accuracy(FirstPixelSays(), Split(images, labels), Normalization(0.0, 1.0, 1.0))
    assert accuracy == 0.997 and accuracy >= 0.997


def test_a_run_whose_data_changed_is_evaluated_with_a_note(tiny_idx, tmp_path):
    from helpers import write_idx_folder

    from mnistkit import runs
    from mnistkit.config import make_config
    from mnistkit.evaluate import evaluate_checkpoint, format_report
    from mnistkit.train import train_run

    cfg = make_config(model="mlp", epochs=1, val_size=100, data=str(tiny_idx), batch_size=64)
    run = runs.create_run_dir(tmp_path / "run", cfg.model)
    train_run(cfg, run)
    assert evaluate_checkpoint(run).notes == []
    write_idx_folder(tiny_idx, seed=5)  # other images under the same names
    report = evaluate_checkpoint(run)
    assert len(report.notes) == 1 and "changed since this model trained on them" in report.notes[0]
    assert format_report(report).startswith("note: ") and report.to_dict()["notes"] == report.notes


def test_evaluate_refuses_a_batch_size_that_is_not_a_count_and_takes_one_path_as_an_ensemble(tiny_run):
    import pytest

    from mnistkit.errors import ConfigError
    from mnistkit.evaluate import evaluate_checkpoint, evaluate_ensemble

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="batch_size must be a whole number of at least 1"):
            evaluate_checkpoint(tiny_run, batch_size=bad)
    assert evaluate_ensemble(str(tiny_run)).accuracy == evaluate_checkpoint(tiny_run).accuracy


def test_a_report_naming_files_not_in_utf8_is_valid_json():
    import json
    import os

    from mnistkit.evaluate import Report

    name = os.fsdecode(b"caf\xe9")  # Python keeps the byte that is not UTF-8 as a lone surrogate
    report = Report(0.5, 0.5, torch.eye(2, dtype=torch.int64), ["0", "1"], members=[{"source": name}], notes=[name])
    document = report.to_dict()
    assert document["members"] == [{"source": "caf\\xe9"}] and document["notes"] == ["caf\\xe9"]
    assert "\\ud" not in json.dumps(document)  # no escaped surrogate, which strict JSON parsers refuse


def test_evaluate_checkpoint_refuses_a_path_that_is_not_one_and_takes_numpy_batch_sizes(tiny_run):
    import numpy as np
    import pytest

    from mnistkit.errors import ConfigError
    from mnistkit.evaluate import evaluate_checkpoint

    for path in (None, 3, ""):
        with pytest.raises(ConfigError, match="^path (must be a path|is empty)"):
            evaluate_checkpoint(path)
    report = evaluate_checkpoint(tiny_run, batch_size=np.int64(64))
    assert (report.count, report.accuracy) == (
        evaluate_checkpoint(tiny_run).count,
        evaluate_checkpoint(tiny_run).accuracy,
    )


def test_a_run_on_data_with_neither_split_is_told_to_give_other_data(mnist, tmp_path):
    import numpy as np
    import pytest

    from mnistkit import runs
    from mnistkit.config import make_config
    from mnistkit.errors import DataError
    from mnistkit.evaluate import evaluate_checkpoint
    from mnistkit.train import train_run

    train_only = tmp_path / "train-only.npz"
    np.savez(train_only, x_train=mnist.train.images[:200].numpy(), y_train=mnist.train.labels[:200].numpy())
    for val_size, advice in ((0, "use data with test files"), (50, "use split val or data with test files")):
        cfg = make_config(model="logreg", epochs=1, val_size=val_size, data=str(train_only), batch_size=64)
        run = runs.create_run_dir(tmp_path / f"run{val_size}", cfg.model)
        train_run(cfg, run)
        with pytest.raises(DataError, match=f"has no test set; {advice}$"):
            evaluate_checkpoint(run)
    # Asked for the validation split it never held out: the test split, of other data.
    with pytest.raises(DataError, match=r"use split test with data that has test files \(.*train-only.npz has none\)$"):
        evaluate_checkpoint(tmp_path / "run0", split="val")
    # Other data without a test set: its validation split is no way out (the run's val_size may not fit it).
    with pytest.raises(DataError, match="has no test set; use data with test files$"):
        evaluate_checkpoint(tmp_path / "run50", data=train_only)


def test_a_fine_tuned_run_with_no_validation_split_is_told_to_use_its_test_split(mnist, tmp_path):
    import numpy as np
    import pytest

    from mnistkit import runs
    from mnistkit.config import make_config
    from mnistkit.errors import DataError
    from mnistkit.evaluate import evaluate_checkpoint
    from mnistkit.train import train_run

    train_only = tmp_path / "train-only.npz"
    np.savez(train_only, x_train=mnist.train.images[:200].numpy(), y_train=mnist.train.labels[:200].numpy())
    cfg = make_config(model="logreg", epochs=1, val_size=0, data=str(train_only), batch_size=64, mix_mnist=0.5)
    run = runs.create_run_dir(tmp_path / "run", cfg.model)
    train_run(cfg, run)
    assert 0 <= evaluate_checkpoint(run).accuracy <= 1  # its test split is MNIST's, as the run was tested
    with pytest.raises(DataError, match=r"it has no validation split; use split test$"):
        evaluate_checkpoint(run, split="val")
