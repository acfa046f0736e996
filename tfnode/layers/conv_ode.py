"""Convolutional dynamics (`ConvODEFunc`) and the ODE block that replaces a
residual block (`ConvODEBlock`), as in the ODE-Net of Chen et al. (2018)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfnode.layers.neural_ode import NeuralODELayer
from tfnode.layers.ode_func import ODEFunc


def _group_norm(channels, dtype):
    # At most 32 groups that divide the channels, as the paper's code does.
    return keras.layers.GroupNormalization(groups=math.gcd(32, channels), dtype=dtype)


@keras.saving.register_keras_serializable(package="tfnode")
class ConvODEFunc(ODEFunc):
    """Image dynamics: norm, ReLU, 3x3 conv on `[h, t]`, norm, ReLU, 3x3 conv
    on `[h, t]`, norm (the ODE-Net block; `t` enters as a constant channel).

    Args:
        filters: Channels of the hidden convolution. Defaults to `64`.
        kernel_size: Size of both convolutions. Defaults to `3`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        t: Scalar tensor, or `[B]` for per-sample times or steps.
        y: Tensor of shape `[B, H, W, C]`.

    Returns:
        `dy/dt`, of the shape of `y` (`C` channels, whatever `filters` is).

    Example:

    >>> func = tfnode.ConvODEFunc(filters=8)
    >>> func(tf.constant(0.0), tf.zeros([2, 6, 6, 8])).shape
    TensorShape([2, 6, 6, 8])
    """

    def __init__(self, filters=64, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 1 or int(kernel_size) < 1:
            raise ValueError(
                "`filters` and `kernel_size` must be positive. Received: "
                f"filters={filters}, kernel_size={kernel_size}"
            )
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)

    def build(self, t_shape, y_shape):
        if len(y_shape) != 4 or y_shape[-1] is None:
            raise ValueError(
                f"ConvODEFunc needs `y` of shape [B, H, W, C]. Received: {y_shape}"
            )
        channels = y_shape[-1]
        dtype = self.dtype_policy
        self.norm1 = _group_norm(channels, dtype)
        self.conv1 = keras.layers.Conv2D(
            self.filters, self.kernel_size, padding="same", dtype=dtype
        )
        self.norm2 = _group_norm(self.filters, dtype)
        self.conv2 = keras.layers.Conv2D(
            channels, self.kernel_size, padding="same", dtype=dtype
        )
        self.norm3 = _group_norm(channels, dtype)
        spatial = tuple(y_shape[:-1])
        self.norm1.build(spatial + (channels,))
        self.conv1.build(spatial + (channels + 1,))
        self.norm2.build(spatial + (self.filters,))
        self.conv2.build(spatial + (self.filters + 1,))
        self.norm3.build(spatial + (channels,))

    def call(self, t, y):
        h = self.conv1(self.concat_time(t, tf.nn.relu(self.norm1(y))))
        h = self.conv2(self.concat_time(t, tf.nn.relu(self.norm2(h))))
        return self.norm3(h)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="tfnode")
class ConvODEBlock(NeuralODELayer):
    """The drop-in replacement of a residual block: `y(1)` of the
    `ConvODEFunc` dynamics from `y(0) = inputs`.

    Args:
        filters: Hidden channels of the dynamics. Defaults to `64`.
        kernel_size: Convolution size. Defaults to `3`.
        t: Integration times. Defaults to `(0.0, 1.0)`.
        rtol, atol: Solver tolerances. Default to `1e-3` (the paper's MNIST
            setting).
        **kwargs: `NeuralODELayer` arguments (`method`, `adjoint`, ...) and
            base layer keyword arguments.

    Call arguments:
        y0: Tensor of shape `[B, H, W, C]`.
        t: Optional times overriding the default, as in `NeuralODELayer`.
        training: Whether the call is a training step.

    Returns:
        Tensor of the shape of `y0` (`[B, T, H, W, C]` with
        `return_sequences=True`).

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> h = tfnode.ConvODEBlock(filters=4)(h)
    >>> outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    >>> model = keras.Model(inputs, outputs)
    >>> model(tf.random.normal([2, 8, 8, 1])).shape
    TensorShape([2, 10])
    """

    def __init__(
        self, filters=64, kernel_size=3, t=(0.0, 1.0), rtol=1e-3, atol=1e-3, **kwargs
    ):
        func = ConvODEFunc(
            filters=filters,
            kernel_size=kernel_size,
            dtype=kwargs.get("dtype"),
            name="func",
        )
        super().__init__(func, t=t, rtol=rtol, atol=atol, **kwargs)
        self.filters = func.filters
        self.kernel_size = func.kernel_size

    def get_config(self):
        config = super().get_config()
        del config["func"]
        return {**config, "filters": self.filters, "kernel_size": self.kernel_size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
