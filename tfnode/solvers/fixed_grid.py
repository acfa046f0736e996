"""The fixed-step driver: each interval `[t[i], t[i+1]]` is split into the
fewest equal steps no longer than `step_size`, so every output time is hit
exactly and the method keeps its order at the outputs."""

import tensorflow as tf

from tfnode.solvers import checkpoints, runge_kutta
from tfnode.solvers.time_map import all_finite, nan_unless, rescaled
from tfnode.stats import SolverStats, Status


def solve(
    func,
    y0,
    t,
    tableau,
    *,
    step_size,
    max_num_steps,
    rescale=rescaled,
    records=None,
    per_sample_steps=False,
):
    """Solves from `t[0]` through `t` with steps of at most `step_size`.

    Args:
        func: `func(t, y) -> dy/dt` on flat lists of tensors.
        y0: list of tensors (leading batch axis `B` if `t` is `[T, B]`).
        t: `[T]` or `[T, B]` tensor; per-sample grids take, in each interval,
            the number of steps that the widest sample needs.
        tableau: a `ButcherTableau`.
        step_size: positive Python float, in units of `t`.
        max_num_steps: bound on the total number of steps.
        rescale: `rescale(func, t_start, span) -> g(u, y)` (see `time_map`).
        records: empty `checkpoints.Records` to fill with the steps (for
            `replay`), or `None`.
        per_sample_steps: whether statistics and failures are per sample (the
            steps are the same for every sample anyway): a sample that turns
            non-finite is NaN and `NONFINITE` alone.

    Returns:
        `ys`, a list of `[T, *leaf.shape]` tensors (NaN if the solve failed),
        and a `SolverStats` (fields `[B]` with `per_sample_steps`); with
        `records`, a third element: the filled records.
    """
    dtype = y0[0].dtype
    num_times = t.shape[0] if t.shape[0] is not None else tf.shape(t)[0]
    spans = t[1:] - t[:-1]  # [T-1] or [T-1, B]
    widest = tf.reshape(
        tf.reduce_max(tf.abs(tf.reshape(spans, [tf.shape(spans)[0], -1])), 1), [-1]
    )
    steps_per_interval = tf.maximum(
        tf.cast(tf.math.ceil(tf.stop_gradient(widest) / step_size), tf.int32), 1
    )
    total_steps = tf.reduce_sum(steps_per_interval)
    status = tf.where(
        all_finite(y0, per_sample_steps), Status.SUCCESS, Status.NONFINITE
    )
    status = tf.where(total_steps > max_num_steps, Status.MAX_STEPS_REACHED, status)

    ys = [
        tf.concat(
            [y[None], tf.zeros(tf.concat([[num_times - 1], tf.shape(y)], 0), dtype)], 0
        )
        for y in y0
    ]

    def body(i, j, y, ys, nfe, *rec):
        n = tf.gather(steps_per_interval, i)
        du = 1 / tf.cast(n, dtype)
        u = tf.cast(j, dtype) * du
        g = rescale(func, t[i], spans[i])
        y1, _, _ = runge_kutta.step(g, u, y, du, tableau, g(u, y))
        if rec:
            rec = (checkpoints.push(rec[0], tf.constant(True), i, u, du, y),)
        j = j + 1
        end = tf.equal(j, n)
        ys = [
            tf.tensor_scatter_nd_update(
                out, [[i + 1]], tf.where(end, v, out[i + 1])[None]
            )
            for out, v in zip(ys, y1)
        ]
        return (
            i + tf.cast(end, tf.int32),
            tf.where(end, 0, j),
            y1,
            ys,
            nfe + tableau.num_stages,
            *rec,
        )

    def cond(i, j, y, ys, nfe, *_):
        return (i < num_times - 1) & tf.reduce_any(status == 0)

    _, _, y_final, ys, nfe, *rec = tf.while_loop(
        cond,
        body,
        (0, 0, y0, ys, 0) + (() if records is None else (records,)),
        maximum_iterations=max_num_steps,
    )
    finite = all_finite(y_final, per_sample_steps)
    status = tf.where((status == 0) & ~finite, Status.NONFINITE, status)
    ys = nan_unless(status == 0, ys)
    if per_sample_steps:
        nfe = tf.fill(tf.shape(status), nfe)
    stats = SolverStats(nfe, nfe // tableau.num_stages, tf.zeros_like(status), status)
    return (ys, stats, *rec)


def replay(func, t, tableau, records, k, y, grad_ys=None):
    """Retakes the recorded step `k` from its start state `y`.

    Returns `(y1, dot)`: the step's end state and, with `grad_ys` (`[T, ...]`
    per leaf, cotangents of the outputs), `sum(grad_ys[i + 1] * y1)` if the
    step ends the interval `i` (whose end is output `i + 1`), else 0.
    Differentiable in `y`, `t` and whatever `func` reads.
    """
    i, u, du = records.interval[k], records.u[k], records.dt[k]
    g = rescaled(func, t[i], t[i + 1] - t[i])
    y1, _, _ = runge_kutta.step(g, u, y, du, tableau, g(u, y))
    if grad_ys is None:
        return y1, tf.zeros([], y[0].dtype)
    last = k >= records.num_steps - 1
    following = records.interval[tf.minimum(k + 1, tf.shape(records.interval)[0] - 1)]
    ends = last | (following != i)
    dot = tf.add_n([tf.reduce_sum(g_out[i + 1] * v) for g_out, v in zip(grad_ys, y1)])
    return y1, tf.where(ends, dot, tf.zeros_like(dot))
