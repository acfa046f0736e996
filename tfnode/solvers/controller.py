"""`PIController`: accepts or rejects steps and proposes the next step size."""

from __future__ import annotations

import dataclasses

import tensorflow as tf


def rms_norm(leaves):
    """Root-mean-square over every element of every tensor in `leaves`."""
    total = tf.add_n([tf.reduce_sum(tf.square(x)) for x in leaves])
    count = sum(tf.cast(tf.size(x), total.dtype) for x in leaves)
    return tf.sqrt(total / count)


@dataclasses.dataclass(frozen=True)
class PIController:
    """A proportional–integral step-size controller.

    The error ratio of a step is `norm(y_err / (atol + rtol * max(|y0|, |y1|)))`;
    a step is accepted when it is at most 1. The next step is
    `dt * clip(safety * ratio**(-beta1 / k) * prev_ratio**(beta2 / k), dfactor,
    ifactor)` with `k = error_order + 1`; after a rejection the integral term
    is dropped and the step never grows.

    The defaults are the gains of Hairer's DOPRI5 code, `ratio**-0.17 *
    prev_ratio**0.04` for its `k = 5` (`beta1 = 0.85, beta2 = 0.2` here; unlike
    that code, the first step has no integral term and a rejected step shrinks
    by `safety * ratio**(-1 / k)`). Gustafsson's `beta1 = 0.7, beta2 = 0.4`,
    tfnode's default up to 0.1.0, smooth the step sequence more but grow the
    step slowly while errors are far below tolerance, as they are in the first
    steps of a neural ODE's solve: dopri5 took 38 evaluations instead of 32 on
    `benchmarks/solver_forward.py` at 1e-6, and over the 13 DETEST problems at
    rtol = atol = 1e-4, 1e-6 and 1e-8, 1.09-1.19x the evaluations of scipy's
    RK45 (the same pair and norm) where these gains take 1.00-1.01x.

    References:
        Hairer, Nørsett & Wanner (1993), "Solving Ordinary Differential
        Equations I", §II.4 (and the DOPRI5 code); Gustafsson (1991), "Control
        theoretic techniques for stepsize selection in explicit Runge–Kutta
        methods", ACM TOMS 17(4).
    """

    rtol: float
    atol: float
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta1: float = 0.85
    beta2: float = 0.2

    def error_ratio(self, y0, y1, y_err, norm=rms_norm):
        scaled = []
        for a, b, e in zip(y0, y1, y_err):
            tol = self.atol + self.rtol * tf.maximum(tf.abs(a), tf.abs(b))
            scaled.append(e / tf.cast(tol, e.dtype))
        return norm(scaled)

    def next_dt(self, dt, ratio, prev_ratio, accept, error_order):
        """Proposes the next step; `ratio` must be finite (the caller maps
        non-finite errors to a large value)."""
        dtype = dt.dtype
        k = tf.constant(error_order + 1, dtype)
        tiny = tf.constant(1e-10, dtype)
        ratio = tf.maximum(ratio, tiny)
        prev_ratio = tf.maximum(prev_ratio, tiny)
        safety = tf.constant(self.safety, dtype)
        grow = safety * ratio ** (-self.beta1 / k) * prev_ratio ** (self.beta2 / k)
        grow = tf.clip_by_value(grow, self.dfactor, self.ifactor)
        shrink = tf.clip_by_value(safety * ratio ** (-1 / k), self.dfactor, 1.0)
        return dt * tf.where(accept, grow, shrink)
