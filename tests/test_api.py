"""The top-level conveniences users of Keras and timm look for: load_data, list_models, create_model."""

import numpy as np
import pytest
import torch

import mnistkit
from mnistkit.errors import ConfigError


def test_load_data_has_keras_shapes_and_dtypes():
    (x_train, y_train), (x_test, y_test) = mnistkit.load_data()
    assert x_train.shape == (60_000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60_000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10_000, 28, 28) and y_test.dtype == np.uint8
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]  # the official test set's first labels


def test_list_models_names_every_registered_model():
    assert mnistkit.list_models() == ["cnn", "logreg", "mlp"]


def test_create_model_builds_fresh_and_pretrained_networks():
    fresh = mnistkit.create_model("cnn", width=8)
    assert fresh(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    pretrained = mnistkit.create_model("cnn", pretrained=True)
    weights = mnistkit.Classifier.load().inference.net.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in pretrained.state_dict().items())
    assert all(p.requires_grad for p in pretrained.parameters())  # ready to fine-tune


def test_create_model_pretrained_must_be_true_or_false():
    for flag in ["no", 1, None]:
        with pytest.raises(ConfigError, match="^pretrained must be True or False, got "):
            mnistkit.create_model("cnn", pretrained=flag)


def test_create_model_pretrained_refuses_another_architecture():
    with pytest.raises(ConfigError, match="pretrained model is a 'cnn'"):
        mnistkit.create_model("mlp", pretrained=True)


def test_flat_models_keep_the_batch_dimension_symbolic():
    # flatten(1) instead of reshape(len(x), -1): a traced or exported graph must not fix the batch size.
    for name in ("logreg", "mlp"):
        model = mnistkit.create_model(name)
        assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
        assert model(torch.zeros(5, 784)).shape == (5, 10)
