"""The first step of adaptive methods against scipy's implementation of the
heuristic (Hairer, Nørsett & Wanner 1993, §II.4), with scipy's exponent set to the
book's."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_allclose
from problems import LINEAR_A, linear_func
from scipy import integrate

import tfnode
from tfnode.solvers import SOLVERS
from tfnode.solvers.controller import rms_norm
from tfnode.solvers.initial_step import initial_step

ADAPTIVE = sorted(name for name, tableau in SOLVERS.items() if tableau.adaptive)
# Both sides evaluate the same float64 formula: measured equal to the last bit; the
# margin allows another summation order in the norms.
ROUND_OFF = 1e-12
# Smallest ratio of the book's first step to the error order's in these cases: 1.46
# (dopri5 and tsit5, linear, 1e-3); a wrong exponent gives 1.
EXPONENT_GAP = 1.3


def linear(t, y, xp):
    return LINEAR_A @ y if xp is np else linear_func()(t, y)


def van_der_pol(t, y, xp):
    del t
    return xp.stack([y[1], 2.0 * (1.0 - y[0] ** 2) * y[1] - y[0]])


def scipy_first_step(rhs, y0, tol, order):
    """scipy's first step over [0, 1] with `h1 = (0.01 / max(d1, d2))**(1 / (order +
    1))`. scipy reads only the pair's `error_estimator_order` for it (using it as
    `order`), so one pair class serves every method."""
    pair = type("Pair", (integrate.RK45,), {"error_estimator_order": order})
    return pair(lambda t, y: rhs(t, y, np), 0.0, y0, 1.0, rtol=tol, atol=tol).h_abs


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
@pytest.mark.parametrize("rhs", [linear, van_der_pol])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_first_step_matches_scipy(method, rhs, tol):
    """Over `t` in [0, 1] (tfnode's unit time is then `t` itself) the heuristic with
    the method's order is scipy's with the same exponent, to round-off."""
    y0 = np.array([2.0, 0.5, -1.0])[: 3 if rhs is linear else 2]

    calls = []

    def func(t, y):
        calls.append(t)
        return [rhs(t, y[0], tf)]

    zero = tf.constant(0.0, tf.float64)
    f0 = func(zero, [tf.constant(y0)])
    calls.clear()
    tableau = SOLVERS[method]
    dt, nfe = initial_step(
        func,
        zero,
        [tf.constant(y0)],
        f0,
        tableau.order,
        tol,
        tol,
        rms_norm,
        tf.constant(1.0, tf.float64),
    )
    expected = scipy_first_step(rhs, y0, tol, tableau.order)
    assert nfe == len(calls) == 1
    assert_allclose(float(dt), expected, rtol=ROUND_OFF)
    # `h1` decides these cases, so the exponent matters: with the error order (scipy's
    # and the DOPRI5 code's choice) the step is 1.5-10x smaller here.
    other = scipy_first_step(rhs, y0, tol, tableau.error_order)
    assert expected > EXPONENT_GAP * other


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_solver_starts_with_the_book_step(method, tol):
    """The driver passes the method's order (`initial_step`'s docstring says why):
    a solve given that first step (`first_step`) is the default solve, minus the
    heuristic's probe evaluation. With the error order it would start 1.6-5.7x
    smaller here and take different steps."""
    y0 = np.array([2.0, 0.5])
    t = tf.constant([0.0, 0.3, 1.0], tf.float64)

    def solve(**options):
        return tfnode.odeint(
            lambda t, y: van_der_pol(t, y, tf),
            tf.constant(y0),
            t,
            method=method,
            rtol=tol,
            atol=tol,
            return_stats=True,
            **options,
        )

    ys, stats = solve()
    given = scipy_first_step(van_der_pol, y0, tol, SOLVERS[method].order)
    ys_given, stats_given = solve(first_step=given)
    assert_allclose(ys.numpy(), ys_given.numpy(), rtol=ROUND_OFF)
    assert int(stats.nfe) == int(stats_given.nfe) + 1
    assert int(stats.num_steps) == int(stats_given.num_steps)
