"""Shared test utilities: comparisons that explain themselves and execution regimes."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

MODES = ("eager", "graph", "xla")
# A small non-FSAL embedded pair, as `ButcherTableau` fields: Heun's method with
# Euler's as the error estimate (no built-in adaptive method is non-FSAL).
HEUN_EULER = dict(
    name="heun_euler",
    c=(0.0, 1.0),
    a=((), (1.0,)),
    b=(0.5, 0.5),
    order=2,
    b_err=(-0.5, 0.5),
    error_order=1,
)
"""Execution regimes: eagerly, in `tf.function`, in `tf.function(jit_compile=True)`."""

_COMPILED = {}


def in_mode(fn, mode, *, input_signature=None):
    """Returns `fn` to run in `mode`, caching compiled functions across tests.

    The cache is keyed by the function object, so pass module-level functions
    (a closure made inside a test is traced afresh each time it is made).
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}")
    if mode == "eager":
        return fn
    key = (fn, mode, input_signature)
    if key not in _COMPILED:
        _COMPILED[key] = tf.function(
            fn, jit_compile=mode == "xla", input_signature=input_signature
        )
    return _COMPILED[key]


def to_numpy(x):
    """Converts a tensor, or a nested structure of them, to numpy arrays."""
    return tf.nest.map_structure(lambda leaf: np.asarray(leaf), x)


def assert_allclose(actual, desired, *, rtol=0.0, atol=0.0, err_msg=""):
    """Asserts `|actual - desired| <= atol + rtol * |desired|` elementwise.

    Works on nested structures (matched leaf by leaf). On failure the message
    reports the max absolute and relative errors and where they occur, so a
    failing tolerance shows how far off the result is.
    """
    if not tf.nest.is_nested(actual):
        # `desired` may be a list of numbers
        actual, desired = [actual], [np.asarray(desired)]
    tf.nest.assert_same_structure(actual, desired)
    leaves = list(zip(tf.nest.flatten(actual), tf.nest.flatten(desired)))
    for i, (a, d) in enumerate(leaves):
        a = np.asarray(a, np.float64)
        d = np.asarray(d, np.float64)
        where = f" (leaf {i} of {len(leaves)})" if len(leaves) > 1 else ""
        if a.shape != d.shape:
            raise AssertionError(
                f"shape mismatch{where}: {a.shape} vs {d.shape}. {err_msg}"
            )
        if not np.all(np.isfinite(a)):
            raise AssertionError(f"non-finite values in actual{where}: {a}. {err_msg}")
        abs_err = np.abs(a - d)
        rel_err = abs_err / np.maximum(np.abs(d), np.finfo(np.float64).tiny)
        bad = abs_err > atol + rtol * np.abs(d)
        if np.any(bad):
            i_abs = np.unravel_index(np.argmax(abs_err), abs_err.shape)
            i_rel = np.unravel_index(np.argmax(rel_err), rel_err.shape)
            raise AssertionError(
                f"not close{where}: {int(bad.sum())} of {bad.size} elements exceed "
                f"atol={atol:g} + rtol={rtol:g} * |desired|.\n"
                f"  max abs error {abs_err[i_abs]:.3e} at {i_abs} "
                f"(actual {a[i_abs]:.17g}, desired {d[i_abs]:.17g})\n"
                f"  max rel error {rel_err[i_rel]:.3e} at {i_rel}\n{err_msg}"
            )


def max_error(actual, desired):
    """The largest absolute difference over every leaf of two structures."""
    errors = [
        np.max(np.abs(np.asarray(a, np.float64) - np.asarray(d, np.float64)))
        for a, d in zip(tf.nest.flatten(actual), tf.nest.flatten(desired))
    ]
    return float(max(errors))


def stats_tuple(stats):
    """`SolverStats` as a tuple of Python ints, for exact comparison."""
    return tuple(int(x) for x in stats)


def fitted_slope(x, y):
    """Least-squares slope of `log(y)` against `log(x)`."""
    slope, _ = np.polyfit(
        np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64)), 1
    )
    return float(slope)


def write_digits_package(root, per_class, seed=0):
    """Writes `root/src/digits/{0..9}.json` as the npm package stores them (pixels
    as x / 255 rounded to 3 decimals, flat) and returns the uint8 images
    `[10, n, 28, 28]`."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (10, per_class, 28, 28), dtype=np.uint8)
    folder = os.path.join(root, "src", "digits")
    os.makedirs(folder)
    for label in range(10):
        pixels = np.round(images[label].astype(np.float64) / 255, 3).ravel().tolist()
        with open(os.path.join(folder, f"{label}.json"), "w") as f:
            json.dump({"data": pixels}, f)
    return images
