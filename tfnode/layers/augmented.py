"""Dynamics with integrals carried along in the state: the change of
log-density of a continuous normalizing flow and the RNODE regularisers.

`AugmentedDynamics(func)` solves the dict state `{"y": y, ...}`: beside
`dy/dt = f(t, y)` it integrates, per sample,

- `"trace"`: `tr(df/dy)`, whose integral is the log-determinant of the flow map
  (Chen et al. 2018, Theorem 1), exactly (a batch Jacobian, for small states)
  or by Hutchinson's estimator `e^T (df/dy) e` (Grathwohl et al. 2019);
- `"kinetic_energy"`: `|f|^2`, and `"jacobian_norm"`: `|df/dy|_F^2` (exact) or
  its Hutchinson estimate `|e^T df/dy|^2`, the regularisers of Finlay et al.
  (2020), "How to train your neural ODE";
- `"noise"`: the Hutchinson noise `e`, with zero derivative, so that one draw
  holds for the whole solve, forward and backward, in every solver mode.

All of it comes from one tape around `func` (opened inside `call`, which the
solvers allow, forward and adjoint).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnode.layers.ode_func import ODEFunc

ESTIMATORS = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
ZERO = tf.UnconnectedGradients.ZERO


def per_sample_sum(x):
    """`[B, ...] -> [B]`: the sum of each sample's elements."""
    return tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), 1)


def draw_noise(kind, shape, dtype, seed):
    """Hutchinson noise of zero mean and unit covariance: Rademacher or normal."""
    if kind == "gaussian":
        return keras.random.normal(shape, dtype=dtype, seed=seed)
    bits = keras.random.randint(shape, 0, 2, dtype="int32", seed=seed)
    return tf.cast(2 * bits - 1, dtype)


def exact_jacobian_terms(func, t, y):
    """`(f, tr(df/dy), |df/dy|_F^2)` per sample, from every row of the Jacobian.

    One evaluation under a persistent tape, then one vector-Jacobian product
    per state component `i` (cotangent `e_i`) gives row `i` of every sample's
    Jacobian: for 2-D data this measured 1.5x faster than repeating the batch
    once per component, and it is plain ops that XLA compiles (a
    `batch_jacobian` retraces a `pfor` function on every eager call).
    """
    n = y.shape[1:].num_elements()
    if n is None:
        raise ValueError(
            "The exact trace needs a state of known size per sample. Received: "
            f"y with shape {y.shape}. Use `estimator='hutchinson'`."
        )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(y)
        dy = func(t, y)
    flat_shape = [tf.shape(y)[0], n]
    trace, frobenius = 0.0, 0.0
    for i in range(n):
        unit = tf.reshape(
            tf.one_hot(tf.fill(flat_shape[:1], i), n, dtype=y.dtype), tf.shape(y)
        )
        row = tape.gradient(dy, y, output_gradients=unit, unconnected_gradients=ZERO)
        row = tf.reshape(row, flat_shape)
        trace += row[:, i]
        frobenius += tf.reduce_sum(tf.square(row), 1)
    return dy, trace, frobenius


@keras.saving.register_keras_serializable(package="tfnode")
class AugmentedDynamics(ODEFunc):
    """`func` with its divergence and regularisers integrated along.

    Args:
        func: The dynamics, a Keras layer whose `call(t, y)` returns `dy/dt`
            for `y` of shape `[B, ...]`.
        trace: Whether to integrate `tr(df/dy)` (state key `"trace"`).
        kinetic_energy: Whether to integrate `|f|^2` (`"kinetic_energy"`).
        jacobian_norm: Whether to integrate the squared Frobenius norm of
            `df/dy` (`"jacobian_norm"`).
        estimator: `"exact"` (the batch Jacobian: one vector-Jacobian
            product per state component, for small states) or `"hutchinson"`
            (one product with the state's `"noise"`, unbiased). Defaults to
            `"exact"`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        t: Scalar tensor, or `[B]`.
        state: A dict with `"y"` (`[B, ...]`), a `[B]` entry per integral
            asked for, and `"noise"` (shape of `y`) with `"hutchinson"`.
            `initial_state` builds it.

    Returns:
        The dict of time derivatives (`"noise"`'s is zero).

    Example:

    >>> aug = tfnode.layers.AugmentedDynamics(tfnode.MLPODEFunc(), trace=True)
    >>> state = aug.initial_state(tf.zeros([8, 2]))
    >>> ys = tfnode.odeint_adjoint(aug, state, [0.0, 1.0])
    >>> ys["trace"].shape  # the log-determinant of the flow map, per sample
    TensorShape([2, 8])
    """

    def __init__(
        self,
        func,
        trace=False,
        kinetic_energy=False,
        jacobian_norm=False,
        estimator="exact",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"`estimator` must be one of {ESTIMATORS}. "
                f"Received: estimator={estimator!r}"
            )
        self.func = func
        self.trace = bool(trace)
        self.kinetic_energy = bool(kinetic_energy)
        self.jacobian_norm = bool(jacobian_norm)
        self.estimator = estimator

    @property
    def needs_noise(self):
        return self.estimator == "hutchinson" and (self.trace or self.jacobian_norm)

    def integrals(self):
        """The names of the `[B]` integrals in the state."""
        names = ("trace", "kinetic_energy", "jacobian_norm")
        return [n for n in names if getattr(self, n)]

    def initial_state(self, y, noise=None, seed=None, kind="rademacher"):
        """The state at the start: `y`, zero integrals, and the noise.

        Args:
            y: `[B, ...]`.
            noise: The Hutchinson noise, of the shape of `y`; drawn (`kind`,
                `seed`) if `None` and needed.
            seed: A seed or `keras.random.SeedGenerator` for the draw.
            kind: `"rademacher"` or `"gaussian"`.

        Returns:
            The dict state.
        """
        y = tf.convert_to_tensor(y)
        state = {"y": y}
        for name in self.integrals():
            state[name] = tf.zeros(tf.shape(y)[:1], y.dtype)
        if self.needs_noise:
            state["noise"] = (
                draw_noise(kind, tf.shape(y), y.dtype, seed)
                if noise is None
                else tf.cast(noise, y.dtype)
            )
        return state

    def call(self, t, state):
        y = state["y"]
        if not (self.trace or self.jacobian_norm):
            return self._derivatives(state, self.func(t, y), None, None)
        if self.estimator == "exact":
            return self._derivatives(state, *exact_jacobian_terms(self.func, t, y))
        noise = state["noise"]
        with tf.GradientTape() as tape:
            tape.watch(y)
            dy = self.func(t, y)
        # e^T df/dy: one vector-Jacobian product gives both estimates.
        vjp = tape.gradient(dy, y, output_gradients=noise, unconnected_gradients=ZERO)
        trace = per_sample_sum(vjp * noise)
        return self._derivatives(state, dy, trace, per_sample_sum(tf.square(vjp)))

    def _derivatives(self, state, dy, trace, frobenius):
        out = {"y": dy}
        if self.trace:
            out["trace"] = trace
        if self.kinetic_energy:
            out["kinetic_energy"] = per_sample_sum(tf.square(dy))
        if self.jacobian_norm:
            out["jacobian_norm"] = frobenius
        if "noise" in state:
            out["noise"] = tf.zeros_like(state["noise"])
        return out

    def get_config(self):
        config = {
            "func": keras.saving.serialize_keras_object(self.func),
            "trace": self.trace,
            "kinetic_energy": self.kinetic_energy,
            "jacobian_norm": self.jacobian_norm,
            "estimator": self.estimator,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["func"] = keras.saving.deserialize_keras_object(config["func"])
        return cls(**config)
