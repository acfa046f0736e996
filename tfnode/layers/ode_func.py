"""Dynamics as Keras layers: `ODEFunc` (the base) and `MLPODEFunc`."""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Iterable

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfnode")
class ODEFunc(keras.layers.Layer):
    """Base class of dynamics layers: `call(t, y)` returns `dy/dt`.

    Subclasses implement `call(self, t, y)`; `t` is a scalar tensor, or of
    shape `[B]` when the solve uses per-sample times or per-sample steps
    (`NeuralODELayer`'s default), so write `call` for both. They may implement
    `build(self, t_shape, y_shape)` (Keras passes both shapes). Any Keras layer
    with that `call` signature works as dynamics; this base adds
    `concat_time`, the usual way to make dynamics time-dependent.

    Args:
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        t: Scalar tensor, or `[B]` for per-sample times or per-sample steps
            (`NeuralODELayer`'s default). Pass a tensor, not a
            Python float (Keras rejects non-tensor positional arguments).
        y: The state, a tensor of shape `[B, ...]`.

    Returns:
        `dy/dt`, a tensor of the shape and dtype of `y`.

    Raises:
        TypeError: If a subclass's `build(self, input_shape)` fails: Keras
            passes it only the shape of `t`.

    Example:

    >>> @keras.saving.register_keras_serializable(package="doctest")
    ... class Linear(tfnode.ODEFunc):
    ...     def build(self, t_shape, y_shape):
    ...         self.A = self.add_weight(shape=(y_shape[-1], y_shape[-1]))
    ...     def call(self, t, y):
    ...         return y @ self.A
    >>> Linear()(tf.constant(0.0), tf.ones([4, 2])).shape
    TensorShape([4, 2])
    >>> ode = tfnode.NeuralODELayer(Linear(), t=(0.0, 1.0))
    >>> ode(tf.ones([4, 2])).shape
    TensorShape([4, 2])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        hint = one_shape_build_hint(self)
        if hint is not None:
            build = self.build

            @functools.wraps(build)  # Keras reads the signature to pass shapes
            def build_or_explain(*args, **kwargs):
                try:
                    return build(*args, **kwargs)
                except Exception as e:
                    raise TypeError(hint) from e

            self.build = build_or_explain

    @staticmethod
    def concat_time(t, y):
        """Appends `t` to `y` as one more feature (last axis) per sample.

        Args:
            t: Scalar tensor, or `[B]` for per-sample times.
            y: Tensor of shape `[B, ..., D]`.

        Returns:
            Tensor of shape `[B, ..., D + 1]` whose last feature is `t`.
        """
        t = tf.cast(t, y.dtype)
        batch_shape = tf.shape(y)[:-1]
        if t.shape.rank == 1:  # per-sample times [B]
            t = tf.reshape(
                t, tf.concat([tf.shape(t), tf.ones([y.shape.rank - 2], tf.int32)], 0)
            )
        t = tf.broadcast_to(t[..., None], tf.concat([batch_shape, [1]], 0))
        return tf.concat([y, t], -1)

    def call(self, t, y):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(self, t, y)` returning dy/dt."
        )


def one_shape_build_hint(layer):
    """The hint for dynamics whose `build` takes one shape, else `None`.

    Keras passes a layer one shape per input of `call(t, y)`, so a Keras-style
    `build(self, input_shape)` receives the shape of `t` alone, a scalar, and
    typically fails deep in the user's code (an `IndexError` on
    `input_shape[-1]`). A one-shape `build` that does not look at its shape
    works, so this hint is only attached to a `build` that failed."""
    build = type(layer).build
    if build is keras.layers.Layer.build:
        return None
    params = list(inspect.signature(build).parameters.values())[1:]  # after self
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    positional = [
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)
    ]
    inputs = [
        p.name
        for p in inspect.signature(layer.call).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)
        and p.name not in ("training", "mask")
    ]
    if len(positional) != 1 or len(inputs) != 2:
        return None
    name = type(layer).__name__
    shapes = ", ".join(f"{x}_shape" for x in inputs)
    return (
        f"`{name}.build(self, {positional[0]})` received only the shape of "
        f"`{inputs[0]}`: Keras passes one shape per input of "
        f"`call({', '.join(inputs)})`, so dynamics layers build with "
        f"`def build(self, {shapes})` (the state's shape is `{inputs[1]}_shape`). "
        f"Received: {name}.build{inspect.signature(build)}"
    )


@keras.saving.register_keras_serializable(package="tfnode")
class MLPODEFunc(ODEFunc):
    """Dynamics `dy/dt = MLP([y, t])` on the last axis of `y`.

    Args:
        hidden_units: Sizes of the hidden layers. Defaults to `(64, 64)`.
        activation: Activation of the hidden layers. Defaults to `"tanh"`
            (smooth dynamics keep adaptive solvers cheap).
        time_dependent: Whether `t` is an input feature. Defaults to `True`.
        kernel_initializer: Initializer of the hidden kernels.
        output_initializer: Initializer of the output kernel. Defaults to a
            normal with standard deviation 0.01, so that the flow starts near
            the identity map.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        t: Scalar tensor, or `[B]` for per-sample times.
        y: Tensor of shape `[B, ..., D]`.

    Returns:
        `dy/dt`, of the shape of `y`.

    Example:

    >>> func = tfnode.MLPODEFunc(hidden_units=(32,))
    >>> func(tf.constant(0.0), tf.zeros([8, 2])).shape
    TensorShape([8, 2])
    """

    def __init__(
        self,
        hidden_units=(64, 64),
        activation="tanh",
        time_dependent=True,
        kernel_initializer="glorot_uniform",
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        iterable = isinstance(hidden_units, Iterable) and not isinstance(
            hidden_units, str
        )
        if not iterable or not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool) and u >= 1
            for u in hidden_units
        ):
            raise ValueError(
                "`hidden_units` must be a sequence of positive integers, "
                f"e.g. (64, 64). Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = keras.activations.get(activation)
        self.time_dependent = bool(time_dependent)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_initializer = keras.initializers.get(
            output_initializer or keras.initializers.RandomNormal(stddev=1e-2)
        )

    def build(self, t_shape, y_shape):
        if len(y_shape) < 2:
            raise ValueError(
                "MLPODEFunc needs `y` with a batch axis, of shape [B, ..., D]; for "
                "one state, add one (`y0[None]`). Received: y with shape "
                f"{tuple(y_shape)}"
            )
        features = y_shape[-1]
        if features is None:
            raise ValueError(
                f"`y` needs a known last axis. Received: y with shape {y_shape}"
            )
        self.hidden = [
            keras.layers.Dense(
                u,
                activation=self.activation,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=f"hidden_{i}",
            )
            for i, u in enumerate(self.hidden_units)
        ]
        self.out = keras.layers.Dense(
            features,
            kernel_initializer=self.output_initializer,
            dtype=self.dtype_policy,
            name="output",
        )
        width = features + int(self.time_dependent)
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.out.build((None, width))

    def call(self, t, y):
        h = self.concat_time(t, y) if self.time_dependent else y
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)

    def get_config(self):
        config = {
            "hidden_units": list(self.hidden_units),
            "activation": keras.activations.serialize(self.activation),
            "time_dependent": self.time_dependent,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "output_initializer": keras.initializers.serialize(self.output_initializer),
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="tfnode")
class ConcatSquashODEFunc(ODEFunc):
    """Time-conditioned MLP dynamics of FFJORD (Grathwohl et al. 2019).

    Each layer is a "concat-squash" layer, `h' = act((W h + b) * sigmoid(W_g t
    + b_g) + w_b t)`: time gates and shifts every unit rather than entering
    as one more input feature, the default dynamics of `tfnode.models.CNF`.

    Args:
        hidden_units: Sizes of the hidden layers. Defaults to `(64, 64, 64)`.
        activation: Activation of the hidden layers. Defaults to `"tanh"`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        t: Scalar tensor, or `[B]` for per-sample times.
        y: Tensor of shape `[B, D]`.

    Returns:
        `dy/dt`, of shape `[B, D]`.

    Example:

    >>> func = tfnode.layers.ConcatSquashODEFunc(hidden_units=(32, 32))
    >>> func(tf.constant(0.5), tf.zeros([8, 2])).shape
    TensorShape([8, 2])
    """

    def __init__(self, hidden_units=(64, 64, 64), activation="tanh", **kwargs):
        super().__init__(**kwargs)
        if not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool) and u >= 1
            for u in hidden_units
        ):
            raise ValueError(
                "`hidden_units` must be a sequence of positive integers, "
                f"e.g. (64, 64, 64). Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = keras.activations.get(activation)

    def build(self, t_shape, y_shape):
        if len(y_shape) != 2 or y_shape[-1] is None:
            raise ValueError(
                "ConcatSquashODEFunc needs `y` of shape [B, D] with a known D. "
                f"Received: y with shape {tuple(y_shape)}"
            )
        widths = [y_shape[-1], *self.hidden_units, y_shape[-1]]
        self.weight_layers, self.gates, self.shifts = [], [], []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            dense = keras.layers.Dense(n_out, dtype=self.dtype_policy, name=f"w_{i}")
            gate = keras.layers.Dense(n_out, dtype=self.dtype_policy, name=f"gate_{i}")
            shift = keras.layers.Dense(
                n_out, use_bias=False, dtype=self.dtype_policy, name=f"shift_{i}"
            )
            dense.build((None, n_in))
            gate.build((None, 1))
            shift.build((None, 1))
            self.weight_layers.append(dense)
            self.gates.append(gate)
            self.shifts.append(shift)

    def call(self, t, y):
        t = tf.cast(t, y.dtype)
        t = tf.reshape(t, [-1, 1])  # [1, 1] or [B, 1]: broadcasts over the batch
        h = y
        last = len(self.weight_layers) - 1
        for i, (dense, gate, shift) in enumerate(
            zip(self.weight_layers, self.gates, self.shifts)
        ):
            h = dense(h) * tf.sigmoid(gate(t)) + shift(t)
            if i < last:
                h = self.activation(h)
        return h

    def get_config(self):
        config = {
            "hidden_units": list(self.hidden_units),
            "activation": keras.activations.serialize(self.activation),
        }
        return {**super().get_config(), **config}
