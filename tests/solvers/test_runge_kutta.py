"""`runge_kutta.combine`, the stage sums of every Runge-Kutta step, in both of its
forms: one matmul over the stacked stages (outside XLA, from three terms on) and
elementwise products (under XLA, or fewer terms)."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_allclose, in_mode

from tfnode.solvers import runge_kutta

# Leaves of several shapes, including a scalar (the adjoint carries some).
SHAPES = [(), (3,), (2, 4)]
# float64 sums of at most 5 terms of size ~1: a few ulps.
ROUND_OFF = 1e-14


def _combine(y, dt, ks, weights):
    return runge_kutta.combine(y, dt, weights, ks)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize(
    "weights", [(0.5,), (0.25, 0.0, 0.75), (0.1, -0.2, 0.0, 0.3, 0.8)]
)
def test_combine_matches_its_formula(mode, weights):
    rng = np.random.default_rng(0)
    y = [rng.standard_normal(shape) for shape in SHAPES]
    ks = [[rng.standard_normal(shape) for shape in SHAPES] for _ in weights]
    dt = 0.3
    expected = [
        leaf + dt * sum(w * k[i] for w, k in zip(weights, ks))
        for i, leaf in enumerate(y)
    ]
    out = in_mode(_combine, mode)(
        [tf.constant(x) for x in y],
        tf.constant(dt, tf.float64),
        [[tf.constant(x) for x in k] for k in ks],
        weights,
    )
    assert [tuple(x.shape) for x in out] == SHAPES
    assert_allclose([x.numpy() for x in out], expected, rtol=ROUND_OFF, atol=ROUND_OFF)
