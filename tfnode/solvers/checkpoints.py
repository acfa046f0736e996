"""Checkpoints of a solve, and the backward sweep that turns them into exact
gradients in bounded memory.

Forward, a driver `push`es every step it accepts: its interval of `t`, start
time `u` and size `dt` go into three arrays of scalars, and the state at the
start of every `stride`-th step into a buffer of `slots` states. When the
buffer is full, every other checkpoint is dropped and the stride doubles
(online thinning), so the buffer always holds the states at steps `0, stride,
2 stride, ...` of the steps taken so far. States never move: a small table
maps each checkpoint to its slot, and thinning only reorders the table (the
freed slots go to its end), which keeps XLA's buffer updates in place.

Backward, `sweep` visits those segments last to first. A segment is replayed
from its checkpoint into a buffer of its own, with the same scheme one level
down while the segment is longer than `slots` steps, and then differentiated
one step at a time from the last: the step is recomputed from its start state
under a tape, and its vector-Jacobian product carries the cotangent back to
the start of the step. The replays retake the recorded steps, never the
rejected ones, so the gradient is that of the computed solution.

Memory is `slots` states per level, and the number of levels grows with
`log(max_num_steps) / log(slots)` (two levels for `slots=64` up to 4096
steps), plus the three scalars per step. Compute is one forward replay per
level beyond the first, plus each step's recomputation under the tape. This is
Griewank's checkpointing in its simplest multi-level form (Griewank & Walther
2008, §12.3), not revolve's optimal schedule: it needs no knowledge of the
number of steps in advance and compiles to fixed shapes under XLA.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class Records(NamedTuple):
    """What the forward solve keeps for the backward sweep (loop variables)."""

    states: list  # per leaf: [slots + 1, *leaf.shape]; slot `slots` is scratch
    slot: tf.Tensor  # [slots] int32: the slot of checkpoint j is slot[j]
    count: tf.Tensor  # checkpoints held
    stride: tf.Tensor  # steps between checkpoints
    num_steps: tf.Tensor  # steps recorded
    interval: tf.Tensor  # [max_num_steps] int32: the interval of `t` of each step
    u: tf.Tensor  # [max_num_steps] (or [max_num_steps, B]): start of each step
    dt: tf.Tensor  # [max_num_steps] (or [max_num_steps, B]): size of each step
    # With per-sample steps, [max_num_steps, B]: which samples took the step
    # (the others stayed where they were); else ().
    accepted: tuple | tf.Tensor


def start(y0, slots, max_num_steps, per_sample=False):
    """Empty records for a solve from the flat state `y0`.

    With `per_sample` (per-sample steps), a step is an iteration of the solve
    in which some samples took a step of their own size, `u` and `dt` have a
    batch axis, and `accepted` says which samples took it.
    """
    dtype = y0[0].dtype
    batch = [tf.shape(y0[0])[0]] if per_sample else []
    return Records(
        states=[tf.zeros(tf.concat([[slots + 1], tf.shape(y)], 0), dtype) for y in y0],
        slot=tf.range(slots),
        count=tf.constant(0),
        stride=tf.constant(1),
        num_steps=tf.constant(0),
        interval=tf.zeros([max_num_steps], tf.int32),
        u=tf.zeros([max_num_steps, *batch], dtype),
        dt=tf.zeros([max_num_steps, *batch], dtype),
        accepted=tf.zeros([max_num_steps, *batch], tf.bool) if per_sample else (),
    )


def push(records, accept, interval, u, dt, y):
    """Records the step from `(u, y)` of size `dt` if it was accepted (by any
    sample, with per-sample steps: `accept`, `u` and `dt` are then `[B]`).

    Writes happen unconditionally (to the scratch slot, or to entries the next
    recorded step overwrites), so that XLA updates the buffers in place."""
    n = records.num_steps
    slots = records.states[0].shape[0] - 1
    accepted = accept
    accept = tf.reduce_any(accept)
    thin = accept & (records.count == slots) & (n % records.stride == 0)
    # Thinning keeps the checkpoints at even positions, in order, and puts the
    # slots of the others at the end, to be written next.
    kept_first = tf.concat([tf.range(0, slots, 2), tf.range(1, slots, 2)], 0)
    slot = tf.where(thin, tf.gather(records.slot, kept_first), records.slot)
    count = tf.where(thin, (records.count + 1) // 2, records.count)
    stride = tf.where(thin, 2 * records.stride, records.stride)
    checkpoint = accept & (n % stride == 0)
    target = tf.where(checkpoint, slot[tf.minimum(count, slots - 1)], slots)
    index = [[tf.minimum(n, tf.shape(records.u)[0] - 1)]]
    return Records(
        states=[
            tf.tensor_scatter_nd_update(s, [[target]], v[None])
            for s, v in zip(records.states, y)
        ],
        slot=slot,
        count=count + tf.cast(checkpoint, tf.int32),
        stride=stride,
        num_steps=n + tf.cast(accept, tf.int32),
        interval=tf.tensor_scatter_nd_update(records.interval, index, [interval]),
        u=tf.tensor_scatter_nd_update(records.u, index, u[None]),
        dt=tf.tensor_scatter_nd_update(records.dt, index, dt[None]),
        accepted=(
            tf.tensor_scatter_nd_update(records.accepted, index, accepted[None])
            if isinstance(records.accepted, tf.Tensor)
            else ()
        ),
    )


def levels(slots, max_num_steps):
    """Static buffer sizes of the sweep's levels below the forward buffer.

    The forward stride can double while `slots * stride` steps fit in
    `max_num_steps`, so a top segment has at most that stride of steps; each
    level replays a segment into `slots` checkpoints until the longest
    segment fits one buffer. Returns `[(size, longest_segment), ...]`, the
    last entry being the leaf (which stores every state of its segment)."""
    longest = 1
    while slots * longest <= max_num_steps - 1:
        longest *= 2
    sizes = []
    while longest > slots:
        sizes.append((slots, longest))
        longest = -(-longest // slots)
    sizes.append((longest, longest))
    return sizes


def sweep(records, advance, pullback, carry, *, slots, max_num_steps):
    """Runs the backward sweep over the recorded steps, last to first.

    Args:
        records: The forward solve's final `Records`.
        advance: `advance(k, y) -> y1`, step `k` retaken from its start state.
        pullback: `pullback(k, y, carry) -> carry`: the vector-Jacobian product
            of step `k` at its start state `y`, `carry` holding the cotangent
            of the step's end state (and any accumulated gradients).
        carry: The cotangent of the final state (and accumulators).
        slots: States per buffer, as in the forward solve.
        max_num_steps: The forward solve's step bound.

    Returns:
        The `carry` at the start of the first step.
    """
    sizes = levels(slots, max_num_steps)
    n, stride = records.num_steps, records.stride

    def checkpoint(e):
        return [s[records.slot[e]] for s in records.states]

    def every_step_held(carry):
        # Nothing to replay: the most common case, so no segment buffers.
        def back(k, carry):
            return k - 1, pullback(k, checkpoint(k), carry)

        return tf.while_loop(
            lambda k, _: k >= 0, back, (n - 1, carry), maximum_iterations=slots
        )[1]

    def by_segments(carry):
        def body(e, carry):
            first = e * stride
            count = tf.minimum(stride, n - first)
            return e - 1, _segment(
                sizes, checkpoint(e), first, count, carry, advance, pullback
            )

        return tf.while_loop(
            lambda e, _: e >= 0,
            body,
            (records.count - 1, carry),
            maximum_iterations=slots,
        )[1]

    if sizes == [(1, 1)]:  # `max_num_steps <= slots`: the stride never grows
        return every_step_held(carry)
    return tf.cond(
        stride == 1, lambda: every_step_held(carry), lambda: by_segments(carry)
    )


def _segment(sizes, y, first, count, carry, advance, pullback):
    """Differentiates the `count` steps from step `first` (start state `y`)."""
    (size, longest), below = sizes[0], sizes[1:]
    stride = 1 if not below else (count + size - 1) // size
    # Replay: the states at the segment's steps 0, stride, 2 stride, ...
    buffer = [
        tf.tensor_scatter_nd_update(
            tf.zeros(tf.concat([[size + 1], tf.shape(leaf)], 0), leaf.dtype),
            [[0]],
            leaf[None],
        )
        for leaf in y
    ]

    def replay(j, y, buffer):
        y = advance(first + j, y)
        stored = (j + 1) % stride == 0
        slot = tf.where(stored, (j + 1) // stride, size)  # else the scratch slot
        buffer = [
            tf.tensor_scatter_nd_update(b, [[slot]], v[None]) for b, v in zip(buffer, y)
        ]
        return j + 1, y, buffer

    # The last state of a segment is not needed: the next segment starts there.
    _, _, buffer = tf.while_loop(
        lambda j, *_: j < count - 1,
        replay,
        (0, y, buffer),
        maximum_iterations=max(longest - 1, 1),
    )
    if not below:

        def back(j, carry):
            return j - 1, pullback(first + j, [b[j] for b in buffer], carry)

        num = count
    else:

        def back(e, carry):
            start = e * stride
            inner = tf.minimum(stride, count - start)
            y = [b[e] for b in buffer]
            return e - 1, _segment(
                below, y, first + start, inner, carry, advance, pullback
            )

        num = (count + stride - 1) // stride
    _, carry = tf.while_loop(
        lambda i, _: i >= 0, back, (num - 1, carry), maximum_iterations=size
    )
    return carry
