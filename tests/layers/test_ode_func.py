"""Proof of the dynamics layers: `tfnode.ODEFunc` (the base) and `tfnode.MLPODEFunc`.

`MLPODEFunc` is checked against the same MLP written in numpy, with and
without time as an input, including per-sample times; parameter counts are
computed by hand. A user's `ODEFunc` subclass goes through the layer harness
and its solve is compared with the closed form of a linear ODE.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from harness import run_layer_test
from helpers import assert_allclose

import tfnode

B, D = 4, 3
HIDDEN = (5, 4)
# Float32 evaluation of a 3-layer MLP on O(1) inputs against float64 numpy:
# a few float32 ulps of values of size ~1.
F32_ROUNDOFF = 1e-5


def numpy_mlp(func, t, y):
    """What `MLPODEFunc` computes, in float64 numpy from its weights."""
    h = np.asarray(y, np.float64)
    if func.time_dependent:
        t = np.broadcast_to(np.reshape(t, (-1, 1)) if np.ndim(t) else t, (len(h), 1))
        h = np.concatenate([h, t], axis=-1)
    for layer in func.hidden:
        h = np.tanh(h @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias))
    return h @ np.asarray(func.out.kernel, np.float64) + np.asarray(func.out.bias)


@pytest.mark.parametrize("time_dependent", [True, False], ids=["time", "autonomous"])
def test_mlp_func_values_shapes_and_parameter_count(time_dependent):
    keras.utils.set_random_seed(0)
    func = tfnode.MLPODEFunc(
        hidden_units=HIDDEN,
        time_dependent=time_dependent,
        output_initializer="glorot_uniform",
    )
    y = np.random.default_rng(0).normal(size=(B, D)).astype("float32")
    dy = func(tf.constant(0.7), y)
    assert dy.shape == (B, D) and dy.dtype == "float32"

    inputs = D + int(time_dependent)  # t is one more input feature
    assert func.hidden[0].kernel.shape == (inputs, HIDDEN[0])
    # Dense layers [inputs -> 5 -> 4 -> D], kernel and bias each.
    expected = (inputs * 5 + 5) + (5 * 4 + 4) + (4 * D + D)
    assert func.count_params() == expected == (64 if time_dependent else 59)
    assert len(func.trainable_weights) == 6

    assert_allclose(dy, numpy_mlp(func, 0.7, y), atol=F32_ROUNDOFF)
    at_0, at_1 = func(tf.constant(0.0), y), func(tf.constant(1.0), y)
    if time_dependent:
        assert np.max(np.abs(at_1 - at_0)) > 1e-3
    else:
        np.testing.assert_array_equal(at_0, at_1)

    # Per-sample times [B]: row i is the dynamics at its own time t[i].
    t = np.linspace(0.0, 1.0, B).astype("float32")
    per_sample = func(tf.constant(t), y)
    assert_allclose(per_sample, numpy_mlp(func, t, y), atol=F32_ROUNDOFF)
    for i in range(B):
        assert_allclose(
            per_sample[i : i + 1],
            func(tf.constant(t[i]), y[i : i + 1]),
            atol=F32_ROUNDOFF,
        )


def test_mlp_func_acts_on_the_last_axis():
    func = tfnode.MLPODEFunc(hidden_units=(4,))
    y = np.ones((B, 2, 5), np.float32)
    assert func(tf.constant(0.0), y).shape == (B, 2, 5)
    t = tf.constant(np.arange(B, dtype=np.float32))
    assert func(t, y).shape == (B, 2, 5)


def test_mlp_func_config_round_trip():
    func = tfnode.MLPODEFunc(
        hidden_units=(6, 3),
        activation="softplus",
        time_dependent=False,
        kernel_initializer="he_normal",
        name="dyn",
        dtype="float64",
    )
    config = json.loads(json.dumps(func.get_config()))
    clone = tfnode.MLPODEFunc.from_config(config)
    assert json.loads(json.dumps(clone.get_config())) == config
    assert clone.hidden_units == (6, 3) and clone.time_dependent is False
    assert clone.compute_dtype == "float64" and clone.name == "dyn"
    y = tf.ones([2, 3], tf.float64)
    func(tf.constant(0.0, tf.float64), y)
    clone(tf.constant(0.0, tf.float64), y)
    clone.set_weights(func.get_weights())
    np.testing.assert_array_equal(
        clone(tf.constant(0.5, tf.float64), y), func(tf.constant(0.5, tf.float64), y)
    )


@pytest.mark.parametrize(
    "hidden_units", [64, 2.5, "64", (0,), (8, -1), (2.5,), (True,)]
)
def test_mlp_func_rejects_bad_hidden_units(hidden_units):
    with pytest.raises(
        ValueError, match="`hidden_units` must be a sequence of positive integers"
    ):
        tfnode.MLPODEFunc(hidden_units=hidden_units)


def test_mlp_func_needs_a_known_last_axis():
    func = tfnode.MLPODEFunc()
    with pytest.raises(ValueError, match="`y` needs a known last axis"):
        func.build((), (None, None))


def test_ode_func_base():
    with pytest.raises(
        NotImplementedError, match="must implement `call\\(self, t, y\\)`"
    ):
        tfnode.ODEFunc()(tf.constant(0.0), tf.ones([2, 2]))

    y = tf.reshape(tf.range(12, dtype=tf.float32), [B, D])
    out = tfnode.ODEFunc.concat_time(tf.constant(0.5), y)  # [B, D + 1]
    np.testing.assert_array_equal(out[:, :D], y)
    np.testing.assert_array_equal(out[:, D], np.full(B, 0.5))

    t = tf.constant([0.0, 1.0, 2.0, 3.0])  # per sample, images [B, H, W, C]
    out = tfnode.ODEFunc.concat_time(t, tf.zeros([B, 2, 3, 5]))
    assert out.shape == (B, 2, 3, 6)
    np.testing.assert_array_equal(
        out[..., 5], np.broadcast_to(np.reshape(t, [B, 1, 1]), (B, 2, 3))
    )

    out = tfnode.ODEFunc.concat_time(
        tf.constant(2.0, tf.float64), tf.zeros([3], tf.float64)
    )
    # unbatched, cast to y's dtype
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 2.0])


@keras.saving.register_keras_serializable(package="test_layers")
class Linear(tfnode.ODEFunc):
    """`dy/dt = y A` with a trainable `A`, as a user would write it."""

    def build(self, t_shape, y_shape):
        self.A = self.add_weight(
            shape=(y_shape[-1], y_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.5, seed=1),
        )

    def call(self, t, y):
        return y @ self.A


# A solve at SOLVE_TOL against the exact flow `y0 expm(A)` in float64: the
# global error of dopri5 at rtol = atol = 1e-6 over unit time with ||A|| ~ 1
# is a few 1e-6, plus float32 round-off (measured: 3e-7).
SOLVE_TOL = 1e-6
SOLVER_ERROR = 1e-5


def test_user_ode_func_in_the_layer(tmp_path):
    model, _ = run_layer_test(
        tfnode.NeuralODELayer,
        dict(func=Linear(), rtol=SOLVE_TOL, atol=SOLVE_TOL),
        (B, D),
        expected_output_shape=(B, D),
        expected_num_trainable_weights=1,
        expected_num_params=D * D,
        tmp_path=tmp_path,
        # the NeuralODELayer tests train; this is about Linear
        run_training_check=False,
    )
    y0 = np.random.default_rng(2).normal(size=(B, D)).astype("float32")
    A = np.asarray(model.layers[-1].func.A, np.float64)
    assert_allclose(model(y0), y0 @ scipy.linalg.expm(A), atol=SOLVER_ERROR)
