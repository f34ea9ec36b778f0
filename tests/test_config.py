"""The one typed configuration object: defaults, presets, overrides, validation, round trips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mnistkit.config import FLAG_OPTIONS, PRESETS, TrainConfig, check_flag, make_config
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
        (dict(lr=0), "lr must be a positive number"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(lr=float("nan")), "lr must be a positive number"),
        (dict(lr=1e308), "lr must be a positive number up to 1e+30"),
        (dict(epochs=0), "epochs must be from 1 to 100,000"),
        (dict(epochs=2**70), "epochs must be from 1 to 100,000"),
        (dict(batch_size=0), "batch_size must be from 1"),
        (dict(batch_size=2**70), "batch_size must be from 1 to 16,777,216"),
        (dict(val_size=-1), "val_size must be 0 or more"),
        (dict(momentum=1.0), "momentum must be in"),
        (dict(label_smoothing=1.0), "label_smoothing must be in"),
        (dict(grad_clip=0.0), "grad_clip must be a positive number"),
        (dict(grad_clip=float("inf")), "grad_clip must be a positive number"),
        (dict(weight_decay=float("inf")), "weight_decay must be from 0 to 1000"),
        (dict(early_stopping=2**70), "early_stopping must be 0 (off) or a patience"),
        (dict(step_size=2**70), "step_size must be from 1 to 100,000"),
        (dict(seed=2**70), "seed must be from -2**63 to 2**64 - 1, got 1180591620717411303424"),
        (dict(seed=-(2**70)), "seed must be from -2**63 to 2**64 - 1"),
        (dict(outliers=1.5), "outliers must be in [0, 1]"),
        (dict(outliers=float("nan")), "outliers must be in"),
        (dict(optimizer="lion"), "unknown optimizer 'lion'"),
        (dict(schedule="warm"), "unknown schedule 'warm'"),
        (dict(model="vit"), "unknown model 'vit'"),
        (dict(width=0), "width must be a whole number from 1 to 1024, got 0"),
        (dict(width=100_000), "width must be a whole number from 1 to 1024, got 100000"),
        (dict(stem_width=0), "stem_width must be a whole number from 1 to 1024"),
        (dict(stem_stride=3), "stem_stride must be a whole number from 1 to 2, got 3"),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(lr="fast"), "lr: Input should be a valid number"),
        (dict(epochs=2.5), "epochs: Input should be a valid integer"),
        (dict(epochs=True), "epochs: Input should be a valid integer"),
        (dict(normalize=1), "normalize must be True or False, got int 1"),
        (dict(data=["a"]), "data: Input should be a valid string"),
        (dict(mix_mnist=1.0), "mix_mnist must be in [0, 1) (the share of each epoch's images that are MNIST)"),
        (dict(mix_mnist=-0.1), "mix_mnist must be in [0, 1)"),
        (dict(mix_mnist=float("nan")), "mix_mnist must be in [0, 1)"),
        (dict(init=""), "init must be 'pretrained' or a run folder or checkpoint"),
        (dict(init_sha256="ab" * 32), "init_sha256 must be the 64 hex digits of the init's weights' SHA-256, with an"),
        (dict(init="no/such/run"), "init: no/such/run: no checkpoint here"),
        (dict(init="pretrained", model="mlp"), "init: pretrained holds model cnn (width 40, stem width 16), the"),
        (dict(init="pretrained", width=16), "the options ask for model cnn (width 16, stem width 16)"),
        (dict(init="pretrained", init_sha256="0" * 64), "init: pretrained holds other weights than the run started"),
    ],
)
def test_invalid_values_are_one_line_errors(overrides, message):
    """The library names the option (``lr``), not the command line's flag (``--lr``)."""
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        make_config(**overrides)
    assert "\n" not in str(error.value) and not str(error.value).startswith("-")


@pytest.mark.parametrize(
    "preset, overrides, message",
    [
        (
            None,
            dict(optimizer="adam", momentum=0.5),
            "momentum applies only with optimizer sgd, and this run's optimizer",
        ),
        (None, dict(nesterov=True), "nesterov applies only with optimizer sgd, and this run's optimizer is adamw"),
        (None, dict(schedule="onecycle", gamma=0.5), "gamma applies only with schedule step"),
        ("best", dict(step_size=3), "step_size applies only with schedule step, and this run's schedule is onecycle"),
        (None, dict(optimizer="sgd", momentum=0.0, nesterov=True), "nesterov needs momentum above 0"),
        ("tutorial", dict(nesterov=True), "nesterov needs momentum above 0"),
    ],
)
def test_an_option_the_run_would_ignore_is_refused(preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(preset, **overrides)


def test_a_flag_given_off_as_a_numpy_bool_is_no_contradiction():
    assert make_config(optimizer="adam", nesterov=np.False_).optimizer == "adam"


def test_options_a_preset_sets_for_another_choice_are_not_the_users():
    # The tutorial's momentum 0 comes with its SGD; another optimizer given beside it is no contradiction.
    assert make_config("tutorial", optimizer="adamw").optimizer == "adamw"
    assert make_config(optimizer="sgd", nesterov=False, momentum=0.0).momentum == 0.0


def test_an_init_fixes_the_model_options_it_was_not_given():
    cfg = make_config(init="pretrained", epochs=1)
    assert (cfg.model, cfg.width, cfg.stem_width, cfg.init) == ("cnn", 40, 16, "pretrained")
    assert make_config(init="pretrained", model="cnn", width=40).stem_width == 16  # the rest still follows
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert make_config("finetune").to_dict() == {**cfg.to_dict(), **PRESETS["finetune"], "preset": "finetune"}


def test_a_config_built_directly_is_type_checked_by_validate():
    with pytest.raises(ConfigError, match="lr: Input should be a valid number"):
        TrainConfig(lr="0.1").validate()


def test_an_int_is_taken_as_a_float_option():
    assert make_config(lr=1).lr == 1.0 and isinstance(make_config(lr=1).lr, float)


def test_model_options_carry_only_what_was_set():
    assert make_config(model="cnn").model_options() == {}
    assert make_config(model="cnn", width=24, stem_width=16).model_options() == {"width": 24, "stem_width": 16}
    assert make_config(model="cnn", stem_stride=2).model_options() == {"stem_stride": 2}


def test_a_preset_with_another_model_names_the_preset_for_its_model_options():
    with pytest.raises(ConfigError, match=r"preset 'best' is made for model 'cnn' \(it sets width\), not 'mlp'"):
        make_config("best", model="mlp")
    assert make_config("fast", model="cnn").model == "cnn"  # a preset with no model options takes any model
    with pytest.raises(ConfigError, match="invalid options for model 'mlp': it takes no option width"):
        make_config("fast", model="mlp", width=8)  # the caller's own option: the model's own message


def test_unknown_preset_and_keys():
    with pytest.raises(ConfigError, match="unknown preset 'turbo'"):
        make_config("turbo")
    with pytest.raises(ConfigError, match="unknown configuration keys: colour"):
        TrainConfig.from_dict({"colour": "red"})


@pytest.mark.parametrize(
    "values, message",
    [
        ([("epochs", 1)], "TrainConfig.from_dict takes a dict of options by name, as to_dict returns; got list"),
        ("epochs", "TrainConfig.from_dict takes a dict of options by name, as to_dict returns; got str 'epochs'"),
        (None, "TrainConfig.from_dict takes a dict of options by name, as to_dict returns; got None"),
        ({1: 2}, "TrainConfig.from_dict takes options by name (str keys); got the key int 1"),
        ({"epochs": 1, None: 2}, "TrainConfig.from_dict takes options by name (str keys); got the key None"),
    ],
)
def test_from_dict_takes_only_a_dict_of_options_by_name(values, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        TrainConfig.from_dict(values)


def test_data_with_another_named_dataset_is_refused():
    with pytest.raises(ConfigError, match=r"dataset 'kmnist' and data 'tiny.npz' are two sources") as caught:
        make_config(dataset="kmnist", data="tiny.npz")
    assert caught.value.options == ("dataset", "data")
    # What the CLI passes for --data alone (its --dataset is None) and for --dataset alone.
    assert make_config(dataset=None, data="tiny.npz").dataset == "mnist"
    assert make_config(dataset="kmnist", data=None).data is None


def test_paths_and_numpy_integers_are_taken_as_str_and_int(tmp_path):
    cfg = make_config(data=tmp_path / "tiny.npz", epochs=np.int64(2), width=np.int32(8), seed=np.uint64(2**64 - 1))
    assert cfg.data == str(tmp_path / "tiny.npz") and type(cfg.data) is str
    assert (cfg.epochs, cfg.width, cfg.seed) == (2, 8, 2**64 - 1)
    assert {type(cfg.epochs), type(cfg.width), type(cfg.seed)} == {int}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # as config.json records it


@pytest.mark.parametrize("option", FLAG_OPTIONS)
@pytest.mark.parametrize(
    "value, given", [("no", "str 'no'"), ("False", "str 'False'"), (1, "int 1"), (0.0, "float 0.0"), ([], "list")]
)
def test_a_flag_is_true_or_false_not_truthy(option, value, given):
    with pytest.raises(ConfigError, match=re.escape(f"{option} must be True or False, got {given}")) as caught:
        make_config(**{option: value})
    assert caught.value.options == (option,)


def test_a_flag_may_be_a_numpy_bool():
    cfg = make_config(tta=np.True_, normalize=np.False_)
    assert (cfg.tta, cfg.normalize) == (True, False) and type(cfg.tta) is bool and type(cfg.normalize) is bool


def test_check_flag_is_the_bool_given():
    assert check_flag("overwrite", True) is True and check_flag("overwrite", np.False_) is False
    with pytest.raises(ConfigError, match=re.escape("overwrite must be True or False, got None")):
        check_flag("overwrite", None)


def test_from_dict_takes_paths_numpy_integers_and_bools_as_make_config_does(tmp_path):
    values = dict(data=tmp_path / "tiny.npz", init=tmp_path / "run", epochs=np.int64(2), seed=np.uint64(7))
    cfg = TrainConfig.from_dict({**values, "tta": np.True_})
    assert (cfg.data, cfg.init) == (str(tmp_path / "tiny.npz"), str(tmp_path / "run"))
    assert (cfg.epochs, cfg.seed, cfg.tta) == (2, 7, True)
    assert [type(getattr(cfg, key)) for key in ("data", "init", "epochs", "seed", "tta")] == [str, str, int, int, bool]
    with pytest.raises(ConfigError, match=re.escape("tta must be True or False, got str 'no'")):
        TrainConfig.from_dict({"tta": "no"})
    with pytest.raises(ConfigError, match=re.escape("model: Input should be a valid string")):
        TrainConfig.from_dict({"model": Path("mlp")})  # only the path options take a path


def test_an_init_may_be_a_path(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'none'}: no checkpoint here")):
        make_config(init=tmp_path / "none")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(epochs=True), "epochs: Input should be a valid integer (got True)"),
        (dict(model=Path("mlp")), f"model: Input should be a valid string (got {Path('mlp')!r})"),
    ],
)
def test_a_bool_is_no_integer_and_only_paths_take_a_path(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(**overrides)


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        (["cnn"], {}, "unknown preset a list of 1 items;"),
        (None, {"init": 3}, "init: Input should be a valid string"),
        (None, {"data": ""}, "data is empty: give a path, or leave data out for the dataset"),
    ],
    ids=["preset as a list", "init a number", "data empty"],
)
def test_make_config_refuses_options_of_the_wrong_kind_in_one_line(preset, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(preset, **overrides)
