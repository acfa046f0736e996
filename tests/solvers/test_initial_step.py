"""The first step of adaptive methods against scipy's, which implements the same
heuristic (Hairer, Nørsett & Wanner 1993, §II.4, as in Hairer's DOPRI5 code)."""

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

# scipy's pair for each tfnode pair: the same tableau, hence the same error order.
SCIPY_PAIR = {"bosh3": integrate.RK23, "dopri5": integrate.RK45}


def linear(t, y, xp):
    del t
    return LINEAR_A @ y if xp is np else tf.linalg.matvec(tf.constant(LINEAR_A), y)


def van_der_pol(t, y, xp):
    del t
    return xp.stack([y[1], 2.0 * (1.0 - y[0] ** 2) * y[1] - y[0]])


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
@pytest.mark.parametrize("rhs", [linear, van_der_pol])
@pytest.mark.parametrize("method", sorted(SCIPY_PAIR))
def test_first_step_matches_scipy(method, rhs, tol):
    """Over `t` in [0, 1] (tfnode's unit time is then `t` itself) the first step is
    scipy's to round-off. Both take `min(100 h0, h1, 1)`, and in these cases `h1 =
    (0.01 / max(d1, d2))**(1 / (error_order + 1))` is the smallest: with the
    method's order in place of the error order, the step is 1.5-10x larger."""
    y0 = np.array([2.0, 0.5, -1.0])[: 3 if rhs is linear else 2]
    scipy_step = SCIPY_PAIR[method](
        lambda t, y: rhs(t, y, np), 0.0, y0, 1.0, rtol=tol, atol=tol
    ).h_abs

    def func(t, y):
        return [rhs(t, y[0], tf)]

    f0 = func(tf.constant(0.0, tf.float64), [tf.constant(y0)])
    error_order = SOLVERS[method].error_order
    dt, nfe = initial_step(
        func,
        tf.constant(0.0, tf.float64),
        [tf.constant(y0)],
        f0,
        error_order,
        tol,
        tol,
        rms_norm,
        tf.constant(1.0, tf.float64),
    )
    assert nfe == 1
    assert_allclose(float(dt), scipy_step, rtol=1e-12)
    assert scipy_step < 0.99, "the case should not be capped by the unit interval"


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("method", sorted(SCIPY_PAIR))
def test_solver_starts_with_scipys_step(method, tol):
    """The driver passes the pair's error order: a solve that starts from scipy's
    first step (`first_step`) is the default solve, minus the heuristic's probe."""
    y0 = np.array([2.0, 0.5])
    scipy_step = SCIPY_PAIR[method](
        lambda t, y: van_der_pol(t, y, np), 0.0, y0, 1.0, rtol=tol, atol=tol
    ).h_abs
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
    ys_given, stats_given = solve(first_step=scipy_step)
    assert_allclose(ys.numpy(), ys_given.numpy(), rtol=1e-12, atol=0)
    assert int(stats.nfe) == int(stats_given.nfe) + 1
    assert int(stats.num_steps) == int(stats_given.num_steps)
