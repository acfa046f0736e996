"""`PIController` against its documented formulas, in float64."""

import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose

from tfnode.solvers import PIController

CONTROLLER = PIController(rtol=1e-3, atol=1e-6)
# dopri5's error estimate is of order 4, so k = 5 and the default gains give Hairer's
# DOPRI5 exponents, -0.17 on the ratio and 0.04 on the previous ratio.
ERROR_ORDER = 4


def _next_dt(dt, ratio, prev_ratio, accept):
    return float(
        CONTROLLER.next_dt(
            tf.constant(dt, tf.float64),
            tf.constant(ratio, tf.float64),
            tf.constant(prev_ratio, tf.float64),
            tf.constant(accept),
            ERROR_ORDER,
        )
    )


def test_accepted_step_uses_hairer_exponents():
    assert_allclose(
        _next_dt(0.1, 0.5, 0.25, True), 0.1 * 0.9 * 0.5**-0.17 * 0.25**0.04, rtol=1e-12
    )


def test_rejected_step_shrinks_without_integral_term():
    assert_allclose(_next_dt(0.1, 4.0, 1e-3, False), 0.1 * 0.9 * 4.0**-0.2, rtol=1e-12)


@pytest.mark.parametrize(
    "ratio, prev_ratio, accept, factor",
    [
        (1e-12, 1.0, True, 10.0),  # far below tolerance: grows at most ifactor
        (1e6, 1.0, False, 0.2),  # far above tolerance: shrinks at most dfactor
        (1.01, 1.0, False, 0.9 * 1.01**-0.2),  # just rejected: shrinks, never grows
    ],
)
def test_step_factor_is_clipped(ratio, prev_ratio, accept, factor):
    assert_allclose(_next_dt(1.0, ratio, prev_ratio, accept), factor, rtol=1e-12)


def test_error_ratio_is_rms_of_scaled_errors():
    y0 = [tf.constant([1.0, -2.0], tf.float64)]
    y1 = [tf.constant([3.0, 0.5], tf.float64)]
    err = [tf.constant([1e-3, 4e-3], tf.float64)]
    scale = 1e-6 + 1e-3 * np.array([3.0, 2.0])  # atol + rtol * max(|y0|, |y1|)
    expected = np.sqrt(np.mean((np.array([1e-3, 4e-3]) / scale) ** 2))
    assert_allclose(float(CONTROLLER.error_ratio(y0, y1, err)), expected, rtol=1e-12)
