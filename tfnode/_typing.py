"""Type aliases used in public signatures."""

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

TensorLike = tf.Tensor | tf.Variable | np.ndarray | float | list
"""Anything `tf.convert_to_tensor` accepts."""

TimeLike = TensorLike
"""Times: shape `[T]`, or `[T, B]` for per-sample grids."""

State = Any
"""A tensor or a nested structure (tuple, list, dict) of tensors."""

ODEFunction = Callable[[tf.Tensor, State], State]
"""`func(t, y) -> dy/dt`, with the structure of `y`."""
