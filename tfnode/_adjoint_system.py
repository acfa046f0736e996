"""The adjoint system of `odeint_adjoint`'s backward solve, per output
interval in unit time: the augmented dynamics of `(y, a[, a_params])`, and,
with per-sample steps, the parameter adjoint as a quadrature over each
sample's accepted steps (it has no batch axis to step per sample)."""

from __future__ import annotations

import tensorflow as tf

from tfnode.solvers import runge_kutta
from tfnode.solvers.time_map import broadcast_to_leaf, select


def augmented(dynamics, param_values, num_leaves, per_sample_steps):
    """Returns `make_g(t_start, span)`: the adjoint system of one interval in
    unit time `u`, `t = t_start + u * span`. With per-sample spans `[B]` the
    parameter adjoint sums each sample's contribution times its own span.

    With per-sample steps the system is `(y, a)` alone: samples accept or
    reject steps of their own sizes, so the parameter adjoint, a sum over
    samples, is integrated apart from it (`parameter_quadrature`) once each
    step's accepting samples are known."""
    targets = dynamics.vjp_targets(param_values)
    func = dynamics.flat_func(param_values)

    def make_g(t_start, span):
        def g(u, state):
            y, adj_y = state[:num_leaves], state[num_leaves : 2 * num_leaves]
            scaled_adj = [broadcast_to_leaf(span, a) * a for a in adj_y]
            sources = y if per_sample_steps else y + list(targets)
            with tf.GradientTape() as tape:
                tape.watch(sources)
                dy = func(t_start + u * span, y)
            vjps = tape.gradient(
                dy,
                sources,
                output_gradients=scaled_adj,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return [broadcast_to_leaf(span, d) * d for d in dy] + [-v for v in vjps]

        return g

    return make_g


def parameter_quadrature(dynamics, param_values, num_leaves, tableau):
    """Returns `make_increment(t_start, span)`: the parameter adjoint's
    integral over a step of per-sample steps, for the `quadrature` of
    `adaptive.solve`: `-sum_i b_i step_b span_b a_i,b . df/dparams(t_i,b,
    y_i,b)` over the stages `i` with a nonzero weight `b_i`, summed over the
    samples that took the step. One vector-Jacobian product per such stage,
    its cotangent already weighted and masked, so the sum over samples is
    exact; each costs an evaluation of `func` again (5 per dopri5 step)."""
    targets = dynamics.vjp_targets(param_values)
    func = dynamics.flat_func(param_values)

    def make_increment(t_start, span):
        def increment(u, state, step, ks, accept):
            weight = step * tf.cast(accept, step.dtype) * span  # [B]
            total = [tf.zeros_like(p) for p in param_values]
            for i, b_i in enumerate(tableau.b):
                if b_i == 0:
                    continue
                stage = state
                if i:
                    stage = runge_kutta.combine(state, step, tableau.a[i], ks[:i])
                    # Samples that reject the step weigh 0, but their trial
                    # stages may be non-finite (0 * NaN = NaN): use the start.
                    stage = [select(accept, a, b) for a, b in zip(stage, state)]
                y, adj_y = stage[:num_leaves], stage[num_leaves:]
                u_i = u + tf.constant(tableau.c[i], step.dtype) * step
                cotangents = [broadcast_to_leaf(b_i * weight, a) * a for a in adj_y]
                with tf.GradientTape() as tape:
                    tape.watch(targets)
                    dy = func(t_start + u_i * span, y)
                vjps = tape.gradient(
                    dy,
                    list(targets),
                    output_gradients=cotangents,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                total = [a - v for a, v in zip(total, vjps)]
            return total

        return increment

    return make_increment
