"""`NeuralODELayer`: a Keras layer that maps `y(t0)` to `y(t1)` by an ODE solve."""

from __future__ import annotations

import inspect
import sys

import keras
import numpy as np
import tensorflow as tf

from tfnode import _validation, solvers
from tfnode.adjoint import backward_settings, odeint_adjoint
from tfnode.layers.augmented import AugmentedDynamics
from tfnode.layers.ode_func import ODEFunc, one_shape_build_hint
from tfnode.odeint import odeint

_HALF_DTYPES = ("float16", "bfloat16")


class LastValue(keras.metrics.Metric):
    """A metric holding the last recorded value: solver counts in `fit` logs.
    Per-sample counts (`[B]`) are reduced by `reduce` (mean or max)."""

    def __init__(self, name, reduce=tf.reduce_mean, **kwargs):
        super().__init__(name=name, **kwargs)
        self.reduce = reduce
        self.value = self.add_variable(
            shape=(), initializer="zeros", name="value", aggregation="mean"
        )

    def update_state(self, value):
        self.value.assign(self.reduce(tf.cast(value, self.value.dtype)))

    def result(self):
        return tf.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)

    def record(self, stats):
        """The `backward_stats` protocol of `odeint_adjoint`."""
        self.update_state(stats.nfe)
        return []


@keras.saving.register_keras_serializable(package="tfnode")
class NeuralODELayer(keras.layers.Layer):
    """Solves `dy/dt = func(t, y)` from `y(t[0]) = y0`; returns `y(t[-1])`.

    The drop-in continuous-depth replacement of a stack of residual blocks
    (Chen et al. 2018). Gradients come from the adjoint method
    (`tfnode.odeint_adjoint`, constant memory) or, with `adjoint=False`, by
    backpropagation through the solver (`tfnode.odeint`, the paper's RK-Net).

    Solver statistics appear in `fit` and `evaluate` logs as `{name}_nfe`
    (forward function evaluations of the last batch, the mean over its
    samples with per-sample steps; `val_{name}_nfe` for validation),
    `{name}_nfe_max` with per-sample steps (the hardest sample's: each
    evaluation of `func` runs on the whole batch, so this is the batch's
    cost; averaged over replicas under a distribution strategy) and, with
    `adjoint=True`, `{name}_backward_nfe` (0 in
    `evaluate`, which takes no gradient). They are recorded in training
    steps and in Keras' `test_step` only, so `predict` and exported serving
    graphs update no metrics. For counts elsewhere, call
    `tfnode.odeint(..., return_stats=True)` on `layer.func`.

    Under a mixed-precision policy (`mixed_float16`, `mixed_bfloat16`) the
    layer, `func` and every layer inside `func` compute in float32: a
    half-precision adaptive solve cannot meet its tolerances. Inputs are cast
    to float32 and outputs are float32.

    Args:
        func: The dynamics: a Keras layer whose `call(t, y)` returns `dy/dt`,
            such as `tfnode.MLPODEFunc` or a subclass of `tfnode.ODEFunc`. It
            must compute in the layer's dtype (pass the same `dtype` to both)
            and take `t` as a scalar or of shape `[B]` (per-sample steps, the
            default, or per-sample times).
        t: Default times, a sequence of at least 2 strictly monotonic floats;
            the layer integrates from `t[0]`. Defaults to `(0.0, 1.0)`.
        method: Solver, one of `tfnode.solvers.SOLVERS`. Defaults to
            `"dopri5"`.
        rtol: Relative tolerance of adaptive methods. Defaults to `1e-3`.
        atol: Absolute tolerance of adaptive methods. Defaults to `1e-6`.
        step_size: Step of fixed-step methods (required by them).
        adjoint: Whether gradients come from the adjoint method. Defaults to
            `True`.
        return_sequences: Whether to return the states at every time
            (`[B, T, ...]`) rather than at the last one. Defaults to `False`.
        max_num_steps: Bound on solver steps (per backward interval for the
            adjoint). Defaults to `1000`.
        checkpoints: With `adjoint=False`, the states that backprop keeps
            per checkpoint buffer, as in `tfnode.odeint` (`None`: every step's
            stages in graph mode, 64 checkpoints under XLA).
        per_sample_steps: Whether every sample of the batch is solved with
            its own steps, error control and status (forward and backward), so
            that its output does not depend on its batch-mates (except with
            fixed-step methods on per-sample times, which take the widest
            sample's steps), as `tfnode.odeint`'s `per_sample_steps`. Logs
            then also show `{name}_nfe_max`, the hardest sample's count.
            Defaults to
            `True` (unlike `tfnode.odeint`): a prediction, or a served
            SavedModel's answer, should not change with the request's batch.
            On the benchmark problem (`benchmarks/per_sample.py`) it costs
            0.95-1.12x the shared control's time in the forward solve,
            0.92-1.16x with the adjoint and 1.18-1.25x with backprop.
        adjoint_method, adjoint_rtol, adjoint_atol, adjoint_step_size,
            adjoint_norm: Backward solver settings, as in
            `tfnode.odeint_adjoint` (`None`: the forward setting).
        kinetic_energy: Weight of the kinetic-energy regulariser `int |f|^2
            dt` (Finlay et al. 2020), integrated in the solve of training
            calls and added to the layer's losses (batch mean). Defaults to
            `0.0`.
        jacobian_norm: Weight of the Jacobian regulariser `int |df/dy|_F^2
            dt`, estimated with one Rademacher vector per batch (Hutchinson),
            added likewise. Regularised dynamics take fewer solver steps.
            Defaults to `0.0`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        y0: Tensor of shape `[B, ...]`, the state at the first time.
        t: Optional times overriding the default: shape `[T]`, or `[B, T]`
            for a grid per sample.
        training: Whether the call is a training step; solver statistics
            are recorded then (and in Keras' `test_step`). It is not passed
            to `func`: the dynamics
            run as in inference (no dropout or batch statistics inside an ODE
            solve, whose steps would see different noise).

    Returns:
        The state at the last time, of the shape of `y0`; with
        `return_sequences=True`, the states at every time, `[B, T, ...]`.

    Raises:
        ValueError: If `func` is not a Keras layer with `call(t, y)`, if its
            dtype differs from the layer's, if `t` or a solver option is
            invalid; when called on an integer input, or on a rank-1 input
            that `func` cannot take (a batch axis is missing).
        TypeError: For an unknown keyword (torchdiffeq's `options=` among
            them), and when a `func.build(self, input_shape)` fails (Keras
            passes it only the shape of `t`).
        tf.errors.InvalidArgumentError: When the forward or (when the
            gradient is taken) the backward solve fails: too many steps,
            step-size underflow, a non-finite state. The message says which
            solve, what happened and what to try.

    Note:
        Under `jit_compile=True` (XLA) TensorFlow drops assertions: a failed
        solve does not raise but makes the outputs (forward) or gradients
        (backward) NaN, so the loss turns NaN. Run one epoch with
        `jit_compile=False` to see the message. Statistics are recorded in
        `evaluate` by finding Keras' `test_step` among the callers (a model
        method of that name; CPython's frames), since Keras passes
        `training=False` alike to `evaluate`, `predict` and exported
        serving functions.

    Example:

    >>> inputs = keras.Input((2,))
    >>> ode = tfnode.NeuralODELayer(
    ...     tfnode.MLPODEFunc(hidden_units=(16,)),
    ...     t=(0.0, 0.5, 1.0),
    ...     return_sequences=True,
    ... )
    >>> model = keras.Model(inputs, ode(inputs))
    >>> model(tf.ones([4, 2])).shape
    TensorShape([4, 3, 2])
    >>> ode(tf.ones([4, 2]), t=[0.0, 1.0, 2.0, 3.0]).shape
    TensorShape([4, 4, 2])

    References:
        Chen et al. (2018), "Neural Ordinary Differential Equations", NeurIPS.
    """

    def __init__(
        self,
        func,
        t=(0.0, 1.0),
        method="dopri5",
        rtol=1e-3,
        atol=1e-6,
        step_size=None,
        adjoint=True,
        return_sequences=False,
        max_num_steps=1000,
        adjoint_method=None,
        adjoint_rtol=None,
        adjoint_atol=None,
        adjoint_norm="seminorm",
        adjoint_step_size=None,
        checkpoints=None,
        per_sample_steps=True,
        kinetic_energy=0.0,
        jacobian_norm=0.0,
        **kwargs,
    ):
        torchdiffeq_names = _validation.TORCHDIFFEQ_KEYWORDS
        _validation.check_keywords(
            "`NeuralODELayer()`",
            {k: v for k, v in kwargs.items() if k in torchdiffeq_names},
            valid=(),
            options=list(inspect.signature(NeuralODELayer.__init__).parameters)[2:-1],
        )
        super().__init__(**kwargs)
        _check_func(func)
        self.func = func
        if np.ndim(t) != 1:
            raise ValueError(
                "`t` must be a flat sequence of times; pass per-sample grids [B, T] "
                f"when calling the layer. Received: t={t!r}"
            )
        times, _ = _validation.check_times(t, tf.float64, [])
        self.t = tuple(float(x) for x in times.numpy())
        # a tableau object would not serialise in get_config
        if not isinstance(method, str):
            raise ValueError(
                f"`method` must be a method name, one of {sorted(solvers.SOLVERS)}. "
                f"Received: method={method!r}"
            )
        tableau = solvers.get(method)
        _validation.check_options(
            tableau,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            first_step=None,
            max_num_steps=max_num_steps,
        )
        # Checked with `adjoint=False` too: the config keeps them for a later switch.
        backward_settings(
            method,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            max_num_steps=max_num_steps,
            adjoint_method=adjoint_method,
            adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol,
            adjoint_step_size=adjoint_step_size,
        )
        if adjoint_norm not in ("seminorm", "full"):
            raise ValueError(
                "`adjoint_norm` must be 'seminorm' or 'full'. "
                f"Received: adjoint_norm={adjoint_norm!r}"
            )
        self.method = method
        self.rtol, self.atol, self.step_size = rtol, atol, step_size
        self.adjoint = bool(adjoint)
        self.return_sequences = bool(return_sequences)
        self.max_num_steps = int(max_num_steps)
        _validation.check_checkpoints(checkpoints)
        self.checkpoints = checkpoints
        self.per_sample_steps = _validation.check_flag(
            "per_sample_steps", per_sample_steps
        )
        self.adjoint_method = adjoint_method
        self.adjoint_rtol, self.adjoint_atol = adjoint_rtol, adjoint_atol
        self.adjoint_step_size = adjoint_step_size
        self.adjoint_norm = adjoint_norm
        for name, weight in (
            ("kinetic_energy", kinetic_energy),
            ("jacobian_norm", jacobian_norm),
        ):
            if not float(weight) >= 0.0:
                raise ValueError(
                    f"`{name}` is a regulariser weight, >= 0. Received: "
                    f"{name}={weight!r}"
                )
        self.kinetic_energy = float(kinetic_energy)
        self.jacobian_norm = float(jacobian_norm)
        if self.kinetic_energy or self.jacobian_norm:
            # The RNODE integrals ride along in training; the Jacobian's by
            # Hutchinson's estimator, one noise draw per batch. Untracked: its
            # weights are `func`'s.
            regularised = AugmentedDynamics(
                func,
                kinetic_energy=self.kinetic_energy > 0,
                jacobian_norm=self.jacobian_norm > 0,
                estimator="hutchinson",
                dtype=self.dtype_policy,
                name="regularised",
            )
            object.__setattr__(self, "regularised", regularised)
            self.seed_generator = keras.random.SeedGenerator()
        _compute_in_float32(self)  # self, func and the layers func holds now
        if func.compute_dtype != self.compute_dtype:
            raise ValueError(
                f"`func` computes in {func.compute_dtype} but the NeuralODELayer in "
                f"{self.compute_dtype}; give both the same `dtype`, e.g. "
                f"`NeuralODELayer(MLPODEFunc(dtype='{self.compute_dtype}'), "
                f"dtype='{self.compute_dtype}')`. Received: func={func!r}"
            )
        self.nfe = LastValue(name=f"{self.name}_nfe")
        self.backward_nfe = (
            LastValue(name=f"{self.name}_backward_nfe") if adjoint else None
        )
        # With per-sample steps the logs also show the hardest sample's count.
        self.nfe_max = (
            LastValue(name=f"{self.name}_nfe_max", reduce=tf.reduce_max)
            if self.per_sample_steps
            else None
        )

    def build(self, input_shape):
        if not self.func.built:
            # Calling once lets Keras build any dynamics layer from real shapes.
            shape = [1 if d is None else d for d in input_shape]
            try:
                self.func(
                    tf.zeros([], self.compute_dtype),
                    tf.zeros(shape, self.compute_dtype),
                )
            except (ValueError, TypeError, IndexError) as e:
                hint = one_shape_build_hint(self.func)
                if hint is not None and not isinstance(self.func, ODEFunc):
                    raise TypeError(hint) from e  # an ODEFunc explains itself
                if len(shape) != 1:
                    raise
                size = "D" if input_shape[0] is None else input_shape[0]
                raise ValueError(
                    f"{self._describe()} reads its input as batch-major [B, ...], so "
                    f"an input of shape {tuple(input_shape)} is a batch of scalar "
                    "states, which `func` could not take. For one state of "
                    f"{size} components, add a batch axis: `y0[None]`, of shape "
                    f"(1, {size}). `func` raised: {e}"
                ) from e
        _compute_in_float32(self.func)  # layers that `func.build` created

    def call(self, y0, t=None, training=None):
        if not y0.dtype.is_floating:
            raise ValueError(
                f"{self._describe()} needs a floating-point input (the ODE's "
                f"state). Received: y0 with dtype {y0.dtype.name}. Cast it first, "
                f"e.g. `keras.ops.cast(x, '{self.compute_dtype}')`."
            )
        times = self._times(t, y0)
        func, state = self.func, y0
        if training and (self.kinetic_energy or self.jacobian_norm):
            func = self.regularised
            state = func.initial_state(y0, seed=self.seed_generator)
        options = dict(
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            step_size=self.step_size,
            max_num_steps=self.max_num_steps,
            per_sample_steps=self.per_sample_steps,
            return_stats=True,
        )
        try:
            with tf.name_scope("forward_solve"):  # names the failing node in graphs
                if self.adjoint:
                    ys, stats = odeint_adjoint(
                        func,
                        state,
                        times,
                        adjoint_method=self.adjoint_method,
                        adjoint_rtol=self.adjoint_rtol,
                        adjoint_atol=self.adjoint_atol,
                        adjoint_step_size=self.adjoint_step_size,
                        adjoint_norm=self.adjoint_norm,
                        backward_stats=self.backward_nfe if training else None,
                        **options,
                    )
                else:
                    ys, stats = odeint(
                        func, state, times, checkpoints=self.checkpoints, **options
                    )
        except tf.errors.InvalidArgumentError as e:  # eager: say which layer failed
            raise type(e)(
                e.node_def, e.op, f"{self._describe()}, forward solve: {e.message}"
            ) from None
        # Metric updates stay out of exported serving graphs: recorded in
        # training and in `evaluate` (Keras' `test_step`) only.
        if training or _in_keras_test_step():
            self.nfe.update_state(stats.nfe)
            if self.nfe_max is not None:
                self.nfe_max.update_state(stats.nfe)
        if func is not self.func:
            self.add_loss(self._penalty(ys))
            ys = ys["y"]
        if not self.return_sequences:
            return ys[-1]
        perm = [1, 0] + list(range(2, ys.shape.rank))
        return tf.transpose(ys, perm)  # [T, B, ...] -> [B, T, ...]

    def _penalty(self, ys):
        """The weighted batch means of the RNODE integrals from `t[0]` to
        `t[-1]` (their magnitudes: decreasing times integrate backwards)."""
        penalty = 0.0
        for name in self.regularised.integrals():
            integral = tf.abs(ys[name][-1])
            penalty += getattr(self, name) * tf.reduce_mean(integral)
        return penalty

    def _times(self, t, y0):
        """`t` (default, `[T]` or `[B, T]`) as the time-major times of `odeint`."""
        if t is None:
            return tf.constant(self.t, y0.dtype)
        t = tf.cast(t, y0.dtype)
        if t.shape.rank == 1:
            return t
        if t.shape.rank != 2:
            raise ValueError(
                "`t` must have shape [T] or [B, T] (a grid per sample). "
                f"Received: t with shape {t.shape}"
            )
        # Checked here so that errors speak of [B, T], not odeint's [T, B].
        if None not in (t.shape[0], y0.shape[0]) and t.shape[0] != y0.shape[0]:
            raise ValueError(
                "`t` of shape [B, T] needs one row of times per sample of `y0`. "
                f"Received: t with shape {t.shape} for y0 with shape {y0.shape}"
            )
        value = tf.get_static_value(t)
        if value is not None:
            steps = np.diff(value, axis=1)
            if not np.all(np.isfinite(value)) or not (
                np.all(steps > 0) or np.all(steps < 0)
            ):
                raise ValueError(
                    "`t` of shape [B, T] must hold a strictly increasing or strictly "
                    "decreasing grid in each row, all in the same direction, "
                    "with finite values. "
                    f"Received: t={np.array2string(value, threshold=20)}"
                )
        return tf.transpose(t)  # [B, T] -> [T, B], time-major for odeint

    def _describe(self):
        return f"{type(self).__name__} '{self.name}'"

    def compute_output_shape(self, y0_shape, t_shape=None):
        if not self.return_sequences:
            return tuple(y0_shape)
        num_times = len(self.t) if t_shape is None else t_shape[-1]
        return (y0_shape[0], num_times, *y0_shape[1:])

    def get_config(self):
        config = {
            "func": keras.saving.serialize_keras_object(self.func),
            "t": list(self.t),
            "method": self.method,
            "rtol": self.rtol,
            "atol": self.atol,
            "step_size": self.step_size,
            "adjoint": self.adjoint,
            "return_sequences": self.return_sequences,
            "max_num_steps": self.max_num_steps,
            "adjoint_method": self.adjoint_method,
            "adjoint_rtol": self.adjoint_rtol,
            "adjoint_atol": self.adjoint_atol,
            "adjoint_step_size": self.adjoint_step_size,
            "adjoint_norm": self.adjoint_norm,
            "checkpoints": self.checkpoints,
            "per_sample_steps": self.per_sample_steps,
            "kinetic_energy": self.kinetic_energy,
            "jacobian_norm": self.jacobian_norm,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["func"] = keras.saving.deserialize_keras_object(config["func"])
        return cls(**config)


def _compute_in_float32(layer):
    """Gives `layer` and every layer inside it that computes in half precision
    a float32 policy (mixed policies already keep float32 variables)."""
    for sublayer in layer._flatten_layers(include_self=True):
        if sublayer.compute_dtype in _HALF_DTYPES:
            sublayer.dtype_policy = "float32"


def _in_keras_test_step():
    """Whether this call runs inside a Keras model's `test_step` (`evaluate`,
    and validation in `fit`). Keras passes `training=False` alike to
    `evaluate`, `predict` and an exported model's serving function, so the
    caller's frames are what tells them apart (checked when a graph is
    traced, or per call in eager)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("test_step", "tf__test_step") and isinstance(
            frame.f_locals.get("self"), keras.Model
        ):
            return True
        frame = frame.f_back
    return False


def _check_func(func):
    if not isinstance(func, keras.layers.Layer):
        raise ValueError(
            "`func` must be a Keras layer whose `call(t, y)` returns dy/dt, e.g. "
            "`tfnode.MLPODEFunc()` or a subclass of `tfnode.ODEFunc`. Received: "
            f"func={func!r}"
        )
    params = inspect.signature(func.call).parameters.values()
    takes_args = any(p.kind == p.VAR_POSITIONAL for p in params)
    # Keras fills `training` and `mask` itself: `Dense.call(inputs, training)`
    # takes one input, not `(t, y)`.
    inputs = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in ("training", "mask")
    ]
    if len(inputs) < 2 and not takes_args:
        raise ValueError(
            "`func.call` must take `(t, y)` and return dy/dt. Received: "
            f"{type(func).__name__}.call{inspect.signature(func.call)}"
        )
