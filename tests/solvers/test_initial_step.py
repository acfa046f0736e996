"""The first step of adaptive methods against scipy's implementation of the same
heuristic (Hairer, Nørsett & Wanner 1993, §II.4)."""

import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose
from problems import LINEAR_A
from scipy import integrate

import tfnode
from tfnode.solvers import SOLVERS
from tfnode.solvers.controller import rms_norm
from tfnode.solvers.initial_step import initial_step

# scipy's pair for each tfnode pair: the same tableau.
SCIPY_PAIR = {"bosh3": integrate.RK23, "dopri5": integrate.RK45}


def linear(t, y, xp):
    del t
    return LINEAR_A @ y if xp is np else tf.linalg.matvec(tf.constant(LINEAR_A), y)


def van_der_pol(t, y, xp):
    del t
    return xp.stack([y[1], 2.0 * (1.0 - y[0] ** 2) * y[1] - y[0]])


def book_first_step(method, rhs, y0, tol):
    """scipy's first step over [0, 1] with the book's exponent: scipy computes `h1 =
    (0.01 / max(d1, d2))**(1 / (error_estimator_order + 1))`, so setting that
    attribute to the method's order gives `1 / (order + 1)`."""
    pair = type("BookPair", (SCIPY_PAIR[method],), {})
    pair.error_estimator_order = SOLVERS[method].order
    return pair(lambda t, y: rhs(t, y, np), 0.0, y0, 1.0, rtol=tol, atol=tol).h_abs


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
@pytest.mark.parametrize("rhs", [linear, van_der_pol])
@pytest.mark.parametrize("method", sorted(SCIPY_PAIR))
def test_first_step_matches_scipy(method, rhs, tol):
    """Over `t` in [0, 1] (tfnode's unit time is then `t` itself) the heuristic is
    scipy's to round-off, given the same exponent. In these cases `h1` is the
    smallest of `min(100 h0, h1, 1)`, so the exponent matters."""
    y0 = np.array([2.0, 0.5, -1.0])[: 3 if rhs is linear else 2]

    def func(t, y):
        return [rhs(t, y[0], tf)]

    zero = tf.constant(0.0, tf.float64)
    dt, nfe = initial_step(
        func,
        zero,
        [tf.constant(y0)],
        func(zero, [tf.constant(y0)]),
        SOLVERS[method].order,
        tol,
        tol,
        rms_norm,
        tf.constant(1.0, tf.float64),
    )
    expected = book_first_step(method, rhs, y0, tol)
    assert nfe == 1
    assert_allclose(float(dt), expected, rtol=1e-12)
    assert expected < 0.99, "the case should not be capped by the unit interval"


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("method", sorted(SCIPY_PAIR))
def test_solver_starts_with_the_book_step(method, tol):
    """The driver passes the method's order (`initial_step`'s docstring says why):
    a solve given that first step (`first_step`) is the default solve, minus the
    heuristic's probe evaluation. With the error order it would start 1.5-10x
    smaller and take other steps."""
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
    given = book_first_step(method, van_der_pol, y0, tol)
    ys_given, stats_given = solve(first_step=given)
    assert_allclose(ys.numpy(), ys_given.numpy(), rtol=1e-12, atol=0)
    assert int(stats.nfe) == int(stats_given.nfe) + 1
    assert int(stats.num_steps) == int(stats_given.num_steps)
