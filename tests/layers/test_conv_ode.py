"""Proof of the convolutional dynamics `tfnode.ConvODEFunc` and of
`tfnode.ConvODEBlock`, the ODE-Net's replacement for a residual block.

Parameter counts are computed by hand from the architecture of Chen et al.
(2018): GroupNorm, ReLU, 3x3 conv on `[h, t]`, GroupNorm, ReLU, 3x3 conv on
`[h, t]`, GroupNorm, with min(32, C) groups (the gcd, so that they divide C).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import run_layer_test
from helpers import assert_allclose

import tfnode

# Float32 convolutions of O(1) values summed over 3x3x7 taps.
F32_ROUNDOFF = 1e-5


def conv_func_params(channels, filters, kernel_size=3):
    norm = 2 * channels  # GroupNorm gamma and beta
    conv1 = kernel_size**2 * (channels + 1) * filters + filters  # input [h, t]
    conv2 = kernel_size**2 * (filters + 1) * channels + channels
    return norm + conv1 + 2 * filters + conv2 + norm


def test_conv_func_shapes_groups_and_parameter_count():
    keras.utils.set_random_seed(0)
    func = tfnode.ConvODEFunc(filters=6)
    y = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    dy = func(tf.constant(0.0), y)
    assert dy.shape == y.shape  # C channels out, whatever `filters` is
    assert func.conv1.kernel.shape == (3, 3, 4, 6)  # 3 channels + time
    assert func.conv2.kernel.shape == (3, 3, 7, 3)  # 6 filters + time
    assert (func.norm1.groups, func.norm2.groups, func.norm3.groups) == (1, 2, 1)
    # 6 + (108 * 2 + 6) + 12 + (63 * 3 + 3) + 6
    assert func.count_params() == conv_func_params(3, 6) == 438
    assert len(func.trainable_weights) == 10

    wide = tfnode.ConvODEFunc(filters=64, kernel_size=5)
    wide(tf.constant(0.0), tf.zeros([1, 4, 4, 64]))
    assert (wide.norm1.groups, wide.norm2.groups) == (32, 32)  # the paper's 32 groups
    assert wide.conv1.kernel.shape == (5, 5, 65, 64)
    assert wide.count_params() == conv_func_params(64, 64, kernel_size=5)


def test_conv_func_time_channel():
    keras.utils.set_random_seed(0)
    func = tfnode.ConvODEFunc(filters=4)
    y = np.random.default_rng(1).normal(size=(3, 4, 4, 2)).astype("float32")
    at_0, at_1 = func(tf.constant(0.0), y), func(tf.constant(1.0), y)
    assert np.max(np.abs(at_1 - at_0)) > 1e-3  # t enters as a channel
    t = np.array([0.0, 0.5, 1.0], np.float32)  # per-sample times [B]
    per_sample = func(tf.constant(t), y)
    for i in range(3):
        assert_allclose(
            per_sample[i : i + 1],
            func(tf.constant(t[i]), y[i : i + 1]),
            atol=F32_ROUNDOFF,
        )


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        (dict(filters=0), None, "`filters` and `kernel_size` must be positive"),
        (dict(kernel_size=0), None, "`filters` and `kernel_size` must be positive"),
        (dict(), (2, 4, 3), "ConvODEFunc needs `y` of shape \\[B, H, W, C\\]"),
        (dict(), (2, 4, 4, None), "ConvODEFunc needs `y` of shape \\[B, H, W, C\\]"),
    ],
    ids=["filters", "kernel_size", "rank3", "unknown_channels"],
)
def test_conv_func_errors(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        tfnode.ConvODEFunc(**kwargs).build((), shape)


def test_conv_block_harness(tmp_path):
    # A one-stage fixed-step solve keeps the traced training graph small: the
    # adaptive path is the same NeuralODELayer code, trained in its own tests,
    # and tracing conv dynamics costs seconds per Runge-Kutta stage.
    run_layer_test(
        tfnode.ConvODEBlock,
        dict(filters=4, method="euler", step_size=0.5, name="block"),
        (2, 4, 4, 3),
        expected_output_shape=(2, 4, 4, 3),
        expected_num_trainable_weights=10,
        expected_num_params=conv_func_params(3, 4),
        tmp_path=tmp_path,
    )


def test_conv_block_defaults_and_config():
    block = tfnode.ConvODEBlock(filters=4)
    assert (block.method, block.rtol, block.atol, block.adjoint) == (
        "dopri5",
        1e-3,
        1e-3,
        True,
    )
    y0 = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    y1 = block(y0)
    assert y1.shape == y0.shape and np.max(np.abs(y1 - y0)) > 1e-3

    # The config describes the block by `filters`, not by a nested `func`.
    config = block.get_config()
    assert "func" not in config and (config["filters"], config["kernel_size"]) == (4, 3)
    assert tfnode.ConvODEBlock.from_config(config).get_config() == config

    # It is the NeuralODELayer of a ConvODEFunc with the same weights.
    layer = tfnode.NeuralODELayer(tfnode.ConvODEFunc(filters=4), rtol=1e-3, atol=1e-3)
    layer.build((None, 4, 4, 3))
    layer.set_weights(block.get_weights())
    np.testing.assert_array_equal(layer(y0), y1)

    with pytest.raises(TypeError, match="multiple values for argument 'func'"):
        tfnode.ConvODEBlock(filters=4, func=tfnode.ConvODEFunc())
