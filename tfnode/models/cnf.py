"""Continuous normalizing flows (Chen et al. 2018, §4; Grathwohl et al. 2019,
"FFJORD"): `CNF`, a Keras density model trained by maximum likelihood.

The flow maps base samples `z ~ N(0, I)` at `t0` to data `x` at `t1` along
`dy/dt = f(t, y)`; along the way `d log p(y(t))/dt = -tr(df/dy)`, so

    log p(x) = log N(z; 0, I) - int_{t0}^{t1} tr(df/dy(t, y(t))) dt,

with `z` and the integral from one solve of `tfnode.layers.AugmentedDynamics`
backwards from `x`. Training may add the RNODE regularisers (Finlay et al.
2020): the kinetic energy and the Jacobian's Frobenius norm, integrated in
the same solve.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfnode import _validation, solvers
from tfnode.adjoint import odeint_adjoint
from tfnode.layers.augmented import ESTIMATORS, NOISES, AugmentedDynamics
from tfnode.layers.neural_ode import LastValue
from tfnode.layers.ode_func import ConcatSquashODEFunc
from tfnode.odeint import odeint

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z):
    """`[B, D] -> [B]`: `log N(z; 0, I)`."""
    dim = tf.cast(tf.shape(z)[-1], z.dtype)
    return -0.5 * (tf.reduce_sum(tf.square(z), -1) + dim * _LOG_2PI)


@keras.saving.register_keras_serializable(package="tfnode")
class CNF(keras.Model):
    """A continuous normalizing flow on `R^dim` with a standard normal base.

    `fit(x)` minimises the negative log-likelihood in nats per sample (plus
    the weighted regularisers); logs show `loss`, `nll`, and the solver's
    `nfe` (and `backward_nfe` with the adjoint) of the last batch.

    Args:
        dim: The data dimension.
        dynamics: The flow's `f(t, y)`, any Keras layer with `call(t, y)`
            (`tfnode.ODEFunc`), taking `t` as a scalar or `[B]`. Defaults to
            a `tfnode.layers.ConcatSquashODEFunc(hidden_units)`.
        trace: How `tr(df/dy)` is computed: `"exact"` (one vector-Jacobian
            product per dimension, for small `dim`) or `"hutchinson"` (one
            product with a noise vector drawn per batch and held for the
            whole solve, forward and backward; unbiased). Defaults to
            `"exact"`.
        noise: Hutchinson noise, `"rademacher"` (default) or `"gaussian"`.
        t: `(t0, t1)`, the flow's time span. Defaults to `(0.0, 1.0)`.
        method: Solver, as in `tfnode.odeint`. Defaults to `"dopri5"`.
        rtol, atol: Tolerances. Default to `1e-5` each (FFJORD's).
        adjoint: Whether gradients come from the adjoint method (default) or
            by backprop through the solver.
        kinetic_energy: Weight of the kinetic-energy regulariser `int |f|^2
            dt` (batch mean) in the training loss. Defaults to `0.0`.
        jacobian_norm: Weight of the Jacobian regulariser `int |df/dy|_F^2 dt`
            (batch mean; Hutchinson-estimated unless `trace="exact"`).
            Defaults to `0.0`.
        hidden_units: The default dynamics' hidden layers. Defaults to
            `(64, 64, 64)`.
        max_num_steps: Bound on solver steps. Defaults to `1000`.
        per_sample_steps: Whether each sample is solved with its own steps,
            so that `log_prob(x)` does not depend on `x`'s batch-mates (with
            the exact trace). Defaults to `False`.
        seed: Seed of the base samples and the Hutchinson noise.
        **kwargs: Base model keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Data, `[B, dim]`.
        training: Whether this is a training call.

    Returns:
        `log p(x)`, `[B]` (the `trace` estimate; regularisers are added to the
        loss in training).

    Example:

    >>> cnf = tfnode.models.CNF(2, hidden_units=(16,))
    >>> cnf.compile(optimizer="adam")
    >>> x = tfnode.data.toy_density("8gaussians", 64)
    >>> _ = cnf.fit(x, batch_size=32, epochs=1, verbose=0)
    >>> cnf.log_prob(x[:4]).shape
    TensorShape([4])
    >>> cnf.sample(3, seed=0).shape
    TensorShape([3, 2])

    References:
        Chen et al. (2018), "Neural Ordinary Differential Equations", NeurIPS.
        Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for
        Scalable Reversible Generative Models", ICLR.
        Finlay et al. (2020), "How to train your neural ODE: the world of
        Jacobian and kinetic regularization", ICML.
    """

    def __init__(
        self,
        dim,
        dynamics=None,
        *,
        trace="exact",
        noise="rademacher",
        t=(0.0, 1.0),
        method="dopri5",
        rtol=1e-5,
        atol=1e-5,
        adjoint=True,
        kinetic_energy=0.0,
        jacobian_norm=0.0,
        hidden_units=(64, 64, 64),
        max_num_steps=1000,
        per_sample_steps=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"`dim` must be a positive int. Received: dim={dim!r}")
        if trace not in ESTIMATORS:
            raise ValueError(
                f"`trace` must be one of {ESTIMATORS}. Received: trace={trace!r}"
            )
        if noise not in NOISES:
            raise ValueError(
                f"`noise` must be one of {NOISES}. Received: noise={noise!r}"
            )
        if np.shape(t) != (2,) or not float(t[0]) != float(t[1]):
            raise ValueError(
                f"`t` must be a pair (t0, t1) with t0 != t1. Received: t={t!r}"
            )
        for name, weight in (
            ("kinetic_energy", kinetic_energy),
            ("jacobian_norm", jacobian_norm),
        ):
            if not float(weight) >= 0.0:
                raise ValueError(
                    f"`{name}` is a regulariser weight, >= 0. Received: "
                    f"{name}={weight!r}"
                )
        self.dim = int(dim)
        self.trace = trace
        self.noise = noise
        self.t = (float(t[0]), float(t[1]))
        self.method = method
        self.rtol, self.atol = rtol, atol
        self.adjoint = bool(adjoint)
        self.kinetic_energy = float(kinetic_energy)
        self.jacobian_norm = float(jacobian_norm)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.max_num_steps = int(max_num_steps)
        self.per_sample_steps = _validation.check_flag(
            "per_sample_steps", per_sample_steps
        )
        self.seed = seed
        _validation.check_options(
            solvers.get(method),
            rtol=rtol,
            atol=atol,
            step_size=None,
            first_step=None,
            max_num_steps=max_num_steps,
        )
        if dynamics is None:
            dynamics = ConcatSquashODEFunc(
                self.hidden_units, dtype=self.dtype_policy, name="dynamics"
            )
        self.dynamics = dynamics
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")
        self.nfe_tracker = LastValue(name="nfe")
        self.backward_nfe_tracker = LastValue(name="backward_nfe") if adjoint else None
        # One augmented system per (estimator, regularised) pair, sharing the
        # dynamics' weights; kept out of Keras' tracking (no weights of their own).
        object.__setattr__(self, "_augmented_cache", {})

    def build(self, input_shape=None):
        """Creates the dynamics' weights from `dim` (inputs are not needed)."""
        if not self.dynamics.built:
            self.dynamics(
                tf.zeros([], self.compute_dtype),
                tf.zeros([1, self.dim], self.compute_dtype),
            )
        self.built = True

    # -- solves -----------------------------------------------------------------

    def _augmented(self, trace, regularised):
        """The augmented dynamics: `trace` of `"exact"`, `"hutchinson"` or `None`."""
        key = (trace, regularised)
        if key not in self._augmented_cache:
            self._augmented_cache[key] = AugmentedDynamics(
                self.dynamics,
                trace=trace is not None,
                kinetic_energy=regularised and self.kinetic_energy > 0,
                jacobian_norm=regularised and self.jacobian_norm > 0,
                estimator=trace or self.trace,
                dtype=self.dtype_policy,
            )
        return self._augmented_cache[key]

    def _solve(self, func, y0, times, backward_stats=None):
        options = dict(
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            max_num_steps=self.max_num_steps,
            per_sample_steps=self.per_sample_steps,
            return_stats=True,
        )
        if self.adjoint:
            return odeint_adjoint(
                func, y0, times, backward_stats=backward_stats, **options
            )
        return odeint(func, y0, times, **options)

    def _flow(self, y, reverse, trace, regularised=False, backward_stats=None):
        """Solves from `y` across the span (data to base if `reverse`); returns
        `(end state dict, stats)`; the dict's `"trace"` is the integral of
        `tr(df/dy)` in the direction solved."""
        self._ensure_built()
        y = tf.cast(y, self.compute_dtype)
        _check_data(y, self.dim)
        func = self._augmented(trace, regularised)
        state = func.initial_state(y, seed=self.seed_generator, kind=self.noise)
        span = self.t[::-1] if reverse else self.t
        times = tf.constant(span, self.compute_dtype)
        if func.integrals() or "noise" in state:
            ys, stats = self._solve(func, state, times, backward_stats)
            return {k: v[-1] for k, v in ys.items()}, stats
        ys, stats = self._solve(self.dynamics, y, times, backward_stats)
        return {"y": ys[-1]}, stats

    def _ensure_built(self):
        if not self.built:
            self.build()

    # -- the density --------------------------------------------------------------

    def log_prob(self, x, trace=None):
        """`log p(x)` in nats, `[B]`.

        Args:
            x: Data, `[B, dim]`.
            trace: Override of the model's `trace` (`"exact"` gives the exact
                log-density of a model trained with `"hutchinson"`).

        Returns:
            `[B]`.
        """
        if trace not in (None, *ESTIMATORS):
            raise ValueError(
                f"`trace` must be one of {ESTIMATORS} or None (the model's). "
                f"Received: trace={trace!r}"
            )
        end, _ = self._flow(x, True, trace or self.trace)
        return standard_normal_log_prob(end["y"]) + end["trace"]

    def sample(self, num_samples, seed=None):
        """Draws `z ~ N(0, I)` and flows it to data space: `[num_samples, dim]`.

        Args:
            num_samples: Number of samples.
            seed: Seed of the draw (else the model's seed generator advances).

        Returns:
            `[num_samples, dim]`.
        """
        z = self._base_sample(num_samples, seed)
        return self._flow(z, False, None)[0]["y"]

    def sample_and_log_prob(self, num_samples, seed=None):
        """Samples and their `log p`, from one solve with the trace: for
        training by reverse KL against a known density.

        Returns:
            `(x, log_prob)`, `[num_samples, dim]` and `[num_samples]`.
        """
        z = self._base_sample(num_samples, seed)
        end, _ = self._flow(z, False, self.trace)
        return end["y"], standard_normal_log_prob(z) - end["trace"]

    def transform(self, y, times):
        """The states at `times` of the flow started from `y` at `times[0]`.

        `transform(z, [0.0, 0.5, 1.0])` moves base samples towards the data
        (the default span), `transform(x, [1.0, 0.0])` data to the base.

        Args:
            y: `[B, dim]`, at `times[0]`.
            times: `[T]` monotonic times.

        Returns:
            `[T, B, dim]`.
        """
        self._ensure_built()
        y = tf.cast(y, self.compute_dtype)
        _check_data(y, self.dim)
        times = tf.convert_to_tensor(times, self.compute_dtype)
        return self._solve(self.dynamics, y, times)[0]

    def _base_sample(self, num_samples, seed):
        return keras.random.normal(
            (int(num_samples), self.dim),
            dtype=self.compute_dtype,
            seed=self.seed_generator if seed is None else seed,
        )

    @property
    def bijector(self):
        """A `tfp.bijectors.Bijector`: forward maps base samples to data.

        `tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(dim)),
        cnf.bijector)` is the model's distribution.
        """
        from tfnode.models.cnf_bijector import CNFBijector

        return CNFBijector(self)

    # -- training -------------------------------------------------------------------

    def call(self, x, training=False):
        return self.log_prob(x)

    def _nll_and_penalty(self, x, training):
        """`(-log p(x) [B], regulariser penalty (scalar))`."""
        regularised = bool(training) and (self.kinetic_energy or self.jacobian_norm)
        end, stats = self._flow(
            x,
            True,
            self.trace,
            regularised=regularised,
            backward_stats=self.backward_nfe_tracker if training else None,
        )
        nll = -(standard_normal_log_prob(end["y"]) + end["trace"])
        penalty = tf.add_n([tf.zeros([], nll.dtype), *self.losses])
        for name, weight in (
            ("kinetic_energy", self.kinetic_energy),
            ("jacobian_norm", self.jacobian_norm),
        ):
            if name in end:  # integrated backwards: the magnitude is the integral
                penalty += weight * tf.reduce_mean(tf.abs(end[name]))
        self.nfe_tracker.update_state(stats.nfe)
        return nll, penalty

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The batch mean of `-log p(x)` plus the weighted regularisers.

        `y`, `y_pred` and `sample_weight` are ignored. Updates `nll`; adds
        the model's own losses (e.g. weight regularisers of the dynamics).
        """
        nll, penalty = self._nll_and_penalty(x, training)
        self.nll_tracker.update_state(nll)
        return tf.reduce_mean(nll) + penalty

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, training=True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.loss_tracker.update_state(self.compute_loss(x=x, training=False))
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.nll_tracker, self.nfe_tracker]
        if self.backward_nfe_tracker is not None:
            trackers.append(self.backward_nfe_tracker)
        return trackers

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "dynamics": keras.saving.serialize_keras_object(self.dynamics),
            "trace": self.trace,
            "noise": self.noise,
            "t": list(self.t),
            "method": self.method,
            "rtol": self.rtol,
            "atol": self.atol,
            "adjoint": self.adjoint,
            "kinetic_energy": self.kinetic_energy,
            "jacobian_norm": self.jacobian_norm,
            "hidden_units": list(self.hidden_units),
            "max_num_steps": self.max_num_steps,
            "per_sample_steps": self.per_sample_steps,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["dynamics"] = keras.saving.deserialize_keras_object(config["dynamics"])
        return cls(**config)


def _check_data(y, dim):
    if y.shape.rank != 2 or y.shape[-1] not in (None, dim):
        raise ValueError(
            f"The CNF's inputs are batches of {dim}-vectors, of shape [B, {dim}]. "
            f"Received: shape {tuple(y.shape)}"
        )
