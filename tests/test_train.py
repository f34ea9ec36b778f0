"""The training loop and the run around it: history, optimizers and schedules, seeds, early stopping, NaN,
the run folder, and on the real MNIST the mlp's accuracy and the tutorial preset's curve."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from mnistkit import data, runs
from mnistkit.config import OPTIMIZERS, SCHEDULES, make_config
from mnistkit.errors import ConfigError, TrainingError
from mnistkit.models import create_model
from mnistkit.train import fit, train_run

# The tutorial's logged validation loss after its first three epochs.
TUTORIAL_CURVE = [2.2796, 2.2441, 2.1890]


@pytest.fixture(scope="module")
def tiny_splits(tiny_idx_session):
    ds = data.load_path(tiny_idx_session)
    return data.split_dataset(ds, 100), data.standardization(ds.train)


def _fit(tiny_splits, model="mlp", **options):
    (splits, norm) = tiny_splits
    cfg = make_config(model=model, data="unused", **{"epochs": 2, "batch_size": 32, **options})
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, **cfg.model_options())
    return net, fit(net, splits.train, splits.val, cfg, norm)


def test_fit_returns_one_record_per_epoch_and_learns(tiny_splits):
    _, history = _fit(tiny_splits, epochs=3, lr=0.01)
    assert [h.epoch for h in history] == [1, 2, 3]
    assert all(h.seconds > 0 and h.lr >= 0 for h in history)
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy > 0.9  # the generated task is easy


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_optimizer_and_schedule_trains(tiny_splits, optimizer, schedule):
    steps = {"step_size": 1, "gamma": 0.5} if schedule == "step" else {}
    _, history = _fit(tiny_splits, optimizer=optimizer, schedule=schedule, lr=0.01, **steps)
    assert all(torch.isfinite(torch.tensor(h.train_loss)) for h in history)
    if schedule == "step":  # the recorded lr is the one in force when the epoch ends
        assert [h.lr for h in history] == pytest.approx([0.005, 0.0025])


def test_nesterov_clipping_smoothing_and_augmentation_train(tiny_splits):
    _, history = _fit(
        tiny_splits,
        model="cnn",
        width=4,
        optimizer="sgd",
        nesterov=True,
        grad_clip=1.0,
        label_smoothing=0.1,
        augment="affine",
    )
    assert len(history) == 2


def test_same_seed_same_weights_bitwise(tiny_splits):
    a, ha = _fit(tiny_splits, model="cnn", width=4, augment="shift", seed=3, deterministic=True)
    b, hb = _fit(tiny_splits, model="cnn", width=4, augment="shift", seed=3, deterministic=True)
    c, _ = _fit(tiny_splits, model="cnn", width=4, augment="shift", seed=4, deterministic=True)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert [h.val_loss for h in ha] == [h.val_loss for h in hb]
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def test_early_stopping_stops_and_keeps_the_best(tiny_splits):
    # lr far too high for plain SGD on the logreg: validation loss gets worse, so training stops early
    net, history = _fit(
        tiny_splits,
        model="logreg",
        optimizer="sgd",
        momentum=0.0,
        lr=5.0,
        schedule="none",
        epochs=20,
        early_stopping=2,
        grad_clip=10.0,
    )
    assert len(history) < 20
    best = min(h.val_loss for h in history)
    (splits, norm) = tiny_splits
    from mnistkit.evaluate import loss_and_accuracy

    assert loss_and_accuracy(net, splits.val, norm, 1000)[0] == pytest.approx(best, rel=1e-5)


def test_early_stopping_needs_a_validation_set(tiny_splits):
    (splits, norm) = tiny_splits
    cfg = make_config(model="mlp", early_stopping=2)
    with pytest.raises(ConfigError, match="needs a validation set"):
        fit(create_model("mlp"), splits.train, None, cfg, norm)


def test_nan_loss_stops_with_the_epoch_and_step(tiny_splits):
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at epoch 1, step \d+; lower the learning rate"):
        _fit(tiny_splits, model="mlp", optimizer="sgd", lr=1e12, schedule="none")


def test_train_run_writes_a_reproducible_run_folder(tiny_idx_session, tmp_path):
    cfg = make_config(model="mlp", epochs=2, data=str(tiny_idx_session), val_size=100, batch_size=64)
    run_dir = runs.create_run_dir(tmp_path / "run", cfg.model)
    result = train_run(cfg, run_dir, command="mnistkit train …")
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "metrics.csv", "model.safetensors", "model.json"} <= names
    assert runs.read_config(run_dir) == cfg  # the run can be repeated from its folder
    rows = runs.read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["val_accuracy"] == pytest.approx(
        result.history[-1].val_accuracy
    )
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["model"] == "mlp" and meta["metrics"]["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert set(meta["dataset"]["checksums"]) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }
    assert {"normalization", "classes", "mnistkit_version", "config", "command"} <= set(meta)
    assert meta["init"] is None and "mnist_mix" not in meta["dataset"]  # fresh weights, nothing mixed in
    again = train_run(runs.read_config(run_dir))
    assert again.test_accuracy == result.test_accuracy


def test_the_test_set_is_never_used_for_selection(tiny_idx_session, monkeypatch):
    """Validation and early stopping see only the held-out training images; the test split is scored once."""
    seen = []
    import mnistkit.train as train_module

    original = train_module.loss_and_accuracy

    def spy(model, split, *args, **kwargs):
        seen.append(len(split))
        return original(model, split, *args, **kwargs)

    monkeypatch.setattr(train_module, "loss_and_accuracy", spy)
    train_run(make_config(model="mlp", epochs=3, data=str(tiny_idx_session), val_size=100, early_stopping=5))
    assert seen == [100, 100, 100, 200]


@pytest.mark.slow
def test_mlp_reaches_97_percent_on_real_mnist():
    result = train_run(make_config(model="mlp", epochs=2, batch_size=128, lr=0.003))
    assert result.test_accuracy >= 0.97


@pytest.mark.slow
def test_tutorial_preset_falls_on_the_tutorials_curve():
    result = train_run(make_config("tutorial", epochs=3))
    for ours, theirs in zip([h.val_loss for h in result.history], TUTORIAL_CURVE):
        assert ours == pytest.approx(theirs, abs=0.03)


@pytest.mark.parametrize("batches", [1, 2, 3, 4, 5, 8])
def test_onecycle_copes_with_very_few_steps(tiny_splits, batches):
    (splits, _) = tiny_splits
    _, history = _fit(tiny_splits, epochs=1, batch_size=-(-len(splits.train) // batches))
    assert len(history) == 1


def test_train_run_takes_a_fresh_run_folder_and_nothing_else(tiny_idx, tmp_path):
    cfg = make_config(model="logreg", epochs=1, val_size=100, data=str(tiny_idx))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "precious"}')
    for run_dir, said in ((mine, "holds config.json already"), (tmp_path / "missing", "no such folder")):
        with pytest.raises(ConfigError, match=said):
            train_run(cfg, run_dir)
    assert (mine / "config.json").read_text() == '{"my": "precious"}'
    with pytest.raises(ConfigError, match="takes a TrainConfig"):
        train_run({"epochs": 1})  # type: ignore[arg-type]
    run_dir = runs.create_run_dir(tmp_path / "run", cfg.model)
    assert train_run(cfg, str(run_dir)).run_dir == run_dir  # a str names the folder as well


def test_train_run_gives_back_the_processs_torch_switches(tiny_idx_session):
    # A deterministic run turns deterministic algorithms on for itself; after it, a notebook's own code (and its
    # next run) must not find them still on, nor cuDNN's benchmark mode changed.
    benchmark = torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    cfg = make_config(model="logreg", epochs=1, val_size=100, data=str(tiny_idx_session), deterministic=True)
    train_run(cfg)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark == benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)  # the caller's own choice is kept too
    try:
        train_run(make_config(model="logreg", epochs=1, val_size=100, data=str(tiny_idx_session)))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_train_run_hands_over_its_model_in_eval_mode_and_usual_layout(tiny_idx_session, tmp_path):
    cfg = make_config(model="cnn", width=4, epochs=1, val_size=100, data=str(tiny_idx_session))
    result = train_run(cfg)
    assert not result.model.training
    assert all(p.is_contiguous() for p in result.model.state_dict().values())
    safetensors.torch.save_file(result.model.state_dict(), tmp_path / "model.safetensors")  # refuses channels_last
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    with torch.no_grad():
        result.model(torch.randn(8, 1, 28, 28))  # a forward pass to use it moves no BatchNorm statistic
    assert all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())
