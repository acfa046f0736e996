"""`PIController`: accepts or rejects steps and proposes the next step size."""

from __future__ import annotations

import dataclasses

import tensorflow as tf


def rms_norm(leaves):
    """Root-mean-square over every element of every tensor in `leaves`."""
    total = tf.add_n([tf.reduce_sum(tf.square(x)) for x in leaves])
    count = sum(tf.cast(tf.size(x), total.dtype) for x in leaves)
    return tf.sqrt(total / count)


def per_sample_rms_norm(leaves):
    """`[B]`: the root-mean-square of each sample's own elements (the leading
    axis of every tensor in `leaves` is the batch)."""
    total = tf.add_n(
        [
            tf.reduce_sum(tf.reshape(tf.square(x), [tf.shape(x)[0], -1]), 1)
            for x in leaves
        ]
    )
    count = sum(tf.cast(tf.size(x[0]), total.dtype) for x in leaves)
    return tf.sqrt(total / count)


@dataclasses.dataclass(frozen=True)
class PIController:
    """A proportional–integral step-size controller.

    The error ratio of a step is `norm(y_err / (atol + rtol * max(|y0|, |y1|)))`;
    a step is accepted when it is at most 1. The next step is
    `dt * clip(safety * ratio**(-beta1 / k) * prev_ratio**(beta2 / k), dfactor,
    ifactor)` with `k = error_order + 1` and `prev_ratio` the ratio of the last
    accepted step (1 before the first); a rejected step is retried at
    `dt * clip(safety * ratio**(-1 / k), dfactor, 1)`.

    The default gains are those of Hairer's DOPRI5 code, `ratio**-0.17 *
    prev_ratio**0.04` for its `k = 5`. Unlike that code, ratios are floored at
    1e-10 (not 1e-4), the first step has no integral term, the gains scale
    with `1 / k` for other orders, and only the retried step, not the one
    after it, is kept from growing after a rejection. Gustafsson's `beta1 =
    0.7, beta2 = 0.4`, tfnode's default up to 0.1.0, smooth the step sequence
    more but grow the step slowly while errors are far below tolerance, as
    they are in the first steps of a neural ODE's solve: on
    `benchmarks/solver_forward.py` at 1e-6, dopri5 took 38 evaluations (max
    error 5.5e-7) where these gains take 32 (5.0e-6); in total over the 13
    DETEST problems at rtol = atol = 1e-4, 1e-6 and 1e-8, they took 1.09-1.20x
    the evaluations of scipy's RK45 (the same pair and norm), these gains
    1.00-1.01x (0.83-1.17x per problem).

    Args:
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        safety: Factor on every proposed step. Defaults to `0.9`.
        ifactor: Largest growth of the step. Defaults to `10.0`.
        dfactor: Largest shrinkage of the step. Defaults to `0.2`.
        beta1: Gain on the step's error ratio, in units of `1 / k`.
            Defaults to `0.85`.
        beta2: Gain on the last accepted step's error ratio, in units of
            `1 / k`. Defaults to `0.2`.

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
