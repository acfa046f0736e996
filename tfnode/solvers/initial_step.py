"""The first step of adaptive methods: Hairer, Nørsett & Wanner (1993), §II.4."""

import tensorflow as tf


def initial_step(func, t0, y0, f0, error_order, rtol, atol, norm, max_step):
    """Returns `(dt, nfe)`: a first step size and the evaluations it cost (1).

    `d0 = |y0|`, `d1 = |f0|` and `d2 = |f(t0 + h0, y0 + h0 f0) - f0| / h0` in
    the weighted norm; `h0 = 0.01 d0 / d1`, `h1 = (0.01 / max(d1, d2))**(1 /
    (error_order + 1))` and the result is `min(100 h0, h1, max_step)`.
    `error_order + 1` is the power of `h` in the controlled error (5 for
    dopri5), the exponent of Hairer's DOPRI5 code (`IORD = 5`) and scipy's.
    """
    dtype = t0.dtype
    scale = [atol + rtol * tf.abs(y) for y in y0]
    d0 = norm([y / s for y, s in zip(y0, scale)])
    d1 = norm([f / s for f, s in zip(f0, scale)])
    small = tf.constant(1e-5, dtype)
    h0 = tf.where((d0 < small) | (d1 < small), tf.constant(1e-6, dtype), 0.01 * d0 / d1)
    h0 = tf.minimum(h0, max_step)
    y1 = [y + h0 * f for y, f in zip(y0, f0)]
    f1 = func(t0 + h0, y1)
    d2 = norm([(b - a) / s for a, b, s in zip(f0, f1, scale)]) / h0
    dmax = tf.maximum(d1, d2)
    h1 = tf.where(
        dmax <= 1e-15,
        tf.maximum(tf.constant(1e-6, dtype), h0 * 1e-3),
        (0.01 / tf.maximum(dmax, 1e-15)) ** (1.0 / (error_order + 1)),
    )
    dt = tf.minimum(tf.minimum(100 * h0, h1), max_step)
    # A non-finite start is reported by the driver; keep the step usable.
    dt = tf.where(tf.math.is_finite(dt), dt, max_step)
    return tf.stop_gradient(dt), 1
