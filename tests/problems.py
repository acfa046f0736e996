"""Test problems: ODEs with closed-form solutions and a DETEST subset.

Right-hand sides are written once against an array namespace `xp` (`numpy`
or `tensorflow`), so the same formula feeds `tfnode.odeint` and
`scipy.integrate.solve_ivp`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from scipy import integrate, linalg

# --------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------

# A damped rotation coupled to a decaying third component: complex eigenvalues
# -0.1 ± 1.0i and -0.5, so solutions oscillate without growing or becoming stiff.
LINEAR_A = np.array(
    [
        [-0.1, 1.0, 0.0],
        [-1.0, -0.1, 0.2],
        [0.0, 0.0, -0.5],
    ]
)


def linear_func(a=LINEAR_A):
    """`dy/dt = A y` on states `[..., D]` (row vectors: `y @ A^T`)."""

    def func(t, y):
        return tf.linalg.matvec(tf.constant(a, y.dtype), y)

    return func


def linear_exact(y0, t0, t, a=LINEAR_A):
    """`y(t) = expm(A (t - t0)) y0`
    for `y0` `[..., D]` and times `t` `[T]`: `[T, ..., D]`."""
    y0 = np.asarray(y0, np.float64)
    return np.stack(
        [y0 @ linalg.expm(a * (ti - t0)).T for ti in np.asarray(t, np.float64)]
    )


def cos_growth(t, y):
    """`dy/dt = cos(t) y`, a non-autonomous linear ODE;
    `t` scalar or `[B]` for `y` `[B, ...]`."""
    return _to_leaf(tf.cos(t), y) * y


def cos_growth_exact(y0, t0, t):
    """`y(t) = y0 exp(sin t - sin t0)`,
    for `t` `[T]` or `[T, B]` (`t0` `[B]`, `y0` `[B, ...]`)."""
    y0, t0, t = (np.asarray(x, np.float64) for x in (y0, t0, t))
    growth = np.exp(np.sin(t) - np.sin(t0))  # [T] or [T, B]
    return growth.reshape(growth.shape + (1,) * (y0.ndim - growth.ndim + 1)) * y0


def _to_leaf(x, y):
    """Reshapes a scalar or `[B]` time-like tensor
    to broadcast against `y` `[B, ...]`."""
    if x.shape.rank == 0:
        return x
    return tf.reshape(x, [-1] + [1] * (y.shape.rank - 1))


def oscillator(t, state):
    """The harmonic oscillator `x'' = -x` on the nested state `(x, {"v": v})`."""
    x, v = state[0], state[1]["v"]
    return (v, {"v": -x})


def oscillator_exact(x0, v0, t):
    """`(x(t), v(t))` of `oscillator` from `t = 0`, each `[T, *x0.shape]`."""
    t = np.asarray(t, np.float64).reshape((-1,) + (1,) * np.ndim(x0))
    x = x0 * np.cos(t) + v0 * np.sin(t)
    v = v0 * np.cos(t) - x0 * np.sin(t)
    return x, v


# --------------------------------------------------------------------------------------
# DETEST (Hull, Enright, Fellen & Sedgwick 1972, "Comparing numerical methods for
# ordinary differential equations"), non-stiff classes A (scalar), B (small
# systems), D (orbits).
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DetestProblem:
    name: str
    rhs: Callable  # rhs(t, y, xp) -> dy/dt, y a vector [D]
    y0: tuple[float, ...]
    t1: float = 20.0

    def func(self, t, y):
        """The right-hand side for `tfnode.odeint`."""
        return self.rhs(t, y, tf)

    def reference(self, t, rtol=1e-12, atol=1e-12):
        """A scipy DOP853 solution at times `t` (from `t[0]`), `[T, D]` in float64."""
        sol = integrate.solve_ivp(
            lambda s, y: self.rhs(s, y, np),
            (t[0], t[-1]),
            np.asarray(self.y0, np.float64),
            method="DOP853",
            t_eval=t,
            rtol=rtol,
            atol=atol,
        )
        assert sol.success, sol.message
        return sol.y.T


def _stack(xp, values):
    return xp.stack(values)


def _a1(t, y, xp):
    return -y


def _a2(t, y, xp):
    return -(y**3) / 2


def _a3(t, y, xp):
    return y * xp.cos(t)


def _a4(t, y, xp):
    return y / 4 * (1 - y / 20)


def _a5(t, y, xp):
    return (y - t) / (y + t)


def _b1(t, y, xp):
    return _stack(xp, [2 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])])


def _b2(t, y, xp):
    return _stack(xp, [-y[0] + y[1], y[0] - 2 * y[1] + y[2], y[1] - y[2]])


def _b3(t, y, xp):
    return _stack(xp, [-y[0], y[0] - y[1] ** 2, y[1] ** 2])


def _b4(t, y, xp):
    r = xp.sqrt(y[0] ** 2 + y[1] ** 2)
    return _stack(xp, [-y[1] - y[0] * y[2] / r, y[0] - y[1] * y[2] / r, y[0] / r])


def _b5(t, y, xp):
    return _stack(xp, [y[1] * y[2], -y[0] * y[2], -0.51 * y[0] * y[1]])


def _two_body(t, y, xp):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return _stack(xp, [y[2], y[3], -y[0] / r3, -y[1] / r3])


def _orbit_start(eccentricity):
    """Perihelion of a Kepler orbit
    with unit semi-major axis and the given eccentricity."""
    e = eccentricity
    return (1 - e, 0.0, 0.0, float(np.sqrt((1 + e) / (1 - e))))


DETEST = (
    DetestProblem("A1", _a1, (1.0,)),
    DetestProblem("A2", _a2, (1.0,)),
    DetestProblem("A3", _a3, (1.0,)),
    DetestProblem("A4", _a4, (1.0,)),
    DetestProblem("A5", _a5, (4.0,)),
    DetestProblem("B1", _b1, (1.0, 3.0)),
    DetestProblem("B2", _b2, (2.0, 0.0, 1.0)),
    DetestProblem("B3", _b3, (1.0, 0.0, 0.0)),
    DetestProblem("B4", _b4, (3.0, 0.0, 0.0)),
    DetestProblem("B5", _b5, (0.0, 1.0, 1.0)),
    DetestProblem("D1", _two_body, _orbit_start(0.1)),
    DetestProblem("D3", _two_body, _orbit_start(0.5)),
    DetestProblem("D5", _two_body, _orbit_start(0.9)),
)
"""The subset used by `tests/solvers/test_detest.py`."""
