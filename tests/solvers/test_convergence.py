"""Convergence orders measured from solves, for every method in the registry.

Each order is the least-squares slope of log(error) against log(step) (or
log(number of steps)), compared with the tableau's metadata, so a new tableau
is checked without editing this file.
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import fitted_slope, in_mode
from problems import cos_growth, cos_growth_exact, linear_exact, linear_func

import tfnode
from tfnode.solvers import SOLVERS, fixed_grid, runge_kutta

# |fitted slope - order| must stay below this. Over 4 halvings of the step in the
# asymptotic regime the slope differs from the order only through the next term of the
# error expansion, O(h) relative (observed <= 0.15 here); 0.5 is half-way to the
# neighbouring integers, so a method that is really one order off (a wrong
# coefficient, a stage at the wrong time) always fails, where diffrax's 0.9 would let
# some of those through.
SLOPE_TOL = 0.5
# Steps per unit time: powers of two, so `step_size = 1 / n` divides [0, 1]
# exactly. The finest error of a 5th-order method (~1e-13) stays well above float64
# round-off (~1e-15).
NUM_STEPS = (8, 16, 32, 64)
# Local (one-step) error estimates: steps from 0.2 down to 0.025, errors ~1e-3 .. 1e-12.
ONE_STEP_SIZES = (0.2, 0.1, 0.05, 0.025)
# Adaptive solves: tolerances 100x apart over [0, T_END],
# long enough for >= 15 steps each.
TOLERANCES = (1e-5, 1e-7, 1e-9)
T_END = 10.0
# Tolerance proportionality: a 100x tighter tolerance should shrink the global
# error ~100x; requiring 10x proves the tolerance drives the error with a margin
# for controller noise.
MIN_ERROR_REDUCTION = 10.0

Y0 = np.array([1.0, 0.5, -0.3])
FIXED = sorted(name for name, tableau in SOLVERS.items() if not tableau.adaptive)
ADAPTIVE = sorted(name for name, tableau in SOLVERS.items() if tableau.adaptive)

# (name, dynamics, closed form y(t) from y(0) = Y0 at times `t` [T]); one autonomous,
# one time-dependent problem, so that a stage evaluated at the wrong time
# `t + c[i] dt` shows up.
PROBLEMS = {
    "linear": (linear_func(), lambda t: linear_exact(Y0, 0.0, t)),
    "cos_growth": (cos_growth, lambda t: cos_growth_exact(Y0, 0.0, t)),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_order(method, problem):
    """`odeint` with a fixed-step method converges at the tableau's order
    as `step_size` shrinks."""
    func, exact = PROBLEMS[problem]
    t = np.array([0.0, 1.0])
    errors = []
    for n in NUM_STEPS:
        ys, stats = tfnode.odeint(
            func, tf.constant(Y0), t, method=method, step_size=1 / n, return_stats=True
        )
        assert int(stats.num_steps) == n
        errors.append(np.max(np.abs(ys.numpy()[-1] - exact(t)[-1])))
    slope = fitted_slope([1 / n for n in NUM_STEPS], errors)
    assert abs(slope - SOLVERS[method].order) < SLOPE_TOL, (
        f"slope {slope:.3f}, errors {errors}"
    )


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_tableau_order_on_fixed_grid(method):
    """The adaptive tableaux, run with fixed steps by the generic RK step,
    reach their order."""
    tableau = SOLVERS[method]
    func, exact = PROBLEMS["cos_growth"]
    t = tf.constant([0.0, 1.0], tf.float64)
    errors = []
    for n in NUM_STEPS:
        ys, _ = fixed_grid.solve(
            lambda t, y: [func(t, y[0])],
            [tf.constant(Y0)],
            t,
            tableau,
            step_size=1 / n,
            max_num_steps=n,
        )
        errors.append(np.max(np.abs(ys[0].numpy()[-1] - exact([0.0, 1.0])[-1])))
    slope = fitted_slope([1 / n for n in NUM_STEPS], errors)
    assert abs(slope - tableau.order) < SLOPE_TOL, f"slope {slope:.3f}, errors {errors}"


@pytest.mark.parametrize("method", ADAPTIVE)
def test_error_estimate_order(method):
    """The embedded estimate `dt * b_err . k` of one step is O(dt^(error_order + 1))."""
    tableau = SOLVERS[method]
    func, _ = PROBLEMS["cos_growth"]
    t0 = tf.constant(0.3, tf.float64)
    y0 = [tf.constant(Y0)]

    def flat(t, y):
        return [func(t, y[0])]

    estimates = []
    for dt in ONE_STEP_SIZES:
        _, y_err, _ = runge_kutta.step(
            flat, t0, y0, tf.constant(dt, tf.float64), tableau, flat(t0, y0)
        )
        estimates.append(np.max(np.abs(y_err[0].numpy())))
    slope = fitted_slope(ONE_STEP_SIZES, estimates)
    wanted = tableau.error_order + 1
    assert abs(slope - wanted) < SLOPE_TOL, f"slope {slope:.3f}, estimates {estimates}"


def _adaptive_solve(y0, t, method, tol):
    func, _ = PROBLEMS["linear"]
    return tfnode.odeint(
        func,
        y0,
        t,
        method=method,
        rtol=tol,
        atol=tol,
        max_num_steps=20_000,
        return_stats=True,
    )


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_error_follows_tolerance(method):
    """Tighter `rtol`/`atol` give proportionally smaller errors, and error vs number of
    steps falls at the tableau's order (error ~ steps^-order)."""
    _, exact = PROBLEMS["linear"]
    t = np.linspace(0.0, T_END, 11)
    solve = in_mode(_adaptive_solve, "graph")
    errors, steps = [], []
    for tol in TOLERANCES:
        ys, stats = solve(tf.constant(Y0), tf.constant(t), method, tol)
        errors.append(np.max(np.abs(ys.numpy() - exact(t))))
        steps.append(int(stats.num_steps))
    for coarse, fine in zip(errors, errors[1:]):
        assert fine < coarse / MIN_ERROR_REDUCTION, (
            f"errors {errors} at tolerances {TOLERANCES}"
        )
    slope = fitted_slope(steps, errors)
    order = SOLVERS[method].order
    assert abs(slope + order) < SLOPE_TOL, (
        f"slope {slope:.3f}, errors {errors}, steps {steps}"
    )
