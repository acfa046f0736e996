"""A validated ODE problem and its solve, shared by `odeint`, `odeint_adjoint` and
the checkpointed backprop: inputs are normalised once here (flat state, checked
times, resolved method), failures raise here, the user's structure is restored
here."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tfnode import _validation, solvers
from tfnode.solvers import adaptive, fixed_grid
from tfnode.solvers.controller import PIController
from tfnode.solvers.time_map import rescaled
from tfnode.stats import Status, raise_on_failure


class Problem(NamedTuple):
    """A validated problem: flat state, checked times, resolved method."""

    func: object  # func(t, y_leaves) -> dy_leaves
    y0: list
    t: tf.Tensor
    structure: object
    tableau: solvers.ButcherTableau
    times_ok: tf.Tensor | None


def prepare(func, y0, t, method, per_sample_steps=False, **options) -> Problem:
    """Validates and normalises the inputs once, for `odeint` and `odeint_adjoint`."""
    tableau = solvers.get(method)
    _validation.check_options(tableau, **options)
    y0 = _validation.as_state(y0)
    leaves = _validation.check_state(y0)
    if _validation.check_flag("per_sample_steps", per_sample_steps):
        _validation.check_batched(leaves)
    t, times_ok = _validation.check_times(t, leaves[0].dtype, leaves)
    return Problem(_validation.flat_func(func, y0), leaves, t, y0, tableau, times_ok)


def run_driver(
    tableau,
    func,
    y0,
    t,
    *,
    rtol,
    atol,
    step_size,
    first_step,
    max_num_steps,
    norm=None,
    rescale=rescaled,
    k1=None,
    records=None,
    per_sample_steps=False,
    quadrature=None,
):
    """Runs the adaptive or fixed-grid driver for `tableau` on flat `y0`.

    `k1`: the first stage, if already evaluated (adaptive methods only; see
    `adaptive.solve`). Returns `(ys, stats, next_step)`: `next_step` is the
    step an adaptive controller proposed at the end, `None` for fixed-step
    methods. With `records` (empty `checkpoints.Records`), a fourth element:
    the records of the steps taken. `norm`: the adaptive driver's error norm
    (default: RMS, per sample with `per_sample_steps`).
    """
    more = {} if records is None else {"records": records}
    more["per_sample_steps"] = per_sample_steps
    if quadrature is not None:  # adaptive methods only (the adjoint's choice)
        more["quadrature"] = quadrature
    if tableau.adaptive:
        return adaptive.solve(
            func,
            y0,
            t,
            tableau,
            PIController(rtol=rtol, atol=atol),
            max_num_steps=max_num_steps,
            first_step=first_step,
            norm=norm,
            rescale=rescale,
            k1=k1,
            **more,
        )
    ys, stats, *rec = fixed_grid.solve(
        func,
        y0,
        t,
        tableau,
        step_size=step_size,
        max_num_steps=max_num_steps,
        rescale=rescale,
        **more,
    )
    return (ys, stats, None, *rec)


def solve(problem, func, y0, t, **options):
    """Solves `problem` (with `func`, `y0`, `t` in its flat form), reporting
    times found invalid at run time; no raising, no packing. Returns
    `(ys, stats, next_step)` as `run_driver` (and the records, if asked)."""
    ys, stats, next_step, *rec = run_driver(problem.tableau, func, y0, t, **options)
    if problem.times_ok is not None:
        status = tf.where(problem.times_ok, stats.status, Status.INVALID_TIMES)
        nan = tf.constant(float("nan"), ys[0].dtype)
        ys = [tf.where(problem.times_ok, y, nan) for y in ys]
        stats = stats._replace(status=status)
    return (ys, stats, next_step, *rec)


def finish(problem, ys, stats, *, max_num_steps):
    """Raises on failure where TensorFlow can, then restores the user's structure."""
    checks = raise_on_failure(stats.status, max_num_steps=max_num_steps)
    if checks:
        with tf.control_dependencies(checks):
            ys = [tf.identity(y) for y in ys]
    return tf.nest.pack_sequence_as(problem.structure, ys)
