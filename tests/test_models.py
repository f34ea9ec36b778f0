"""The model registry: names, shapes, parameter counts, and the tutorial's exact architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnistkit.errors import ConfigError
from mnistkit.models import MLP, MODELS, conv_block, count_parameters, create_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 5])
def test_every_model_takes_images_and_returns_logits(name, batch):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 1, 28, 28))
    assert out.shape == (batch, 10) and out.dtype == torch.float32


def test_mlp_is_the_tutorials_network():
    model = create_model("mlp")
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    assert shapes == [
        ("hidden1.weight", (128, 784)),
        ("hidden1.bias", (128,)),
        ("hidden2.weight", (256, 128)),
        ("hidden2.bias", (256,)),
        ("out.weight", (10, 256)),
        ("out.bias", (10,)),
    ]
    assert count_parameters(model) == 136_074


def test_mlp_accepts_the_tutorials_flat_vectors_too():
    model = MLP().eval()
    x = torch.rand(3, 784)
    assert torch.equal(model(x), model(x.reshape(3, 1, 28, 28)))


def test_logreg_is_xb_at_weights_plus_bias():
    model = create_model("logreg")
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(model(x), x.reshape(4, 784) @ model.weights + model.bias)
    assert count_parameters(model) == 7_850


def test_cnn_width_scales_it_and_other_class_counts_work():
    small, wide = create_model("cnn", width=8), create_model("cnn", width=32)
    assert count_parameters(small) < count_parameters(wide)
    assert create_model("cnn", num_classes=3, width=4)(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_cnn_stem_width_sets_only_the_first_block():
    model = create_model("cnn", width=24, stem_width=16)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 48), (48, 96)]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    default = create_model("cnn", width=24)
    assert [m.out_channels for m in default.modules() if isinstance(m, torch.nn.Conv2d)] == [24, 48, 96]


def test_cnn_stem_stride_two_strides_the_first_convolution_instead_of_pooling():
    pooled, strided = create_model("cnn", width=8), create_model("cnn", width=8, stem_stride=2)
    x = torch.rand(2, 1, 28, 28)
    for model in (pooled, strided):
        assert model.features[0](x).shape == (2, 8, 14, 14)  # both stems halve the resolution
    convs = [m for m in strided.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((5, 5), (2, 2)), ((3, 3), (1, 1)), ((3, 3), (1, 1))]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in strided.modules()) == 1  # only the second block's
    assert count_parameters(strided) == count_parameters(pooled) + (25 - 9) * 8  # the larger first kernel
    assert strided(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="stem_stride must be a whole number from 1 to 2, got 3"):
        create_model("cnn", stem_stride=3)


def test_cnn_block2_stride_two_strides_the_second_convolution_instead_of_pooling():
    pooled, strided = create_model("cnn", width=8), create_model("cnn", width=8, block2_stride=2)
    x = torch.rand(2, 1, 28, 28)
    for model in (pooled, strided):
        assert model.features[:2](x).shape == (2, 16, 7, 7)  # both second blocks halve the resolution
    convs = [m for m in strided.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (1, 1)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in strided.modules()) == 1  # only the stem's
    assert count_parameters(strided) == count_parameters(pooled)
    with pytest.raises(ConfigError, match="block2_stride must be a whole number from 1 to 2, got 0"):
        create_model("cnn", block2_stride=0)


def test_cnn_crop_ignores_the_border_and_sees_the_middle_unchanged():
    model = create_model("cnn", width=8, crop=2).eval()
    x = torch.rand(3, 1, 28, 28)
    scribbled = x.clone()
    scribbled[..., :2, :] = scribbled[..., -2:, :] = scribbled[..., :, :2] = scribbled[..., :, -2:] = 5.0
    uncropped = create_model("cnn", width=8).eval()
    uncropped.load_state_dict(model.state_dict())  # the crop has no weights of its own
    with torch.no_grad():
        assert torch.equal(model(x), model(scribbled))
        assert torch.equal(model(x), uncropped(x[..., 2:26, 2:26]))
        assert model(x).shape == (3, 10)
    with pytest.raises(ConfigError, match="crop must be a whole number from 0 to 8, got 9"):
        create_model("cnn", crop=9)
    with pytest.raises(ConfigError, match=r"width must be a whole number from 1 to 1024, got 1000000000+\.\.\.$"):
        create_model("cnn", width=10**400)  # as a damaged model.json may say: the message stays one short line
    as_numpy = create_model("cnn", width=np.int64(8), crop=np.uint8(2))  # as make_config takes them
    assert sum(p.numel() for p in as_numpy.parameters()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match=r"width must be a whole number from 1 to 1024, got np.float64\(8.0\)"):
        create_model("cnn", width=np.float64(8))


def test_conv_block_pools_only_when_pool_is_true_or_false():
    assert torch.nn.MaxPool2d in {type(layer) for layer in conv_block(1, 2, pool=np.True_)}
    assert torch.nn.MaxPool2d not in {type(layer) for layer in conv_block(1, 2, pool=False)}
    with pytest.raises(ConfigError, match=r"^pool must be True or False, got str 'no'$"):
        conv_block(1, 2, pool="no")


def test_channels_last_gives_the_same_answer():
    model = create_model("cnn", width=8).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, got, atol=1e-5)


def test_unknown_model_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model 'resnet'; choose one of: logreg, mlp, cnn"):
        create_model("resnet")
    for name in (["cnn"], None, 3):
        with pytest.raises(ConfigError, match="a model is named by a string, one of logreg, mlp, cnn; got "):
            create_model(name)
    with pytest.raises(ConfigError, match="invalid options for model 'mlp'"):
        create_model("mlp", width=3)
