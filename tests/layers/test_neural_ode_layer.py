"""Proof that `tfnode.NeuralODELayer` behaves as a Keras layer and as an ODE solve.

Shapes and values against `tfnode.odeint` on the same dynamics; training in
`fit` (adjoint and direct backprop, graph and XLA) and in a custom loop;
adjoint against direct gradients in float64; `.keras` and SavedModel round
trips (the latter loaded in a process that cannot import tfnode); mixed
precision; solver counts in `fit` logs; errors that say what to do.

Everything is tiny (batch 3-4, state 2, one hidden layer of 8 units): tracing
a training step, not running it, is what costs time here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import run_layer_test
from helpers import assert_allclose

import tfnode

B, D, HIDDEN = 4, 2, 8

# Float32 round-off: the same solve run through different but equivalent code
# paths (the layer vs `tfnode.odeint`, eager vs separately traced graphs)
# agrees to a few float32 ulps of values of size ~1 (measured: 0 to 1e-7),
# unless round-off flips an accept/reject decision of the step-size
# controller; then the outputs differ by up to the solver tolerance, which
# these tests set to SOLVE_TOL.
SOLVE_TOL = 1e-6
F32_ROUNDOFF = 1e-5
# Two solves of one problem that take different steps (a sample alone vs in a
# batch, whose error norm is shared; forward then back in time) differ by
# their global errors: at rtol = atol = SOLVE_TOL over spans <= 3 with O(1)
# Lipschitz dynamics, a few SOLVE_TOL each (measured: 4e-7).
SOLVER_ERROR = 1e-5


def mlp(**kwargs):
    """Small dynamics with O(1) output weights, so that the flow is far from
    the identity (the default initializer starts near it)."""
    kwargs.setdefault("hidden_units", (HIDDEN,))
    kwargs.setdefault("output_initializer", "glorot_uniform")
    return tfnode.MLPODEFunc(**kwargs)


def data(shape=(B, D), seed=0, dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def odeint_batch_major(func, y0, t, **options):
    """`tfnode.odeint` on the same problem, returned batch-major `[B, T, ...]`."""
    t = tf.convert_to_tensor(t, tf.float32)
    times = tf.transpose(t) if t.shape.rank == 2 else t  # [B, T] -> [T, B]
    ys = tfnode.odeint(func, tf.constant(y0), times, **options)  # [T, B, ...]
    return np.swapaxes(np.asarray(ys), 0, 1)


# ----------------------------------------------------------------------------
# The layer test harness: build, shapes, weights, config, .keras, one fit step.


@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "direct"])
def test_harness_and_solver_counts_in_fit_logs(adjoint, tmp_path):
    func = mlp()
    _, history = run_layer_test(
        tfnode.NeuralODELayer,
        dict(
            func=func,
            t=(0.0, 0.5, 1.0),
            adjoint=adjoint,
            return_sequences=adjoint,
            name="ode",
        ),
        (B, D),
        expected_output_shape=(B, 3, D) if adjoint else (B, D),
        # hidden kernel [D + 1, 8] and bias [8], output kernel [8, D] and bias [D]
        expected_num_trainable_weights=4,
        expected_num_params=(D + 1) * HIDDEN + HIDDEN + HIDDEN * D + D,
        tmp_path=tmp_path,
    )
    logs = history.history
    assert logs["ode_nfe"][0] > 0, logs
    if adjoint:
        assert logs["ode_backward_nfe"][0] > 0, logs
    else:
        assert "ode_backward_nfe" not in logs, logs


# ----------------------------------------------------------------------------
# Shapes and values against tfnode.odeint.


def test_output_is_the_state_at_the_last_time():
    func = mlp()
    layer = tfnode.NeuralODELayer(
        func, t=(0.0, 0.5, 1.0), rtol=SOLVE_TOL, atol=SOLVE_TOL
    )
    y0 = data()
    y1 = layer(y0)
    assert y1.shape == y0.shape
    expected = odeint_batch_major(
        func, y0, [0.0, 0.5, 1.0], rtol=SOLVE_TOL, atol=SOLVE_TOL
    )
    assert_allclose(y1, expected[:, -1], atol=F32_ROUNDOFF)
    assert np.max(np.abs(np.asarray(y1) - y0)) > 0.1  # the flow is not the identity


@pytest.mark.parametrize(
    "state_shape, adjoint", [((B, D), True), ((B, 3, D), False)], ids=["rank2", "rank3"]
)
def test_return_sequences_matches_odeint(state_shape, adjoint):
    func = mlp()
    options = dict(rtol=SOLVE_TOL, atol=SOLVE_TOL)
    layer = tfnode.NeuralODELayer(
        func, return_sequences=True, adjoint=adjoint, **options
    )
    y0 = data(state_shape)

    # One grid [T] for the batch.
    t = [0.0, 0.3, 0.7, 1.2]
    ys = layer(y0, t=t)
    assert ys.shape == (B, len(t), *state_shape[1:])
    assert_allclose(ys, odeint_batch_major(func, y0, t, **options), atol=F32_ROUNDOFF)
    assert_allclose(ys[:, 0], y0, atol=0.0)

    # A grid per sample [B, T]: shifted and stretched copies of t.
    t_per_sample = np.stack([np.array(t) * (1 + 0.5 * i) + i for i in range(B)])
    ys = layer(y0, t=t_per_sample)
    assert ys.shape == (B, len(t), *state_shape[1:])
    expected = odeint_batch_major(func, y0, t_per_sample, **options)
    assert_allclose(ys, expected, atol=F32_ROUNDOFF)
    # Sample i really integrated over its own grid: compare with a solo solve.
    solo = odeint_batch_major(func, y0[-1:], t_per_sample[-1], **options)
    assert_allclose(ys[-1:], solo, atol=SOLVER_ERROR)

    # Without return_sequences: the state at each sample's last time.
    last = tfnode.NeuralODELayer(func, adjoint=adjoint, **options)(y0, t=t_per_sample)
    assert_allclose(last, expected[:, -1], atol=F32_ROUNDOFF)


def test_reversed_time_and_functional_time_input():
    func = mlp()
    y0 = data()
    layer = tfnode.NeuralODELayer(func, t=(1.0, 0.0), rtol=SOLVE_TOL, atol=SOLVE_TOL)
    there = tfnode.NeuralODELayer(func, rtol=SOLVE_TOL, atol=SOLVE_TOL)(y0)
    assert_allclose(layer(there), y0, atol=SOLVER_ERROR)  # back to y0

    # Times as a second model input, [B, T], in a functional model.
    inputs, times = keras.Input((D,)), keras.Input((3,))
    seq = tfnode.NeuralODELayer(
        func, return_sequences=True, rtol=SOLVE_TOL, atol=SOLVE_TOL
    )
    model = keras.Model([inputs, times], seq(inputs, t=times))
    assert model.output_shape == (None, 3, D)
    t = np.tile([0.0, 0.5, 1.0], (B, 1)).astype("float32")
    assert_allclose(model([y0, t]), seq(y0, t=[0.0, 0.5, 1.0]), atol=F32_ROUNDOFF)


# ----------------------------------------------------------------------------
# Training: XLA fit, custom loop, and adjoint vs direct gradients.


def test_fit_with_jit_compile():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((D,))
    ode = tfnode.NeuralODELayer(mlp(), adjoint=True, max_num_steps=64, name="ode")
    model = keras.Model(inputs, ode(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
    before = [np.array(w) for w in model.trainable_weights]
    logs = model.fit(data(), data(seed=1), batch_size=B, epochs=2, verbose=0).history
    assert np.all(np.isfinite(logs["loss"])) and logs["loss"][1] < logs["loss"][0], logs
    assert logs["ode_nfe"][-1] > 0 and logs["ode_backward_nfe"][-1] > 0, logs
    for w, b in zip(model.trainable_weights, before):
        assert np.all(np.isfinite(w)) and not np.array_equal(np.asarray(w), b), w.path


# XLA backprop in the default suite: tests/test_backprop.py, test_per_sample.py.
@pytest.mark.slow
def test_backprop_under_xla_matches_graph_mode():
    """`adjoint=False` with `jit_compile=True` takes the checkpointed gradient
    (here `checkpoints=2`, in the config): one SGD step from the same weights
    as in graph mode, where TensorFlow differentiates the solver's loop."""
    x, y = data(), data(seed=1)
    weights = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((D,))
        ode = tfnode.NeuralODELayer(
            mlp(), adjoint=False, checkpoints=2, rtol=SOLVE_TOL, atol=SOLVE_TOL
        )
        assert ode.get_config()["checkpoints"] == 2
        assert tfnode.NeuralODELayer.from_config(ode.get_config()).checkpoints == 2
        model = keras.Model(inputs, ode(inputs))
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit)
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
        weights[jit] = [np.asarray(w) for w in model.trainable_weights]
    # Both solves take the same steps unless float32 round-off flips a decision;
    # then they differ by the solve's error, times the learning rate.
    for a, b in zip(weights[True], weights[False]):
        assert_allclose(a, b, atol=0.1 * SOLVER_ERROR)


def test_custom_training_loop():
    keras.utils.set_random_seed(0)
    ode = tfnode.NeuralODELayer(mlp(), name="ode")
    optimizer = keras.optimizers.SGD(0.1)
    x, y = tf.constant(data()), tf.constant(data(seed=1))

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(ode(x, training=True) - y))
        grads = tape.gradient(loss, ode.trainable_variables)
        optimizer.apply_gradients(zip(grads, ode.trainable_variables))
        return loss

    losses = [float(train_step(x, y)) for _ in range(3)]
    assert losses[2] < losses[1] < losses[0], losses
    assert int(ode.nfe.result()) > 0 and int(ode.backward_nfe.result()) > 0


# Adjoint vs direct gradients, both solves at GRAD_TOL in float64: they are two
# discretisations of the same exact gradient, each within a small multiple of
# the tolerance of it (times the state's sensitivity over the horizon, ~e here).
# Measured: 1.6e-10 on weight and y0 gradients of size ~1-6, so 1e-8 has 60x
# headroom while a wrong VJP term (>= 1e-3) fails by five orders of magnitude.
# The gradients for the output times are looser: the direct one differentiates
# the dense-output interpolant in t, whose derivative is one order less
# accurate than its values (measured 1.4e-8; bound 1e-6).
GRAD_TOL = 1e-10
GRAD_ATOL = 1e-8
TIME_GRAD_ATOL = 1e-6


def test_adjoint_gradients_match_direct_backprop_float64():
    keras.utils.set_random_seed(0)
    func = mlp(dtype="float64")
    y0 = tf.constant(data(dtype="float64"))
    t = tf.constant([0.0, 0.5, 1.0], tf.float64)
    # one weight per time
    weights = tf.constant([1.0, 2.0, 3.0], tf.float64)[None, :, None]
    grads = {}
    for adjoint in (True, False):
        layer = tfnode.NeuralODELayer(
            func,
            return_sequences=True,
            adjoint=adjoint,
            rtol=GRAD_TOL,
            atol=GRAD_TOL,
            dtype="float64",
        )

        @tf.function
        def gradients(y0, t):
            with tf.GradientTape() as tape:
                tape.watch([y0, t])
                loss = tf.reduce_sum(weights * layer(y0, t=t, training=True) ** 2)
            return tape.gradient(loss, [y0, t, *func.trainable_variables])

        grads[adjoint] = gradients(y0, t)
    names = ["y0", "t"] + [w.path for w in func.trainable_variables]
    for name, adj, direct in zip(names, grads[True], grads[False]):
        assert np.max(np.abs(direct)) > 1e-2, name  # nothing vacuous
        atol = TIME_GRAD_ATOL if name == "t" else GRAD_ATOL
        assert_allclose(adj, direct, atol=atol, err_msg=name)


# A fixed-step backward pass: rk4 with h = 0.01 has a global error C h^4 = C 1e-8, C set
# by the problem's higher derivatives; measured 7e-11 here, so 1e-8 allows C <= 1.
RK4_BACKWARD_ATOL = 1e-8


def test_fixed_step_backward_pass_and_its_config():
    keras.utils.set_random_seed(0)
    func = mlp(dtype="float64")
    y0 = tf.constant(data(dtype="float64"))
    layers = {
        adjoint: tfnode.NeuralODELayer(
            func,
            adjoint=adjoint,
            rtol=GRAD_TOL,
            atol=GRAD_TOL,
            dtype="float64",
            adjoint_method="rk4",
            adjoint_step_size=0.01,
        )
        for adjoint in (True, False)
    }
    grads = {}
    for adjoint, layer in layers.items():
        with tf.GradientTape() as tape:
            tape.watch(y0)
            loss = tf.reduce_sum(layer(y0, training=True) ** 2)
        grads[adjoint] = tape.gradient(loss, [y0, *func.trainable_variables])
    # rk4 ran backwards: 100 steps of 4 evaluations, plus f at t1 and t0 for dL/dt.
    assert float(layers[True].backward_nfe.result()) == 100 * 4 + 2
    for adj, direct in zip(grads[True], grads[False]):
        assert np.max(np.abs(direct)) > 1e-2  # nothing vacuous
        assert_allclose(adj, direct, atol=RK4_BACKWARD_ATOL)
    config = layers[True].get_config()
    assert (config["adjoint_method"], config["adjoint_step_size"]) == ("rk4", 0.01)
    assert tfnode.NeuralODELayer.from_config(config).adjoint_step_size == 0.01


# ----------------------------------------------------------------------------
# SavedModel export.

_LOAD_WITHOUT_TFNODE = textwrap.dedent(
    """
    import json, sys
    sys.modules["tfnode"] = None  # `import tfnode` now raises ImportError
    import numpy as np
    import tensorflow as tf
    export_dir, x = sys.argv[1], np.asarray(json.loads(sys.argv[2]), np.float32)
    loaded = tf.saved_model.load(export_dir)
    print(json.dumps(loaded.serve(tf.constant(x)).numpy().tolist()))
    """
)


def test_export_serve_matches_predict_and_loads_without_tfnode(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(3)(inputs)
    ode = tfnode.NeuralODELayer(
        mlp(), t=(0.0, 0.5, 1.0), return_sequences=True, rtol=SOLVE_TOL, atol=SOLVE_TOL
    )
    model = keras.Model(inputs, keras.layers.Dense(1)(ode(hidden)))
    x = data()
    expected = model.predict(x, verbose=0)
    model.export(tmp_path / "export", verbose=False)

    # A process that cannot import tfnode loads and serves it (started first,
    # so that its start-up overlaps the in-process check).
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _LOAD_WITHOUT_TFNODE,
            str(tmp_path / "export"),
            json.dumps(x.tolist()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        loaded = tf.saved_model.load(str(tmp_path / "export"))
        assert_allclose(loaded.serve(tf.constant(x)), expected, atol=F32_ROUNDOFF)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    served = np.asarray(json.loads(stdout.strip().splitlines()[-1]), np.float32)
    assert_allclose(served, expected, atol=F32_ROUNDOFF)


# ----------------------------------------------------------------------------
# Mixed precision.


@pytest.fixture
def restore_global_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@keras.saving.register_keras_serializable(package="test_layers")
class DenseDynamics(tfnode.ODEFunc):
    """User dynamics with a sublayer made in `__init__`: under a mixed policy
    it is created with a half-precision policy that the ODE layer must lift."""

    def __init__(self, units=HIDDEN, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="tanh")

    def build(self, t_shape, y_shape):
        self.hidden.build(y_shape)
        self.out = keras.layers.Dense(y_shape[-1])  # made in build: also half
        self.out.build((*y_shape[:-1], self.units))

    def call(self, t, y):
        return self.out(self.hidden(y))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# Half precision of the layers around the ODE: float16 has a 10-bit mantissa
# (eps 2^-10 ~ 1e-3), bfloat16 a 7-bit one (eps 2^-7 ~ 8e-3). The input Dense
# rounds its output, the output Dense its inputs, weights and result: a few
# roundings of O(1) values, propagated through a flow map with Lipschitz
# constant ~e. Measured: 0.3 to 0.5 eps * max|output|; HALF_TOL eps leaves 8x.
# A float16 solve (which never accepts a step, as float16 eps ~1e-3 exceeds
# rtol, and returns y0) would be off by the flow itself, ~0.5.
HALF_TOL = 4
HALF_EPS = {"mixed_float16": 2.0**-10, "mixed_bfloat16": 2.0**-7}


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("dynamics", ["mlp", "custom"])
def test_mixed_precision_solves_in_float32(policy, dynamics, restore_global_policy):
    half = keras.mixed_precision.Policy(policy).compute_dtype
    make_func = mlp if dynamics == "mlp" else DenseDynamics

    def build():
        inputs = keras.Input((D,))
        hidden = keras.layers.Dense(3, name="before")(inputs)
        ode = tfnode.NeuralODELayer(make_func(name="func"), name="ode")
        return keras.Model(inputs, keras.layers.Dense(1, name="after")(ode(hidden)))

    keras.utils.set_random_seed(0)
    reference = build()
    keras.mixed_precision.set_global_policy(policy)
    model = build()
    model.set_weights(reference.get_weights())

    ode = model.get_layer("ode")
    assert model.get_layer("before").compute_dtype == half  # the policy is in force
    for layer in ode._flatten_layers(include_self=True):
        assert layer.compute_dtype == "float32", (layer.name, layer.compute_dtype)

    # The ODE layer turns a half-precision input into a float32 solve, equal
    # to the float32 layer's on the same (rounded) input.
    x = data()
    hidden = model.get_layer("before")(x)
    assert hidden.dtype == half
    y = ode(hidden)
    assert y.dtype == "float32"
    expected = reference.get_layer("ode")(tf.cast(hidden, "float32"))
    assert_allclose(y, expected, atol=F32_ROUNDOFF)
    assert np.max(np.abs(np.asarray(y) - np.asarray(tf.cast(hidden, "float32")))) > 0.1

    # End to end, only the half precision of the Dense layers differs.
    out, ref = np.asarray(model(x), np.float32), np.asarray(reference(x))
    assert_allclose(out, ref, atol=HALF_TOL * HALF_EPS[policy] * np.max(np.abs(ref)))

    if dynamics == "mlp":  # one fit step per policy: loss and weights stay finite
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        logs = model.fit(x, data((B, 1), seed=1), batch_size=B, verbose=0).history
        assert np.isfinite(logs["loss"][0]) and logs["ode_nfe"][0] > 0, logs
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())


# ----------------------------------------------------------------------------
# Errors.


class NoTime(keras.layers.Layer):
    def call(self, y):
        return -y


@pytest.mark.parametrize(
    "func, match",
    [
        (lambda t, y: -y, "`func` must be a Keras layer whose `call\\(t, y\\)`"),
        (keras.layers.Dense(2), "`func.call` must take `\\(t, y\\)`"),
        (NoTime(), "`func.call` must take `\\(t, y\\)`"),
    ],
    ids=["lambda", "dense", "call_without_t"],
)
def test_func_must_be_a_layer_taking_t_and_y(func, match):
    with pytest.raises(ValueError, match=match):
        tfnode.NeuralODELayer(func)


def test_func_dtype_must_match_the_layer():
    with pytest.raises(
        ValueError,
        match="`func` computes in float32 but the NeuralODELayer in "
        "float64; give both the same `dtype`",
    ):
        tfnode.NeuralODELayer(mlp(), dtype="float64")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t=(0.0,)), "`t` needs at least 2 times"),
        (
            dict(t=(0.0, 1.0, 1.0)),
            "`t` must be strictly increasing or strictly decreasing",
        ),
        (dict(t=((0.0, 1.0), (0.0, 2.0))), "`t` must be a flat sequence of times"),
        (dict(method="rk45"), "Unknown `method`: 'rk45'. Valid methods are \\['bosh3'"),
        (dict(method="rk4"), "Fixed-step method 'rk4' needs `step_size`"),
        (dict(step_size=0.1), "`step_size` is only used by fixed-step methods"),
        (dict(rtol=-1.0), "`rtol` must be a positive finite number"),
        (dict(max_num_steps=0), "`max_num_steps` must be a positive integer"),
        (dict(adjoint_method="nope"), "Unknown `method`: 'nope'"),
        (dict(adjoint_norm="l2"), "`adjoint_norm` must be 'seminorm' or 'full'"),
        (
            dict(adjoint_method="rk4"),
            "Fixed-step method 'rk4' needs `adjoint_step_size`",
        ),
        (
            dict(adjoint_step_size=0.1),
            "`adjoint_step_size` is only used by fixed-step methods",
        ),
        (dict(adjoint_rtol=-1.0), "`adjoint_rtol` must be a positive finite number"),
        (dict(adjoint=False, adjoint_method="nope"), "Unknown `method`: 'nope'"),
        (
            dict(adjoint=False, adjoint_method="rk4", adjoint_step_size=-1.0),
            "`adjoint_step_size` must be a positive finite number",
        ),
    ],
)
def test_invalid_options_raise_in_init(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfnode.NeuralODELayer(mlp(), **kwargs)


@pytest.mark.parametrize(
    "t, match",
    [
        (np.zeros([B, 2, 1]), "`t` must have shape \\[T\\] or \\[B, T\\]"),
        (np.float32(1.0), "`t` must have shape \\[T\\] or \\[B, T\\]"),
        ([1.0], "`t` needs at least 2 times"),
        ([0.0, 1.0, 0.5], "`t` must be strictly increasing or strictly decreasing"),
        (
            np.array([[0.0, 1.0]] * (B - 1) + [[1.0, 0.0]]),
            "`t` of shape \\[B, T\\] must hold a "
            "strictly increasing or strictly "
            "decreasing grid in each row",
        ),
        (
            np.array([[0.0, 1.0, 0.5]] * B),
            "`t` of shape \\[B, T\\] must hold a strictly",
        ),
        (
            np.array([[0.0, 1.0]] * (B + 1)),
            "`t` of shape \\[B, T\\] needs one row of times "
            "per sample of `y0`. Received: t with shape \\(5, 2\\)",
        ),
    ],
    ids=[
        "rank3",
        "scalar",
        "one_time",
        "not_monotonic",
        "rows_mixed_directions",
        "row_not_monotonic",
        "rows_not_batch",
    ],
)
def test_invalid_call_times_raise(t, match):
    layer = tfnode.NeuralODELayer(mlp())
    with pytest.raises(ValueError, match=match):
        layer(data(), t=t)


class Fast(tfnode.ODEFunc):
    """Fast, oscillating dynamics: an adaptive solve needs many steps."""

    def build(self, t_shape, y_shape):
        self.rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(50.0)
        )

    def call(self, t, y):
        return self.rate * tf.sin(30.0 * y)


_MAX_STEPS_MESSAGE = (
    "The ODE solver reached `max_num_steps=2` before `t\\[-1\\]`. Increase"
)


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["graph", "eager"])
def test_failed_forward_solve_in_fit_names_layer_and_status(run_eagerly):
    inputs = keras.Input((D,))
    ode = tfnode.NeuralODELayer(Fast(), max_num_steps=2, adjoint=False, name="fast_ode")
    model = keras.Model(inputs, ode(inputs))
    model.compile(optimizer="sgd", loss="mse", run_eagerly=run_eagerly)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=_MAX_STEPS_MESSAGE
    ) as info:
        model.fit(data(), data(), verbose=0)
    # Eagerly the message starts with the layer; in a graph the failing node
    # is named by the layer's scope.
    if run_eagerly:
        assert info.match("NeuralODELayer 'fast_ode', forward solve: The ODE solver")
    else:
        assert info.match("fast_ode[_0-9]*/forward_solve/Assert")


def test_failed_backward_solve_in_fit_raises():
    # A loose forward solve and a very tight backward one: only the backward
    # solve runs out of steps (unchecked, it would give NaN gradients). Eager
    # only: the graph-mode assertion is `odeint_adjoint`'s, tested there.
    inputs = keras.Input((D,))
    ode = tfnode.NeuralODELayer(
        mlp(),
        t=(0.0, 3.0),
        rtol=0.1,
        atol=0.1,
        adjoint_rtol=1e-12,
        adjoint_atol=1e-12,
        max_num_steps=8,
    )
    model = keras.Model(inputs, ode(inputs))
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    message = (
        "In the backward \\(adjoint\\) solve: The ODE solver reached `max_num_steps=8`"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        model.fit(data(), data(), verbose=0)


def test_method_must_be_a_name():
    """A tableau object would not survive `get_config`, so the layer asks for a name."""
    with pytest.raises(
        ValueError, match=r"`method` must be a method name.*Received: method="
    ):
        tfnode.NeuralODELayer(tfnode.MLPODEFunc(), method=tfnode.solvers.get("dopri5"))


# ----------------------------------------------------------------------------
# A new user's first mistakes get messages that say what to do.


def test_integer_input_names_the_input_not_the_times():
    layer = tfnode.NeuralODELayer(mlp(), name="ode")
    with pytest.raises(
        ValueError,
        match=r"NeuralODELayer 'ode' needs a floating-point input \(the ODE's state\)"
        r"\. Received: y0 with dtype int32\. Cast it first",
    ):
        layer(tf.constant([[1, 2]]))


@pytest.mark.parametrize("func", ["mlp", "custom"])
def test_unbatched_input_asks_for_a_batch_axis(func):
    # A custom func that fails on rank 1 in its own way gets the layer's hint too.
    func = mlp() if func == "mlp" else DenseDynamics()
    layer = tfnode.NeuralODELayer(func, name="ode")
    with pytest.raises(
        ValueError,
        match=r"NeuralODELayer 'ode' reads its input as batch-major \[B, \.\.\.\], so "
        r"an input of shape \(2,\) is a batch of scalar states.*add a batch axis: "
        r"`y0\[None\]`, of shape \(1, 2\)",
    ):
        layer(tf.constant([1.0, 2.0]))


def test_batch_of_scalar_states_is_fine():
    """Rank-1 input is a batch of scalars, which dynamics may well take."""

    class Decay(tfnode.ODEFunc):
        def call(self, t, y):
            return -y

    y1 = tfnode.NeuralODELayer(Decay(), rtol=SOLVE_TOL, atol=SOLVE_TOL)(tf.ones([3]))
    assert_allclose(y1, np.full(3, np.exp(-1.0)), atol=SOLVER_ERROR)


def test_keras_style_build_that_fails_is_explained():
    class OneShapeBuild(tfnode.ODEFunc):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]))

        def call(self, t, y):
            return y @ self.w

    class PlainLayer(keras.layers.Layer):  # not an ODEFunc: the layer explains it
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],))

        def call(self, time, state):
            return -state * self.w

    message = (
        r"`{}\.build\(self, input_shape\)` received only the shape of `{}`: "
        r"Keras passes one shape per input of `call\({}, {}\)`, so dynamics layers "
        r"build with `def build\(self, {}_shape, {}_shape\)`"
    )
    with pytest.raises(TypeError, match=message.format("OneShapeBuild", *"ttyty")):
        OneShapeBuild()(tf.constant(0.0), tf.ones([2, 2]))
    with pytest.raises(TypeError, match=message.format("OneShapeBuild", *"ttyty")):
        tfnode.NeuralODELayer(OneShapeBuild())(tf.ones([2, 2]))
    names = ("time", "time", "state", "time", "state")
    with pytest.raises(TypeError, match=message.format("PlainLayer", *names)):
        tfnode.NeuralODELayer(PlainLayer())(tf.ones([2, 2]))


def test_one_shape_build_that_works_is_left_alone():
    """A `build(self, input_shape)` that does not read the shape worked before."""

    class FixedSize(tfnode.ODEFunc):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(D,), initializer="ones")

        def call(self, t, y):
            return -y * self.w

    assert tfnode.NeuralODELayer(FixedSize())(tf.ones([B, D])).shape == (B, D)


def test_torchdiffeq_options_dict_is_explained():
    with pytest.raises(
        TypeError,
        match=r"`NeuralODELayer\(\)` got an unexpected keyword argument `options`: "
        r"solver options are keywords here",
    ):
        tfnode.NeuralODELayer(mlp(), method="rk4", options=dict(step_size=0.1))


def _solve_nfe(ode, y0):
    """The forward NFE of the layer's solve from `y0`."""
    _, stats = tfnode.odeint(
        ode.func,
        tf.constant(y0),
        tf.constant(ode.t),
        rtol=ode.rtol,
        atol=ode.atol,
        max_num_steps=ode.max_num_steps,
        return_stats=True,
    )
    return int(stats.nfe)


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["graph", "eager"])
def test_evaluate_logs_solver_counts_and_serving_graphs_update_no_metrics(
    run_eagerly, tmp_path
):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((D,))
    ode = tfnode.NeuralODELayer(mlp(), name="ode")
    model = keras.Model(inputs, keras.layers.Dense(1)(ode(inputs)))
    model.compile("sgd", "mse", run_eagerly=run_eagerly)
    x, y = data(), data((B, 1))
    logs = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0).history
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    expected = _solve_nfe(ode, x)
    assert logs["val_ode_nfe"] == [expected], logs
    assert evaluated["ode_nfe"] == expected, evaluated
    assert evaluated["ode_backward_nfe"] == 0, evaluated  # no gradient taken
    assert expected > 0

    # predict and the exported serving function record nothing.
    before = float(ode.nfe.result())
    model.predict(data(seed=1), verbose=0)
    assert float(ode.nfe.result()) == before
    if run_eagerly:
        return
    model.export(tmp_path / "export", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    serve = loaded.serve.get_concrete_function(tf.TensorSpec([None, D], tf.float32))
    graph_def = serve.graph.as_graph_def()
    nodes = list(graph_def.node) + [
        node for function in graph_def.library.function for node in function.node_def
    ]
    assigns = [n.name for n in nodes if n.op.startswith("Assign")]
    assert not assigns, assigns
