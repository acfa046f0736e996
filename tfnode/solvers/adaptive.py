"""The adaptive driver: embedded Runge–Kutta steps under a PI controller, with
outputs at the requested times by dense-output interpolation."""

import ml_dtypes
import numpy as np
import tensorflow as tf

from tfnode.solvers import checkpoints, interpolation, runge_kutta
from tfnode.solvers.controller import per_sample_rms_norm, rms_norm
from tfnode.solvers.initial_step import initial_step
from tfnode.solvers.time_map import (
    all_finite,
    broadcast_to_leaf,
    nan_unless,
    rescaled,
    select,
)
from tfnode.stats import SolverStats, Status, in_xla_context

# Stands in for a non-finite error ratio so that the step is rejected and shrunk.
_LARGE_RATIO = 1e10
# A step below this many machine epsilons of the unit time `u` reached cannot
# advance it. Relative to `u`, not to the whole span: short steps early in a
# long span are legal.
_UNDERFLOW_EPS = 10.0


def solve(
    func,
    y0,
    t,
    tableau,
    controller,
    *,
    max_num_steps,
    first_step=None,
    norm=None,
    rescale=rescaled,
    k1=None,
    records=None,
    per_sample_steps=False,
    quadrature=None,
):
    """Solves from `t[0]` through `t`, returning `(ys, stats, next_step)`.

    Args:
        func: `func(t, y) -> dy/dt` on flat lists of tensors.
        y0: list of tensors (with a leading batch axis `B` if `t` is `[T, B]`
            or `per_sample_steps`).
        t: `[T]` or `[T, B]` tensor, validated by the caller.
        tableau: an adaptive `ButcherTableau`.
        controller: a `PIController`.
        max_num_steps: bound on attempted steps (per sample: on iterations).
        first_step: optional first step, in units of `t`.
        norm: error norm over a list of scaled leaves, `[B]` per sample with
            `per_sample_steps` (the adjoint passes a seminorm). Defaults to
            the RMS norm of the mode.
        rescale: `rescale(func, t_start, span) -> g(u, y)`, the dynamics in the
            unit time `u` (see `time_map.rescaled`; the adjoint passes its own).
        k1: the rescaled dynamics at `u = 0`, `rescale(func, t[0], span)(0, y0)`,
            if the caller has already evaluated it (counted in the NFE).
        records: empty `checkpoints.Records` to fill with the accepted steps
            (for `replay`), or `None`.
        per_sample_steps: whether each sample (leading axis of every leaf) has
            its own time `u`, step, error norm, accept/reject decision, counts
            and status. The loop runs until every sample is done or failed;
            a done or failed sample is frozen (it takes steps of size 0, and
            `func` still sees it, at its last time).
        quadrature: `(initial, increment)`, integrals to accumulate along the
            accepted steps: `increment(u, y, step, ks, accept)` returns the
            contribution of the step from `(u, y)` of size `step` (stages
            `ks`) for the samples in `accept`, added to `initial` (a list of
            tensors). The adjoint integrates its parameter adjoint so with
            per-sample steps.

    Returns:
        `(ys, stats, next_step)`: a list of `[T, *leaf.shape]` tensors (NaN if
        the solve failed; per sample with `per_sample_steps`), a `SolverStats`
        (fields `[B]` with `per_sample_steps`), and the step the controller
        proposes at `t[-1]` (in units of `t`; the larger of the step proposed
        before the last step was cut to end there and the one its error
        allows), to start a following solve (the adjoint's next interval).
        With `records`, then with `quadrature`, one more element each: the
        filled records, the integrals.
    """
    dtype = y0[0].dtype
    if norm is None:
        norm = per_sample_rms_norm if per_sample_steps else rms_norm
    num_times = t.shape[0] if t.shape[0] is not None else tf.shape(t)[0]
    t0, span = t[0], t[-1] - t[0]
    u_out = (t - t0) / span  # [T] or [T, B], from 0 to 1
    g = rescale(func, t0, span)
    one = tf.ones([], dtype)
    # The unit time: one for all, or one per sample.
    u0 = tf.zeros([tf.shape(y0[0])[0]] if per_sample_steps else [], dtype)
    if per_sample_steps and u_out.shape.rank == 1:
        u_out = tf.broadcast_to(u_out[:, None], [num_times, tf.shape(u0)[0]])

    if k1 is None:
        k1 = g(u0, y0)
    # Units of `t` per unit of `u`: each sample's own with per-sample steps (so
    # that a step given or returned in `t` does not depend on the batch).
    width = tf.abs(span) if per_sample_steps else tf.reduce_max(tf.abs(span))
    if first_step is None:
        dt, extra_nfe = initial_step(
            g, u0, y0, k1, tableau.order, controller.rtol, controller.atol, norm, one
        )
    else:
        # Step-size selection is not differentiated, this step's neither.
        dt = tf.stop_gradient(tf.minimum(tf.cast(first_step, dtype) / width, one))
        dt = tf.broadcast_to(dt, tf.shape(u0))
        extra_nfe = 0
    status = tf.where(
        all_finite(y0 + k1, per_sample_steps), Status.SUCCESS, Status.NONFINITE
    )

    ys = [
        tf.concat(
            [y[None], tf.zeros(tf.concat([[num_times - 1], tf.shape(y)], 0), dtype)], 0
        )
        for y in y0
    ]
    idx = tf.ones([tf.shape(u_out)[1]] if u_out.shape.rank == 2 else [], tf.int32)

    if u_out.shape.rank == 2:
        # Elementwise: the graph-mode variant's matmuls (below) may round a
        # sample differently by batch size, and per-sample steps promise not to.
        fill = _fill_per_sample
    elif in_xla_context():
        fill = _fill_shared
    else:
        fill = _fill_shared_graph
        dense = tf.constant(_dense_output_matrix(tableau), dtype)

    def body(
        u, dt, y, k1, prev_ratio, idx, ys, num_steps, num_rejected, status, *extra
    ):
        rec, quad = _split_extra(extra, records, quadrature)
        # A done or failed sample (per-sample steps) takes steps of size 0.
        active = (u < one) & (status == 0)
        proposed = dt
        last = dt >= one - u
        step = tf.where(active, tf.where(last, one - u, dt), tf.zeros_like(dt))
        y1, y_err, ks = runge_kutta.step(g, u, y, step, tableau, k1)
        ratio = tf.stop_gradient(controller.error_ratio(y, y1, y_err, norm))
        ratio_finite = tf.math.is_finite(ratio)
        ratio = tf.where(ratio_finite, ratio, _LARGE_RATIO)
        accept = (ratio <= 1) & active
        u_new = tf.where(last, one, u + step)
        if tableau.fsal:
            k_next = ks[-1]
        else:
            k_next = g(u_new, y1)
        # Where the step is 0 the outputs are not written; dividing by 1 there
        # keeps infinities out of the values and gradients that `where` drops.
        safe = tf.where(step > 0, step, tf.ones_like(step))
        if fill is _fill_shared_graph:
            # Graph mode: no inner loop,
            # no interpolant unless an output falls in the step.
            ks_dense = ks if tableau.fsal else ks + [k_next]
            idx, ys = fill(
                u_out, num_times, idx, ys, u, safe, u_new, y, ks_dense, accept, dense
            )
        else:
            coeffs = _dense_coeffs(tableau, y, y1, ks, k_next, step)
            idx, ys = fill(u_out, num_times, idx, ys, u, safe, u_new, coeffs, accept)

        dt_next = tf.stop_gradient(
            controller.next_dt(step, ratio, prev_ratio, accept, tableau.error_order)
        )
        if rec:
            rec = (checkpoints.push(rec[0], accept, 0, u, step, y),)
        if quad:
            increments = quadrature[1](u, y, step, ks, accept)
            quad = ([a + b for a, b in zip(quad[0], increments)],)
        done = accept & last
        eps = tf.constant(_eps(dtype), dtype)
        u_next = tf.where(accept, u_new, u)
        underflow = (
            active & ~done & (dt_next < _UNDERFLOW_EPS * eps * tf.maximum(u_next, eps))
        )
        status = tf.where(
            underflow & (status == 0),
            tf.where(ratio_finite, Status.STEP_SIZE_UNDERFLOW, Status.NONFINITE),
            status,
        )
        # At the end, the larger of the step proposed before the cut and the one
        # the cut step's error allows: an interval followed by a slightly wider
        # one (float32 grids) then still fits in one step. Frozen samples keep
        # theirs.
        dt_next = tf.where(done, tf.maximum(proposed, dt_next), dt_next)
        return (
            u_next,
            tf.where(active, dt_next, dt),
            [select(accept, a, b) for a, b in zip(y1, y)],
            [select(accept, a, b) for a, b in zip(k_next, k1)],
            tf.where(accept, ratio, prev_ratio),
            idx,
            ys,
            num_steps + tf.cast(accept, tf.int32),
            num_rejected + tf.cast(active & ~accept, tf.int32),
            status,
            *rec,
            *quad,
        )

    def cond(u, dt, y, k1, prev_ratio, idx, ys, num_steps, num_rejected, status, *_):
        return tf.reduce_any((u < one) & (status == 0))

    counts = tf.zeros(tf.shape(u0), tf.int32)
    loop_vars = (
        u0,
        dt,
        y0,
        k1,
        tf.ones_like(u0),
        idx,
        ys,
        counts,
        counts,
        status,
    )
    loop_vars += (() if records is None else (records,)) + (
        () if quadrature is None else (quadrature[0],)
    )
    u, dt, _, _, _, _, ys, num_steps, num_rejected, status, *extra = tf.while_loop(
        cond, body, loop_vars, maximum_iterations=max_num_steps
    )
    status = tf.where((status == 0) & (u < one), Status.MAX_STEPS_REACHED, status)
    ys = nan_unless(status == 0, ys)
    # Every attempt costs the same evaluations: no loop variable needed.
    per_step = tableau.num_stages - (1 if tableau.fsal else 0)
    nfe = 1 + extra_nfe + per_step * (num_steps + num_rejected)
    stats = SolverStats(nfe, num_steps, num_rejected, status)
    next_step = dt * width
    return (ys, stats, next_step, *extra)


def _split_extra(extra, records, quadrature):
    """The optional loop variables `(records?, integrals?)` as two tuples."""
    extra = list(extra)
    rec = (extra.pop(0),) if records is not None else ()
    quad = (extra.pop(0),) if quadrature is not None else ()
    return rec, quad


def replay(func, t, tableau, records, k, y, grad_ys=None):
    """Retakes the recorded step `k` from its start state `y`.

    Returns `(y1, dot)`: the step's end state and, with `grad_ys` (`[T, ...]`
    per leaf, cotangents of the outputs), the sum of `grad_ys * ys` over the
    outputs this step wrote, so that differentiating `dot` gives their
    vector-Jacobian product (0 without `grad_ys`). Differentiable in `y`, `t`
    and whatever `func` reads; the step sizes are constants, as in the solve.
    With per-sample steps, samples that did not take the step keep their state.
    """
    dtype = y[0].dtype
    t0, span = t[0], t[-1] - t[0]
    g = rescaled(func, t0, span)
    u, dt = records.u[k], records.dt[k]
    per_sample = isinstance(records.accepted, tf.Tensor)
    accepted = records.accepted[k] if per_sample else None
    if accepted is not None:
        # Samples that rejected this attempt retake it with a zero step: their
        # trial stages may be non-finite, and 0 * NaN would reach the gradient.
        dt = tf.where(accepted, dt, tf.zeros_like(dt))
    k1 = g(u, y)
    y1, _, ks = runge_kutta.step(g, u, y, dt, tableau, k1)
    if accepted is not None:
        y1 = [select(accepted, a, b) for a, b in zip(y1, y)]
    if grad_ys is None:
        return y1, tf.zeros([], dtype)
    one = tf.ones([], dtype)
    # The solve's end of the step: exactly 1 for the last step (cut to end
    # there), else `u + dt`.
    u_next = tf.where(dt >= one - u, one, u + dt)
    k_next = ks[-1] if tableau.fsal else g(u_next, y1)
    coeffs = _dense_coeffs(tableau, y, y1, ks, k_next, dt)
    u_out = (t - t0) / span  # [T] or [T, B], as the solve computes it
    if u.shape.rank == 1 and u_out.shape.rank == 1:
        u_out = u_out[:, None]  # one grid, per-sample steps: [T, 1] against [B]
    written = (u_out > u) & (u_out <= u_next)  # the outputs this step wrote
    if accepted is not None:
        written &= accepted
    # Samples that did not move have dt = 0: divide by 1 there, not write.
    theta = (u_out - u) / tf.where(dt > 0, dt, one)
    dot = tf.zeros([], dtype)
    for c, g_out in zip(coeffs, grad_ys):
        shape = tf.concat(
            [tf.shape(theta), tf.ones([g_out.shape.rank - theta.shape.rank], tf.int32)],
            0,
        )
        values = interpolation.evaluate([c], [tf.reshape(theta, shape)])[0]  # [T, ...]
        mask = tf.reshape(written, shape)
        dot += tf.reduce_sum(tf.where(mask, g_out, tf.zeros([], dtype)) * values)
    return y1, dot


def _dense_coeffs(tableau, y, y1, ks, k_next, dt):
    """The interpolant of a step from `y` to `y1` (stages `ks`, `f(y1) = k_next`):
    quartic where the tableau gives a midpoint, else cubic Hermite."""
    if tableau.b_mid is not None:
        y_mid = runge_kutta.combine(y, dt, tableau.b_mid, ks)
        return interpolation.quartic(y, y1, y_mid, ks[0], k_next, dt)
    return interpolation.hermite(y, y1, ks[0], k_next, dt)


def _eps(dtype):
    # ml_dtypes (a TensorFlow dependency) also knows bfloat16, which np.finfo rejects.
    return float(ml_dtypes.finfo(dtype.as_numpy_dtype).eps)


def _fill_shared(u_out, num_times, idx, ys, u, dt, u_new, coeffs, accept):
    """Writes the outputs `u_out[idx], ...` that fall in the step `(u, u_new]`."""

    def pending(i):
        return (
            accept
            & (i < num_times)
            & (tf.gather(u_out, tf.minimum(i, num_times - 1)) <= u_new)
        )

    def body(i, ys):
        theta = (tf.gather(u_out, i) - u) / dt
        values = interpolation.evaluate(coeffs, [theta] * len(ys))
        ys = [
            tf.tensor_scatter_nd_update(y, [[i]], v[None]) for y, v in zip(ys, values)
        ]
        return i + 1, ys

    return tf.while_loop(
        lambda i, ys: pending(i), body, (idx, ys), maximum_iterations=num_times
    )


def _fill_per_sample(u_out, num_times, idx, ys, u, dt, u_new, coeffs, accept):
    """As `_fill_shared`, with a next-output index per sample (`u_out` `[T, B]`)."""
    cols = tf.range(tf.shape(u_out)[1])

    def next_u(i):
        return tf.gather_nd(
            u_out, tf.stack([tf.minimum(i, num_times - 1), cols], 1)
        )  # [B]

    def pending(i):
        return accept & (i < num_times) & (next_u(i) <= u_new)

    def body(i, ys):
        todo = pending(i)
        theta = (next_u(i) - u) / dt  # [B]
        values = interpolation.evaluate(
            coeffs, [broadcast_to_leaf(theta, y[0]) for y in ys]
        )
        indices = tf.stack([tf.minimum(i, num_times - 1), cols], 1)  # [B, 2]
        new_ys = []
        for y, v in zip(ys, values):
            current = tf.gather_nd(y, indices)
            update = tf.where(broadcast_to_leaf(todo, v), v, current)
            new_ys.append(tf.tensor_scatter_nd_update(y, indices, update))
        return i + tf.cast(todo, tf.int32), new_ys

    return tf.while_loop(
        lambda i, ys: tf.reduce_any(pending(i)),
        body,
        (idx, ys),
        maximum_iterations=num_times,
    )


def _dense_output_matrix(tableau):
    """`P` `[4, s']`: the step's interpolant is `y + dt * sum_p theta^(p+1) (P k)[p]`
    over the stages `k` (plus `f(y1)` as an extra stage for non-FSAL methods).

    The rows are `interpolation.quartic`/`hermite` (the one source of the formulas)
    applied to the stage weights: with `y = 0`, `dt = 1` and each quantity written as
    its weights over the stages, their coefficients are linear in those weights."""
    s = tableau.num_stages
    n = s if tableau.fsal else s + 1
    e1, e_next = np.eye(n)[0], np.eye(n)[-1]
    b = np.pad(np.asarray(tableau.b, float), (0, n - s))
    zero = np.zeros(n)
    if tableau.b_mid is None:
        [coeffs] = interpolation.hermite([zero], [b], [e1], [e_next], 1.0)
        coeffs = coeffs + [zero]  # cubic: no theta^4 term
    else:
        b_mid = np.pad(np.asarray(tableau.b_mid, float), (0, n - s))
        [coeffs] = interpolation.quartic([zero], [b], [b_mid], [e1], [e_next], 1.0)
    return np.stack(coeffs[1:])


def _fill_shared_graph(u_out, num_times, idx, ys, u, dt, u_new, y, ks, accept, dense):
    """Graph-mode `_fill_shared`: all the outputs of the step in one scatter, with the
    interpolant as two small matmuls over the stacked stages; skipped (`tf.cond`) when
    no output falls in the step. Uses dynamic shapes, so not under XLA."""
    m = tf.reduce_sum(
        tf.cast(accept & (tf.range(num_times) >= idx) & (u_out <= u_new), tf.int32)
    )

    def write():
        rows = tf.range(idx, idx + m)
        theta = (tf.gather(u_out, rows) - u) / dt  # [m]
        powers = theta[:, None] ** tf.constant([1, 2, 3, 4], theta.dtype)  # [m, 4]
        weights = dt * tf.matmul(powers, dense)  # [m, s']
        out = []
        for i, leaf in enumerate(ys):
            stages = tf.reshape(tf.stack([k[i] for k in ks]), [len(ks), -1])
            values = tf.reshape(y[i], [1, -1]) + tf.matmul(weights, stages)
            values = tf.reshape(values, tf.concat([[m], tf.shape(y[i])], 0))
            out.append(tf.tensor_scatter_nd_update(leaf, rows[:, None], values))
        return idx + m, out

    return tf.cond(m > 0, write, lambda: (idx, ys))
