"""`tfnode.odeint` as users call it: execution regimes (eager, `tf.function`, XLA),
solver statistics, state structures, dtypes, shapes, and gradients by backprop."""

import math

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from helpers import HEUN_EULER, assert_allclose, in_mode, stats_tuple

import tfnode
from tfnode.solvers import SOLVERS, ButcherTableau

METHODS = sorted(SOLVERS)
ADAPTIVE = sorted(name for name, tableau in SOLVERS.items() if tableau.adaptive)

# Eager mode runs ~40x slower than graph mode, so regime tests use tiny, loose solves.
LOOSE = {"rtol": 1e-4, "atol": 1e-6}
COARSE_STEP = 0.3
# The same solve in eager, graph and XLA runs the same operations, except that
# XLA may fuse and reorder floating-point arithmetic: results agree to a few ulps
# per step (float64).
MODES_RTOL = 1e-12
MODES_ATOL = 1e-14


def options(method):
    """Loose solver options for `method` from its metadata (adaptive or fixed step)."""
    return dict(LOOSE) if SOLVERS[method].adaptive else {"step_size": COARSE_STEP}


def _rotation(t, y):
    """A damped rotation on `[..., 2]` with a time-dependent rate;
    `t` scalar or `[B]`."""
    rate = 1.0 + 0.5 * tf.sin(t)
    if rate.shape.rank:  # per-sample times [B] against components y[..., i] of [B, ...]
        rate = tf.reshape(rate, [-1] + [1] * (y.shape.rank - 2))
    return tf.stack([-0.1 * y[..., 0] + rate * y[..., 1], -rate * y[..., 0]], axis=-1)


def _nested(t, state):
    """`(p, {"q": q})` with `p` [B, 2] rotating and `q` [B] driven by `p`."""
    p, q = state[0], state[1]["q"]
    return (_rotation(t, p), {"q": -q + p[:, 0]})


def _solve_shared(y0, t, method):
    return tfnode.odeint(
        _rotation, y0, t, method=method, return_stats=True, **options(method)
    )


def _solve_per_sample_nested(y0, t, method):
    return tfnode.odeint(
        _nested, y0, t, method=method, return_stats=True, **options(method)
    )


SHARED_Y0 = np.array([[1.0, 0.0], [0.3, -0.7]])  # [B, 2]
SHARED_T = np.array([0.0, 0.4, 1.0])
NESTED_Y0 = (np.array([[1.0, 0.0], [0.3, -0.7]]), {"q": np.array([0.5, -1.0])})
# Per-sample grids, decreasing in both columns: [T, B].
PER_SAMPLE_T = np.array([[1.0, 2.0], [0.6, 1.5], [0.0, 0.5]])

CASES = {
    "shared_grid": (_solve_shared, SHARED_Y0, SHARED_T),
    "per_sample_nested_reversed": (_solve_per_sample_nested, NESTED_Y0, PER_SAMPLE_T),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_modes_agree(mode, method, case):
    """Eager, `tf.function` and XLA give the same outputs up to round-off and exactly
    the same statistics; `ys[0]` is `y0` bit for bit in every regime."""
    solve, y0, t = CASES[case]
    y0 = tf.nest.map_structure(tf.constant, y0)
    t = tf.constant(t, tf.float64)
    reference, reference_stats = in_mode(solve, "graph")(y0, t, method)
    ys, stats = in_mode(solve, mode)(y0, t, method)
    assert stats_tuple(stats) == stats_tuple(reference_stats)
    assert int(stats.status) == tfnode.Status.SUCCESS
    tf.nest.assert_same_structure(ys, y0)
    for y, first in zip(tf.nest.flatten(ys), tf.nest.flatten(y0)):
        assert y.shape == (t.shape[0], *first.shape)
        np.testing.assert_array_equal(y[0].numpy(), first.numpy())
    assert_allclose(ys, reference, rtol=MODES_RTOL, atol=MODES_ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_stats_count_function_evaluations(method):
    """`stats.nfe` is the number of calls of `func` (counted eagerly), `num_steps` and
    `num_rejected` add up with the method's stage count, and `status` is SUCCESS."""
    tableau = SOLVERS[method]
    calls = []

    def func(t, y):
        calls.append(t)
        return -2.0 * y

    t = [0.0, 0.5, 1.0]
    _, stats = tfnode.odeint(
        func,
        tf.constant([1.0, 2.0], tf.float64),
        t,
        method=method,
        return_stats=True,
        **options(method),
    )
    nfe, num_steps, num_rejected, status = stats_tuple(stats)
    assert nfe == len(calls)
    assert status == tfnode.Status.SUCCESS
    if tableau.adaptive:
        # FSAL: one evaluation at t0, one for the initial-step heuristic, then
        # `num_stages - 1` per attempted step.
        assert nfe == 2 + (tableau.num_stages - 1) * (num_steps + num_rejected)
    else:
        intervals = np.diff(t)
        assert num_steps == sum(math.ceil(dt / COARSE_STEP) for dt in intervals)
        assert nfe == tableau.num_stages * num_steps
        assert num_rejected == 0


@pytest.mark.parametrize("method", ADAPTIVE)
def test_rejected_steps_are_counted(method):
    """A far too large `first_step` is rejected (and counted), then the solve succeeds;
    no initial-step evaluation is spent."""
    tableau = SOLVERS[method]
    tol = 1e-6
    ys, stats = tfnode.odeint(
        lambda t, y: -2.0 * y,
        tf.constant([1.0], tf.float64),
        [0.0, 3.0],
        method=method,
        first_step=3.0,
        rtol=tol,
        atol=tol,
        return_stats=True,
    )
    nfe, num_steps, num_rejected, status = stats_tuple(stats)
    assert num_rejected >= 1 and status == tfnode.Status.SUCCESS
    assert nfe == 1 + (tableau.num_stages - 1) * (num_steps + num_rejected)
    # A decay over 3 time units: the global error stays within a few tolerances.
    assert_allclose(ys[-1], np.exp([-6.0]), atol=10 * tol)


def test_non_fsal_evaluations_are_counted():
    """`nfe` matches the calls for a non-FSAL pair, rejected attempts included
    (every attempt also evaluates f(t1, y1))."""
    pair = ButcherTableau(**HEUN_EULER)
    calls = []

    def func(t, y):
        calls.append(t)
        return -2.0 * y

    _, stats = tfnode.odeint(
        func,
        tf.constant([1.0, 2.0], tf.float64),
        [0.0, 0.5, 3.0],
        method=pair,
        first_step=3.0,
        rtol=1e-5,
        atol=1e-5,
        return_stats=True,
    )
    nfe, num_steps, num_rejected, status = stats_tuple(stats)
    assert not pair.fsal and num_rejected >= 1 and status == tfnode.Status.SUCCESS
    assert nfe == len(calls) == 1 + pair.num_stages * (num_steps + num_rejected)


def _solve_unknown_shapes(y0, t):
    return tfnode.odeint(_rotation, y0, t, method="dopri5", return_stats=True, **LOOSE)


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_unknown_shapes_in_function(mode):
    """Inside a `tf.function` whose input signature leaves the number of times and the
    batch size unknown, `odeint` runs and matches the solve with known shapes."""
    signature = (
        tf.TensorSpec([None, 2], tf.float64),
        tf.TensorSpec([None], tf.float64),
    )
    solve = in_mode(_solve_unknown_shapes, mode, input_signature=signature)
    y0, t = tf.constant(SHARED_Y0), tf.constant(SHARED_T)
    ys, stats = solve(y0, t)
    reference, reference_stats = in_mode(_solve_shared, "graph")(y0, t, "dopri5")
    assert stats_tuple(stats) == stats_tuple(reference_stats)
    assert_allclose(ys, reference, rtol=MODES_RTOL, atol=MODES_ATOL)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "t",
    [
        [0, 1, 2],
        np.array([0.0, 1.0, 2.0], np.float64),
        tf.constant([0, 1, 2], tf.int32),
        tf.constant([0.0, 1.0, 2.0], tf.float64),
        tf.Variable([0.0, 1.0, 2.0], dtype=tf.float32),
    ],
    ids=[
        "int_list",
        "numpy_float64",
        "int32_tensor",
        "float64_tensor",
        "float32_variable",
    ],
)
def test_state_dtype_decides(t, dtype):
    """Outputs have `y0`'s dtype and `func` receives `t` in it,
    whatever type `t` came in."""
    seen = []

    def func(t, y):
        seen.append(t.dtype)
        return -y

    ys = tfnode.odeint(func, tf.ones([2], dtype), t, method="euler", step_size=1.0)
    assert ys.dtype == dtype and ys.shape == (3, 2)
    assert set(seen) == {dtype}
    assert_allclose(ys[:, 0], [1.0, 0.0, 0.0])  # Euler with unit steps on dy/dt = -y


# Half-precision solves below, as relative errors in units of u (the unit round-off:
# 2^-8 for bfloat16, 2^-11 for float16). In bfloat16 round-off dominates; in float16
# the methods' own error is comparable (dopri5 in float64: 2.4e-4 at t = 1, ~0.5 u).
# Measured: rk4 0.29 u (float16) and 0.48 u (bfloat16), dopri5 0.29 u and 6.3 u.
# 10 u is an empirical margin, 1.6x the largest.
ROUNDOFF_UNITS = 10


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize(
    "dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"]
)
def test_half_precision_states(dtype, method):
    """16-bit states solve at tolerances they can honour and keep their dtype."""
    if SOLVERS[method].adaptive:
        options = {"rtol": 1e-2, "atol": 1e-3}
    else:
        options = {"step_size": 0.25}
    ys = tfnode.odeint(
        lambda t, y: -y,
        tf.ones([2], dtype),
        [0.0, 0.5, 1.0],
        method=method,
        **options,
    )
    assert ys.dtype == dtype
    unit_roundoff = float(ml_dtypes.finfo(dtype.as_numpy_dtype).eps) / 2
    assert_allclose(
        tf.cast(ys, tf.float64),
        np.exp(-np.array([[0.0] * 2, [0.5] * 2, [1.0] * 2])),
        rtol=ROUNDOFF_UNITS * unit_roundoff,
    )


@pytest.mark.parametrize(
    "y0",
    [
        tf.constant(2.0),
        tf.ones([2, 3, 4]),
        np.ones([3], np.float32),
        [tf.ones([1]), tf.ones([2])],
    ],
    ids=["scalar", "rank3", "numpy", "list"],
)
def test_output_shapes(y0):
    """`ys` has the structure of `y0` and each leaf the shape `[T, *leaf.shape]`."""
    ys = tfnode.odeint(
        lambda t, y: tf.nest.map_structure(tf.negative, y),
        y0,
        [0.0, 0.5, 1.0],
        method="rk4",
        step_size=0.5,
    )
    tf.nest.assert_same_structure(ys, y0)
    for y, leaf in zip(tf.nest.flatten(ys), tf.nest.flatten(y0)):
        assert y.shape == (3, *np.shape(leaf))


def test_return_stats_types():
    """`return_stats=True` returns a `tfnode.SolverStats` of scalar int32 tensors."""
    ys, stats = tfnode.odeint(
        lambda t, y: -y, tf.ones([1]), [0.0, 1.0], return_stats=True
    )
    assert isinstance(stats, tfnode.SolverStats)
    assert stats._fields[:4] == ("nfe", "num_steps", "num_rejected", "status")
    for value in stats:
        assert value.dtype == tf.int32 and value.shape == ()
    assert not isinstance(
        tfnode.odeint(lambda t, y: -y, tf.ones([1]), [0.0, 1.0]), tuple
    )


# --------------------------------------------------------------------------------------
# Gradients by backprop through the solver ("RK-Net").
# --------------------------------------------------------------------------------------

# Tight tolerance so that the adaptive solution is smooth in its inputs to ~1e-10.
GRAD_OPTIONS = {"dopri5": {"rtol": 1e-10, "atol": 1e-10}, "rk4": {"step_size": 0.1}}
# Central differences in float64 with FD_STEP = 1e-4: truncation error
# ~FD_STEP**2 ~ 1e-8 relative; an adaptive step-sequence change would add
# ~tol / FD_STEP ~ 1e-6 at worst.
FD_STEP = 1e-4
GRAD_ATOL = 2e-6
# The loss projects `ys` on fixed random weights, so one gradient checks all outputs.
LOSS_WEIGHTS = np.random.default_rng(0).normal(size=(3, 2))
# Output times: no interval is a multiple of rk4's step 0.1, so perturbations of `t`
# never change the number of fixed steps.
GRAD_T = np.array([0.0, 0.37, 1.03])


def _grad_loss(y0, t, theta, method):
    def func(t, y):
        return tf.stack([theta * y[1], -y[0] - 0.1 * y[1] + tf.sin(t)])

    ys = tfnode.odeint(func, y0, t, method=method, **GRAD_OPTIONS[method])
    return tf.reduce_sum(tf.constant(LOSS_WEIGHTS) * ys)


def _grad(y0, t, theta, method):
    with tf.GradientTape() as tape:
        tape.watch([y0, t, theta])
        loss = _grad_loss(y0, t, theta, method)
    return tape.gradient(loss, [y0, t, theta])


@pytest.mark.parametrize("mode", ["graph", "xla"])
@pytest.mark.parametrize("method", sorted(GRAD_OPTIONS))
def test_gradients_match_finite_differences(method, mode):
    """Backprop gradients for `y0`, every `t[i]` and a parameter closed over by `func`
    match central finite differences (float64), in graph mode and under XLA."""
    x = np.concatenate([[1.0, 0.5], GRAD_T, [1.3]])

    def split(x):
        return tf.constant(x[:2]), tf.constant(x[2:5]), tf.constant(x[5])

    grads = in_mode(_grad, mode)(*split(x), method)
    backprop = np.concatenate([np.ravel(g.numpy()) for g in grads])
    loss = in_mode(_grad_loss, "graph")
    finite_differences = np.array(
        [
            (
                loss(*split(x + FD_STEP * e), method)
                - loss(*split(x - FD_STEP * e), method)
            )
            / (2 * FD_STEP)
            for e in np.eye(len(x))
        ]
    )
    assert_allclose(backprop, finite_differences, atol=GRAD_ATOL)
    assert np.all(backprop != 0)
