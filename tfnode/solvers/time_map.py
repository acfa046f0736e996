"""Linear time maps: solvers integrate in `u` with `t = t_start + u * span`.

Both drivers integrate over `u` in `[0, 1]` (the adaptive one over the whole
span, the fixed-grid one per interval). This one device handles reversed time
(`span < 0`) and per-sample grids (`t_start`, `span` of shape `[B]`) without a
branch in the solver loop. Runge–Kutta methods are invariant under linear
time maps, so the steps taken are those that would be taken in `t`.
"""

import tensorflow as tf


def broadcast_to_leaf(x, leaf):
    """Reshapes a scalar or `[B]` tensor to broadcast against `leaf` `[B, ...]`."""
    if x.shape.rank == 0:
        return x
    return tf.reshape(
        x, tf.concat([tf.shape(x), tf.ones([leaf.shape.rank - 1], tf.int32)], 0)
    )


def select(mask, a, b):
    """`tf.where(mask, a, b)` with a scalar or per-sample `[B]` mask on leaves
    `[B, ...]`."""
    return tf.where(broadcast_to_leaf(mask, a), a, b)


def nan_unless(ok, ys):
    """The outputs `ys` (`[T, ...]` per leaf), NaN where `ok` is false: `ok` is
    a scalar, or `[B]` against the batch axis of `[T, B, ...]` outputs."""
    if ok.shape.rank:
        ok = [broadcast_to_leaf(ok, y[0])[None] for y in ys]
    else:
        ok = [ok] * len(ys)
    return [tf.where(m, y, tf.constant(float("nan"), y.dtype)) for m, y in zip(ok, ys)]


def all_finite(leaves, per_sample=False):
    """Whether every element of `leaves` is finite: a scalar, or `[B]`, each
    sample's own elements, if `per_sample` (leading batch axis)."""
    if not per_sample:
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in leaves])
    per_leaf = [
        tf.reduce_all(tf.reshape(tf.math.is_finite(x), [tf.shape(x)[0], -1]), 1)
        for x in leaves
    ]
    return tf.reduce_all(tf.stack(per_leaf), 0)


def rescaled(func, t_start, span):
    """Returns `g(u, y) = span * func(t_start + u * span, y)` on flat lists."""

    def g(u, y):
        dy = func(t_start + u * span, y)
        return [broadcast_to_leaf(span, leaf) * leaf for leaf in dy]

    return g
