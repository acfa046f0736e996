"""The one generic explicit Runge–Kutta step, driven by a `ButcherTableau`.

States are flat lists of tensors (`odeint` flattens nested states once); the
time `t` and step `dt` are tensors of the state's dtype, scalars or, with
per-sample steps, of shape `[B]` (one per sample of the leading batch axis).
"""

import tensorflow as tf

from tfnode.solvers.time_map import broadcast_to_leaf


def combine(y, dt, weights, ks):
    """Returns `y + dt * sum_j weights[j] * ks[j]` leaf by leaf (zeros skipped)."""
    terms = [(w, k) for w, k in zip(weights, ks) if w != 0]
    out = []
    for leaf, *k_leaves in zip(y, *[k for _, k in terms]):
        increment = tf.add_n(
            [tf.constant(w, leaf.dtype) * k for (w, _), k in zip(terms, k_leaves)]
        )
        out.append(leaf + broadcast_to_leaf(dt, leaf) * increment)
    return out


def step(func, t, y, dt, tableau, k1):
    """Takes one step of `tableau` from `(t, y)` with step `dt`.

    Args:
        func: `func(t, y) -> dy/dt` on flat lists of tensors.
        t, dt: scalar tensors, or `[B]` for per-sample steps.
        y: list of tensors.
        tableau: a `ButcherTableau`.
        k1: `func(t, y)`, computed by the caller (it is the previous step's
            last stage for FSAL methods).

    Returns:
        `(y1, y_err, ks)`: the new state, the embedded error estimate `dt *
        sum_j b_err[j] k[j]` (`None` for methods without one) and the stages.
    """
    ks = [k1]
    y_stage = y
    for i in range(1, tableau.num_stages):
        y_stage = combine(y, dt, tableau.a[i], ks)
        t_stage = t + tf.constant(tableau.c[i], dt.dtype) * dt
        ks.append(func(t_stage, y_stage))
    # For FSAL methods the last stage is evaluated at the solution itself.
    y1 = y_stage if tableau.fsal else combine(y, dt, tableau.b, ks)
    y_err = None
    if tableau.b_err is not None:
        y_err = combine([tf.zeros_like(leaf) for leaf in y], dt, tableau.b_err, ks)
    return y1, y_err, ks
