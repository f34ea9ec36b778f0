"""The one typed configuration object: defaults, presets, overrides, validation, round trips."""

from __future__ import annotations

import pytest

from mnistkit.config import PRESETS, TrainConfig, make_config
from mnistkit.errors import ConfigError


def test_defaults_then_preset_then_overrides():
    cfg = make_config("tutorial", epochs=3, lr=None)
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == ("mlp", "sgd", 0.001, 64, 3)
    assert cfg.preset == "tutorial" and cfg.normalize is False and cfg.momentum == 0.0


def test_tutorial_preset_is_the_tutorial():
    cfg = make_config("tutorial")
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs, cfg.schedule) == (
        "mlp",
        "sgd",
        0.001,
        64,
        25,
        "none",
    )
    assert cfg.val_size == 10_000 and cfg.weight_decay == 0.0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_valid(preset):
    assert make_config(preset).preset == preset


def test_round_trip_through_a_dict():
    cfg = make_config("cnn", seed=7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lr=0), "--lr must be a positive number"),
        (dict(lr=-1.0), "--lr must be a positive number"),
        (dict(lr=float("nan")), "--lr must be a positive number"),
        (dict(epochs=0), "--epochs must be at least 1"),
        (dict(batch_size=0), "--batch-size must be at least 1"),
        (dict(val_size=-1), "--val-size must be 0 or more"),
        (dict(momentum=1.0), "--momentum must be in"),
        (dict(label_smoothing=1.0), "--label-smoothing must be in"),
        (dict(grad_clip=0.0), "--grad-clip must be positive"),
        (dict(outliers=1.5), "--outliers must be in \\[0, 1\\]"),
        (dict(outliers=float("nan")), "--outliers must be in"),
        (dict(optimizer="lion"), "unknown optimizer 'lion'"),
        (dict(schedule="warm"), "unknown schedule 'warm'"),
        (dict(model="vit"), "unknown model 'vit'"),
        (dict(stem_width=0), "--stem-width must be at least 1"),
        (dict(device="tpu"), "unknown device 'tpu'"),
    ],
)
def test_invalid_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**overrides)


def test_model_options_carry_only_what_was_set():
    assert make_config(model="cnn").model_options() == {}
    assert make_config(model="cnn", width=24, stem_width=16).model_options() == {"width": 24, "stem_width": 16}


def test_unknown_preset_and_keys():
    with pytest.raises(ConfigError, match="unknown preset 'turbo'"):
        make_config("turbo")
    with pytest.raises(ConfigError, match="unknown configuration keys: colour"):
        TrainConfig.from_dict({"colour": "red"})
