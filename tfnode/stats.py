"""Solver statistics and the status codes that explain a failed solve."""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfnode import _tf_private


class Status(enum.IntEnum):
    """Outcome of a solve, as stored in `SolverStats.status`."""

    SUCCESS = 0
    MAX_STEPS_REACHED = 1
    STEP_SIZE_UNDERFLOW = 2
    NONFINITE = 3
    INVALID_TIMES = 4


def status_message(status: Status | int, *, max_num_steps: int) -> str:
    """The message a user sees for `status`: what happened and what to try."""
    return {
        Status.SUCCESS: "The solve succeeded.",
        Status.MAX_STEPS_REACHED: (
            f"The ODE solver reached `max_num_steps={max_num_steps}` before `t[-1]`. "
            "Increase `max_num_steps`, loosen `rtol`/`atol` (adaptive methods) or "
            "enlarge `step_size` (fixed-step methods); the dynamics may be stiff."
        ),
        Status.STEP_SIZE_UNDERFLOW: (
            # No apostrophes: graph-mode assertions print the message C-escaped (\').
            "The step size of the ODE solver underflowed: the error estimate "
            "stayed above tolerance at steps too small to advance time. "
            "Loosen `rtol`/`atol`, use float64, or check the dynamics for a "
            "singularity or stiffness."
        ),
        Status.NONFINITE: (
            "The ODE solver met a non-finite (NaN or Inf) state or derivative. "
            "Check `y0` and `func` for NaN/Inf, or whether the solution blows up "
            "before `t[-1]`."
        ),
        Status.INVALID_TIMES: (
            "`t` must be strictly increasing or strictly decreasing (in every "
            "column, for per-sample grids of shape [T, B]), with finite values."
        ),
    }[Status(int(status))]


class SolverStats(NamedTuple):
    """Counts of one solve, as scalar int32 tensors; with per-sample steps
    (`per_sample_steps=True`), each field has shape `[B]`, one per sample.

    Attributes:
        nfe: Number of evaluations of `func`.
        num_steps: Number of accepted steps.
        num_rejected: Number of rejected steps (always 0 for fixed-step methods).
        status: A `Status` code; nonzero means the solve failed and the outputs
            are NaN. Under XLA (`jit_compile=True`), where TensorFlow drops
            assertions, this is the only report of a failure.
    """

    nfe: tf.Tensor
    num_steps: tf.Tensor
    num_rejected: tf.Tensor
    status: tf.Tensor


def in_xla_context() -> bool:
    """Whether ops being built now will be compiled by XLA (asserts dropped)."""
    return _tf_private.in_xla_context(tf.compat.v1.get_default_graph())


def raise_on_failure(status, *, max_num_steps, context=""):
    """Raises in eager mode, or adds an assertion in a graph, if `status != 0`.

    `status` is a scalar, or `[B]` with per-sample steps: then the message
    names the failing samples' indices. `context` prefixes the message (e.g.
    which solve failed).

    Under XLA assertions are ignored by TensorFlow, so nothing is added; the
    status and the NaN outputs report the failure. Returns the control
    dependencies to attach to the outputs.
    """
    if tf.executing_eagerly():
        codes = np.asarray(status)
        if codes.ndim == 0:
            if int(codes) != Status.SUCCESS:
                raise tf.errors.InvalidArgumentError(
                    None,
                    None,
                    context + status_message(int(codes), max_num_steps=max_num_steps),
                )
            return []
        failed = np.flatnonzero(codes)
        if not failed.size:
            return []
        others = "; the others are valid" if failed.size < codes.size else ""
        count = f"{failed.size} of {codes.size}{others}"
        kinds = sorted(set(codes[failed].tolist()))
        if len(kinds) == 1:  # the message first, as in graph mode
            message = (
                status_message(kinds[0], max_num_steps=max_num_steps)
                + f" Failing samples: {failed.tolist()} ({count})."
            )
        else:
            message = f"The solve failed for {count} samples. " + " ".join(
                f"Samples {np.flatnonzero(codes == code).tolist()}: "
                + status_message(code, max_num_steps=max_num_steps)
                for code in kinds
            )
        raise tf.errors.InvalidArgumentError(None, None, context + message)
    if in_xla_context():
        return []
    messages = tf.constant(
        [context + status_message(s, max_num_steps=max_num_steps) for s in Status]
    )
    if status.shape.rank == 0:
        return [
            tf.debugging.Assert(
                tf.equal(status, 0), [tf.gather(messages, status)], summarize=1
            )
        ]
    failed = tf.where(status != 0)[:, 0]  # indices of the failing samples
    first = tf.gather(status, tf.argmax(tf.cast(status != 0, tf.int32)))
    return [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(status, 0)),
            [
                tf.gather(messages, first),
                "Failing samples:",
                failed,
                "(",
                tf.size(failed),
                "of",
                tf.size(status),
                ")",
            ],
            summarize=100,
        )
    ]
