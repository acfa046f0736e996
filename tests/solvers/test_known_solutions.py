"""`odeint` against closed-form solutions: linear systems (matrix exponential),
time-dependent right-hand sides, reversed time, per-sample grids, nested states,
float32 and float64, outputs at many times."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_allclose, in_mode
from problems import (
    cos_growth,
    cos_growth_exact,
    linear_exact,
    linear_func,
    oscillator,
    oscillator_exact,
)

import tfnode
from tfnode.solvers import SOLVERS

METHODS = sorted(SOLVERS)
ADAPTIVE = sorted(name for name, tableau in SOLVERS.items() if tableau.adaptive)
DTYPES = (tf.float32, tf.float64)

# Adaptive solves use rtol = atol = TOL[dtype]: 1e-6 is ~10 float32 epsilons,
# the tightest tolerance float32 can honour; 1e-10 leaves float64 room below it
# for round-off.
TOL = {tf.float32: 1e-6, tf.float64: 1e-10}
# On these smooth problems over a few time units, whose solutions do not grow fast, the
# global error of a tolerance-controlled solve stays within a small multiple of the
# tolerance (local errors of size ~tol, relative to |y|, accumulate over tens of steps);
# measured at most 4.5x here.
GLOBAL_ERROR_FACTOR = 10.0
# Fixed-step solves use steps of at most STEP; their global error is
# C * STEP**order with an error constant C of order one on these problems (measured
# at most 0.8, for Euler).
STEP = 0.01
ERROR_CONSTANT = 2.0
# Round-off accumulated over a few hundred steps of states of size ~1: ~100 ulps.
ROUNDOFF = {tf.float32: 1e-5, tf.float64: 1e-13}


def solver_options(method, dtype):
    """`(odeint keyword arguments, {rtol, atol} for the error)` for `method` in `dtype`,
    derived from the tableau's metadata."""
    tableau = SOLVERS[method]
    if tableau.adaptive:
        tol = TOL[dtype]
        options, error = dict(rtol=tol, atol=tol), GLOBAL_ERROR_FACTOR * tol
    else:
        options, error = dict(step_size=STEP), ERROR_CONSTANT * STEP**tableau.order
    return options, dict(rtol=error, atol=error + ROUNDOFF[dtype])


def _ids(dtypes):
    return [d.name for d in dtypes]


def _odeint(func, y0, t, method):
    options, _ = solver_options(method, tf.nest.flatten(y0)[0].dtype)
    return tfnode.odeint(func, y0, t, method=method, return_stats=True, **options)


def _solve_linear(y0, t, method):
    return _odeint(linear_func(), y0, t, method)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids(DTYPES))
@pytest.mark.parametrize("method", METHODS)
def test_linear_system_vs_expm(method, dtype):
    """`dy/dt = A y` at 101 output times matches `expm(A t) y0`, with `ys[0]`
    equal to `y0` bit for bit; solving back along the reversed times returns
    the same trajectory."""
    y0 = np.array([[1.0, 0.5, -0.3], [-2.0, 0.1, 0.7]], dtype.as_numpy_dtype)  # [B, D]
    t = np.linspace(0.0, 2.0, 101)
    _, error = solver_options(method, dtype)
    solve = in_mode(_solve_linear, "graph")
    ys, stats = solve(tf.constant(y0), tf.constant(t, dtype), method)
    assert ys.dtype == dtype and ys.shape == (101, 2, 3)
    assert int(stats.status) == tfnode.Status.SUCCESS
    np.testing.assert_array_equal(ys[0].numpy(), y0)
    exact = linear_exact(y0, 0.0, t)  # [T, B, D]
    assert_allclose(ys, exact, **error)

    back, _ = solve(ys[-1], tf.constant(t[::-1], dtype), method)
    np.testing.assert_array_equal(back[0].numpy(), ys[-1].numpy())
    assert_allclose(back, exact[::-1], **{k: 2 * v for k, v in error.items()})


def _solve_cos_growth(y0, t, method):
    return _odeint(cos_growth, y0, t, method)


def _twice(error):
    return {k: 2 * v for k, v in error.items()}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("direction", ["forward", "reversed"])
def test_time_dependent_rhs(method, direction):
    """`dy/dt = cos(t) y` matches `y0 exp(sin t - sin t0)`,
    forwards and with `t` decreasing."""
    y0 = np.array([1.0, -0.5])
    t = np.linspace(-1.0, 3.0, 5)
    if direction == "reversed":
        t = t[::-1]
    _, error = solver_options(method, tf.float64)
    ys, _ = in_mode(_solve_cos_growth, "graph")(tf.constant(y0), tf.constant(t), method)
    assert_allclose(ys, cos_growth_exact(y0, t[0], t), **error)


# Per-sample grids: column b of `t` runs from START[b] over SPAN[b], at unequal steps
# (`UNIT` is not uniform), so the samples share neither start, span nor spacing.
START = np.array([0.0, -1.0, 0.5])
SPAN = np.array([2.0, 1.0, 3.0])
UNIT = np.linspace(0.0, 1.0, 5) ** 1.5


def _per_sample_times(direction):
    if direction == "forward":
        return START + np.outer(UNIT, SPAN)  # [T, B]
    return START + SPAN - np.outer(UNIT, SPAN)


def _cos_growth_checked(t, y):
    if t.shape != (y.shape[0],):
        raise AssertionError(
            f"per-sample func got t of shape {t.shape}, y of shape {y.shape}"
        )
    return cos_growth(t, y)


def _solve_per_sample(y0, t, method):
    return _odeint(_cos_growth_checked, y0, t, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("direction", ["forward", "reversed"])
def test_per_sample_grids(method, direction):
    """`t` of shape [T, B]: `func` receives `t` of shape [B], and each sample matches
    both its closed form and a separate solve on its own grid."""
    t = _per_sample_times(direction)  # [T, B]
    y0 = np.array([[1.0, 2.0], [-0.5, 0.3], [0.2, -1.0]])  # [B, D]
    _, error = solver_options(method, tf.float64)
    ys, _ = in_mode(_solve_per_sample, "graph")(tf.constant(y0), tf.constant(t), method)
    assert ys.shape == (5, 3, 2)
    np.testing.assert_array_equal(ys[0].numpy(), y0)
    assert_allclose(ys, cos_growth_exact(y0, t[0], t), **error)
    for b in range(3):
        alone, _ = in_mode(_solve_cos_growth, "graph")(
            tf.constant(y0[b]), tf.constant(t[:, b]), method
        )
        assert_allclose(ys[:, b], alone, **_twice(error), err_msg=f"sample {b}")


def _solve_nested(y0, t, method):
    return _odeint(oscillator, y0, t, method)


def _oscillator_stacked(t, y):
    return tf.stack([y[1], -y[0]])


def _solve_stacked(y0, t, method):
    return _odeint(_oscillator_stacked, y0, t, method)


# Nested and stacked states run the same arithmetic (the error norm is an RMS over all
# elements either way), so they agree to round-off, not just to the solver's accuracy.
SAME_ARITHMETIC_RTOL = 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_nested_state(method):
    """A state `(x, {"v": v})` keeps its structure, matches the harmonic oscillator's
    closed form, and equals the solve of the same system as one stacked tensor."""
    x0, v0 = np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0, -0.2])
    t = np.linspace(0.0, 3.0, 7)
    y0 = (tf.constant(x0), {"v": tf.constant(v0)})
    _, error = solver_options(method, tf.float64)
    ys, _ = in_mode(_solve_nested, "graph")(y0, tf.constant(t), method)
    tf.nest.assert_same_structure(ys, y0)
    xs, vs = ys[0], ys[1]["v"]
    assert_allclose((xs, vs), oscillator_exact(x0, v0, t), **error)
    stacked, _ = in_mode(_solve_stacked, "graph")(
        tf.constant([x0, v0]), tf.constant(t), method
    )
    assert_allclose((xs, vs), (stacked[:, 0], stacked[:, 1]), rtol=SAME_ARITHMETIC_RTOL)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_dense_output_does_not_change_steps(method):
    """Two different sets of 99 interior output times take exactly the same steps
    (outputs come from dense interpolation, not from shortened steps) and give the
    same final state."""
    y0 = tf.constant([[1.0, 0.5, -0.3], [-2.0, 0.1, 0.7]], tf.float64)
    uniform = np.linspace(0.0, 2.0, 101)
    clustered = 2.0 * np.linspace(0.0, 1.0, 101) ** 3  # most outputs early, few late
    solve = in_mode(_solve_linear, "graph")  # the trace of test_linear_system_vs_expm
    ys_uniform, stats_uniform = solve(y0, tf.constant(uniform), method)
    ys_clustered, stats_clustered = solve(y0, tf.constant(clustered), method)
    assert [int(x) for x in stats_uniform] == [int(x) for x in stats_clustered]
    assert_allclose(ys_clustered[-1], ys_uniform[-1], rtol=SAME_ARITHMETIC_RTOL)
    _, error = solver_options(method, tf.float64)
    assert_allclose(ys_clustered, linear_exact(y0.numpy(), 0.0, clustered), **error)


# A feature of width `WIDTH` at the start of a span 1e6 times longer.
WIDTH = 1e-5


def _sharp_start(t, y):
    return tf.ones_like(y) / (t + WIDTH)


def _solve_sharp_start(y0, t, method):
    return tfnode.odeint(_sharp_start, y0, t, method=method, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_short_steps_early_in_a_long_span_float32(method):
    """`dy/dt = 1 / (t + 1e-5)` on [0, 10] in float32 needs steps ~1e-6 of the span near
    `t = 0`; they advance time fine there, so the solve succeeds (no false step-size
    underflow) and matches `log((t + 1e-5) / 1e-5)`."""
    t = np.array([0.0, 1e-4, 1e-2, 10.0])
    ys = in_mode(_solve_sharp_start, "graph")(
        tf.zeros([1]), tf.constant(t, tf.float32), method
    )
    exact = np.log((t + WIDTH) / WIDTH)[:, None]
    assert_allclose(
        ys, exact, rtol=GLOBAL_ERROR_FACTOR * 1e-5, atol=ROUNDOFF[tf.float32]
    )
