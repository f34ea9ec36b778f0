"""Fine-tuning (train --init, --mix-mnist): a run starts from another run's weights and scaling, its model options
follow the init and a mismatch is one line, MNIST images are mixed in as defined and recorded with their source,
the MNIST test set tests a run on corrections, and such a run resumes. On tiny generated data: a corrections
database of 30 drawings and the tiny cnn run of conftest as the init."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_digits
from safetensors.torch import load_file

from mnistkit import data, finetune, runs, train
from mnistkit.cli import main
from mnistkit.config import make_config
from mnistkit.errors import ConfigError
from mnistkit.evaluate import evaluate_checkpoint
from mnistkit.feedback import FeedbackStore
from mnistkit.session import TrainRequest
from mnistkit.session import train as train_session
from mnistkit.train import Interrupt, TrainingInterrupted, train_run

CORRECTIONS = 30


def write_corrections(path: Path, n: int = CORRECTIONS, seed: int = 7) -> Path:
    """A corrections database of ``n`` drawings of the tiny generated task (the one the tiny run learned)."""
    store = FeedbackStore(path)
    images, labels = make_digits(n, seed)
    for image, label in zip(images, labels):
        store.add(image, int(label), predicted=int(label))
    store.close()
    return path


@pytest.fixture(scope="module")
def corrections(tmp_path_factory) -> Path:
    return write_corrections(tmp_path_factory.mktemp("feedback") / "feedback.sqlite")


@pytest.fixture
def quick_mnist(monkeypatch, mnist):
    """The bundled MNIST loaded once per session rather than verified again for every run."""
    monkeypatch.setattr(data, "load_bundled_mnist", lambda: mnist)
    return mnist


def finetune_config(init: Path, db: Path, **options):
    return make_config(init=str(init), data=str(db), val_size=0, batch_size=16, **{"epochs": 1, **options})


def one_line_exit_2(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------------------
# --init


def test_the_model_options_follow_the_init_and_its_identity_is_recorded(tiny_run):
    cfg = make_config(init=str(tiny_run))
    assert (cfg.model, cfg.width, cfg.stem_width) == ("cnn", 4, None)
    meta = json.loads((tiny_run / "model.json").read_text())
    assert cfg.init == str((tiny_run / "model.json").resolve()) and cfg.init_sha256 == meta["sha256"]
    pretrained = make_config(init="pretrained")
    assert (pretrained.init, pretrained.width, pretrained.stem_width) == ("pretrained", 40, 16)


def test_training_starts_from_the_inits_weights_and_scaling(tiny_run, corrections, quick_mnist, monkeypatch):
    started_with = {}

    def spy(model, *args, **kwargs):
        started_with.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return fit(model, *args, **kwargs)

    fit = train.fit
    monkeypatch.setattr(train, "fit", spy)
    result = train_run(finetune_config(tiny_run, corrections, mix_mnist=0.5))
    init_weights = load_file(tiny_run / "model.safetensors")
    assert started_with.keys() == init_weights.keys()
    assert all(torch.equal(started_with[k], init_weights[k]) for k in init_weights)
    init_meta = json.loads((tiny_run / "model.json").read_text())
    assert result.meta["normalization"] == init_meta["normalization"]  # not fitted again on the new data


def test_the_first_batch_loss_is_the_trained_models_not_a_fresh_ones(tiny_run, corrections, tmp_path):
    first_losses = {}
    for name, init in (("fresh", None), ("init", str(tiny_run))):
        options = dict(init=init) if init else dict(model="cnn", width=4)
        cfg = make_config(data=str(corrections), val_size=0, batch_size=32, epochs=1, lr=1e-6, **options)
        run_dir = runs.create_run_dir(tmp_path / name, cfg.model)
        train_run(cfg, run_dir)
        first_losses[name] = runs.read_batch_losses(run_dir)[1][0]
    assert first_losses["fresh"] > 2.0 and first_losses["init"] < 0.5 * first_losses["fresh"]


def test_another_model_than_the_inits_is_one_line_before_anything_is_written(tiny_run, corrections, tmp_path, capsys):
    with pytest.raises(
        ConfigError, match=r"init: .* holds model cnn \(width 4\), the options ask for model cnn \(width 8"
    ):
        make_config(init=str(tiny_run), width=8)
    out = tmp_path / "run"
    err = one_line_exit_2(["train", "--init", str(tiny_run), "--model", "mlp", "--data", str(corrections),
                           "--val-size", "0", "--out", str(out)], capsys)  # fmt: skip
    assert "holds model cnn (width 4), the options ask for model mlp" in err and not out.exists()
    err = one_line_exit_2(["train", "--init", str(tmp_path / "nothing"), "--out", str(out)], capsys)
    assert "init: " in err and "no checkpoint here" in err and not out.exists()


def test_an_init_of_other_classes_or_changed_weights_is_refused(tiny_run, corrections, tmp_path):
    init = Path(shutil.copytree(tiny_run, tmp_path / "init"))
    cfg = finetune_config(init, corrections)
    meta = json.loads((init / "model.json").read_text())
    (init / "model.json").write_text(json.dumps({**meta, "classes": list("abcdefghij")}))
    with pytest.raises(ConfigError, match=r"init: .* tells apart 10 classes \(a, b, c, d, …\), the data 10 classes"):
        train_run(cfg)
    (init / "model.json").write_text(json.dumps({**meta, "sha256": "0" * 64}))  # another model in its place
    with pytest.raises(ConfigError, match="holds other weights than the run started from"):
        train_run(cfg)
    with pytest.raises(ConfigError, match="init_sha256 must be the 64 hex digits"):
        make_config(init=str(tiny_run), init_sha256="abc")


# --------------------------------------------------------------------------------------------------
# --mix-mnist


@pytest.mark.parametrize("n, fraction, count", [(50, 0.5, 50), (50, 0.95, 950), (30, 0.25, 10), (10, 0.0, 0)])
def test_the_mixed_count_makes_the_fraction_of_the_training_set(n, fraction, count):
    assert finetune.mixed_count(n, fraction) == count
    assert count / (n + count) == pytest.approx(fraction, abs=0.01)


def test_mixed_images_are_mnist_training_images_drawn_with_the_seed(quick_mnist):
    ds = data.Dataset("mine", data.Split(*map(torch.from_numpy, make_digits(40))), None)
    ds.train.labels = ds.train.labels.long()
    splits = data.split_dataset(ds, 0)
    mixed, record = finetune.mix_mnist(ds, splits, 0.2, seed=3)
    assert len(mixed.train) == 50 and record["train"] == 10
    assert torch.equal(mixed.train.images[:40], ds.train.images)  # the data itself comes first, untouched
    drawn = mixed.train.images[40:].flatten(1)
    mnist_train = quick_mnist.train.images.flatten(1)
    found = [int(((mnist_train == image).all(1)).nonzero()[0]) for image in drawn]
    assert [int(quick_mnist.train.labels[i]) for i in found] == mixed.train.labels[40:].tolist()
    assert torch.equal(finetune.mix_mnist(ds, splits, 0.2, seed=3)[0].train.images, mixed.train.images)
    assert not torch.equal(finetune.mix_mnist(ds, splits, 0.2, seed=4)[0].train.images, mixed.train.images)
    assert mixed.test is quick_mnist.test and record["test"] == len(quick_mnist.test)  # no test part of its own


def test_mixing_refuses_other_classes_and_more_images_than_mnist_has(quick_mnist):
    split = data.Split(torch.zeros(1000, 28, 28, dtype=torch.uint8), torch.zeros(1000, dtype=torch.long))
    letters = data.Dataset("letters", split, None, classes=list("abcdefghij"))
    with pytest.raises(ConfigError, match="mix_mnist: MNIST's digits cannot join data of other classes"):
        finetune.mix_mnist(letters, data.split_dataset(letters, 0), 0.5, 0)
    digits = data.Dataset("digits", split, None)
    with pytest.raises(
        ConfigError, match="is 99,000 MNIST images, more than MNIST's 60,000; lower mix_mnist to 0.983 or"
    ):
        finetune.mix_mnist(digits, data.split_dataset(digits, 0), 0.99, 0)


@pytest.mark.parametrize("n, most", [(1000, 0.983), (100_000, 0.375), (60_000, 0.5), (10**8, 0.0)])
def test_the_largest_mix_mnist_asks_for_no_more_than_mnist_has(n, most):
    # The message for too large a mix_mnist says how far to lower it: a database of 100,000 corrections takes 0.375.
    assert finetune.largest_fraction(n, 60_000) == most
    assert finetune.mixed_count(n, most) <= 60_000 < finetune.mixed_count(n, most + 0.001)


def test_a_run_records_both_sources_and_is_tested_on_mnist(tiny_run, corrections, quick_mnist, tmp_path):
    run_dir = runs.create_run_dir(tmp_path / "run", "cnn")
    result = train_run(finetune_config(tiny_run, corrections, mix_mnist=0.5), run_dir)
    meta = json.loads((run_dir / "model.json").read_text())
    store = FeedbackStore(corrections, create=False)
    assert meta["dataset"]["checksums"] == {"feedback.sqlite": store.checksum()}
    assert meta["dataset"]["source"] == str(corrections)
    assert (meta["dataset"]["train"], meta["dataset"]["test"]) == (2 * CORRECTIONS, 10_000)
    mix = meta["dataset"]["mnist_mix"]
    assert (mix["fraction"], mix["train"], mix["test"], mix["seed"]) == (0.5, CORRECTIONS, 10_000, 0)
    assert mix["source"] == "bundled" and mix["checksums"] == data.MNIST_MD5
    init_meta = json.loads((tiny_run / "model.json").read_text())
    assert meta["init"] == {"path": str((tiny_run / "model.json").resolve()), "sha256": init_meta["sha256"]}
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["init"], config["init_sha256"], config["mix_mnist"]) == (
        meta["init"]["path"],
        init_meta["sha256"],
        0.5,
    )
    assert result.test_accuracy is not None and meta["metrics"]["test_accuracy"] == result.test_accuracy
    report = evaluate_checkpoint(run_dir)  # evaluate tests it as it was tested: on MNIST's test set
    assert (
        report.count == 10_000
        and report.data_name == "MNIST"
        and report.accuracy == pytest.approx(result.test_accuracy)
    )


def test_a_finetuned_run_resumes_to_the_same_weights(tiny_run, corrections, quick_mnist, tmp_path):
    def cfg():
        return finetune_config(tiny_run, corrections, mix_mnist=0.5, epochs=2, deterministic=True, device="cpu")

    try:
        alone = train_run(cfg(), runs.create_run_dir(tmp_path / "alone", "cnn"))
        stopped = runs.create_run_dir(tmp_path / "stopped", "cnn")
        interrupt = Interrupt(announce=False)
        interrupt.requested = True  # as Ctrl-C: stop after the first batch, with a resume state saved
        with pytest.raises(TrainingInterrupted, match="at epoch 1, step 1 of 4"):
            train_run(cfg(), stopped, interrupt=interrupt)
        resumed = train_session(TrainRequest(resume=stopped, quiet=True))
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(
        torch.equal(a, b) for a, b in zip(alone.model.state_dict().values(), resumed.model.state_dict().values())
    )
    meta = json.loads((stopped / "model.json").read_text())
    assert meta["init"] == alone.meta["init"] and meta["dataset"] == alone.meta["dataset"]


def test_the_finetune_preset_and_a_too_small_database_are_one_line(tmp_path, capsys):
    small = write_corrections(tmp_path / "small.sqlite", n=3)
    out = tmp_path / "run"
    err = one_line_exit_2(["train", "--preset", "finetune", "--data", str(small), "--out", str(out)], capsys)
    assert "holds 3 corrections; training needs at least 10" in err and not out.exists()
    cfg = make_config("finetune")
    assert (cfg.init, cfg.model, cfg.val_size) == ("pretrained", "cnn", 0) and 0 < cfg.mix_mnist < 1


def test_the_start_line_says_where_the_weights_come_from(tiny_run, corrections, quick_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--init", str(tiny_run), "--data", str(corrections), "--val-size", "0", "--mix-mnist", "0.5",
              "--epochs", "1", "--quiet", "--out", str(out)])  # fmt: skip
    assert exit_info.value.code == 0
    first = capsys.readouterr().out.splitlines()[0]
    init = (tiny_run / "model.json").resolve()
    assert first == f"training cnn from {init} on {corrections} with 50% MNIST for 1 epoch -> {out}"
    assert np.isfinite(json.loads((out / "model.json").read_text())["metrics"]["test_accuracy"])
