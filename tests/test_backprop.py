"""Proof that `tfnode.odeint`'s checkpointed gradient is the exact gradient of
the computed solution, in bounded memory.

The checkpointed sweep (`checkpoints=N`, and under XLA always) against plain
backprop through the solver's `tf.while_loop` (TensorFlow's own gradient, what
`odeint` did before; under XLA reached through the internal solve), in the
same mode, so that both differentiate the very same steps and agree to
round-off; and against central finite differences. Every mode (eager,
`tf.function`, XLA), adaptive and fixed-step methods, shared and per-sample
grids, reversed time, nested states, Keras layers and plain callables,
float64 and float32. `checkpoints=3` thins the forward buffer several times
and replays on two levels below it (an odd count: thinning keeps ceil(3 / 2));
`checkpoints=None` under XLA holds every step. A count of the backward evaluations shows
that the sweep retakes each accepted step exactly once and no rejected one;
a subprocess shows that XLA's memory does not follow `max_num_steps`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_allclose, in_mode

import tfnode
from tfnode import _problem
from tfnode.solvers import checkpoints as checkpoints_lib

# Both gradients run the same float64 operations in another order (the sweep
# recomputes each step under a tape; XLA fuses differently): measured up to
# 3e-15 relative. 1e-10 (the bound) leaves room for longer solves; a
# skipped, repeated or rejected step moves a gradient by 1e-3 or more.
F64_RTOL = 1e-10
# float32: the same operations, round-off ~1e-7 relative per step; measured
# up to 2e-6 over these solves. The bound.
F32_RTOL = 1e-5
# Central differences with step FD_STEP on a float64 solve at rtol = atol =
# 1e-12 (the gradient of the computed solution, whose step sequence stays
# fixed for steps this small): truncation ~ FD_STEP^2 ~ 1e-12, solver noise
# below that. Measured gap 3e-9; the bound is 10x.
FD_STEP = 1e-6
FD_RTOL = 3e-8
# The recursion's depth follows log(max_num_steps), and tracing time with it;
# these solves take 7-12 steps.
MAX_STEPS = 32
CHECKPOINTS = 3

B, D = 3, 2
TIMES = [0.0, 0.3, 1.1, 2.0]
PER_SAMPLE_TIMES = [[0.0, 0.1, -0.2], [0.4, 0.5, 0.7], [1.3, 0.9, 1.5], [2.0, 2.2, 1.9]]


class Mlp(tf.Module):
    """Time-dependent tanh dynamics with O(1) weights, on variables."""

    def __init__(self, dtype):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w1 = tf.Variable(rng.normal(size=(D + 1, 8)), dtype=dtype)
        self.w2 = tf.Variable(rng.normal(size=(8, D)) * 0.5, dtype=dtype)

    def __call__(self, t, y):
        t = tf.broadcast_to(tf.reshape(tf.cast(t, y.dtype), [-1, 1]), [B, 1])
        return tf.tanh(tf.concat([y, t], 1) @ self.w1) @ self.w2


FUNCS = {dtype: Mlp(dtype) for dtype in (tf.float64, tf.float32)}


def _y0(dtype=tf.float64):
    return tf.constant(np.random.default_rng(1).normal(size=(B, D)), dtype)


def _weights(num_times, dtype=tf.float64):
    return tf.constant(np.random.default_rng(2).normal(size=(num_times, B, D)), dtype)


def _plain_odeint(func, y0, t, **options):
    """`odeint` differentiated by TensorFlow's own gradient of its loop, in
    every mode (under XLA it preallocates `max_num_steps` steps)."""
    problem = _problem.prepare(func, y0, t, options.pop("method"), **options)
    ys, stats, _ = _problem.solve(
        problem, problem.func, problem.y0, problem.t, **options
    )
    return _problem.finish(problem, ys, stats, max_num_steps=options["max_num_steps"])


def _gradients(
    y0, t, weights, *, method, checkpoints, dtype, step_size=None, max_steps=MAX_STEPS
):
    """Gradients of `sum(weights * ys)` for `[y0, t, w1, w2]`; `checkpoints`
    "plain" for TensorFlow's own gradient."""
    func = FUNCS[dtype]
    options = dict(
        method=method,
        rtol=1e-6,
        atol=1e-6,
        step_size=step_size,
        first_step=None,
        max_num_steps=max_steps,
    )
    with tf.GradientTape() as tape:
        tape.watch([y0, t])
        if checkpoints == "plain":
            ys = _plain_odeint(func, y0, t, **options)
        else:
            ys = tfnode.odeint(func, y0, t, checkpoints=checkpoints, **options)
        loss = tf.reduce_sum(weights * ys)
    return tape.gradient(loss, [y0, t, func.w1, func.w2])


# One traced function per configuration, cached by `in_mode` across tests.
_CONFIGS = {}


def _gradient_fn(method, checkpoints, dtype, step_size, max_steps=MAX_STEPS):
    key = (method, checkpoints, dtype, step_size, max_steps)
    if key not in _CONFIGS:

        def fn(y0, t, weights):
            return _gradients(
                y0,
                t,
                weights,
                method=method,
                checkpoints=checkpoints,
                dtype=dtype,
                step_size=step_size,
                max_steps=max_steps,
            )

        _CONFIGS[key] = fn
    return _CONFIGS[key]


def _compare(
    mode,
    method,
    checkpoints,
    *,
    dtype=tf.float64,
    times=TIMES,
    rtol=F64_RTOL,
    max_steps=MAX_STEPS,
):
    step_size = None if tfnode.solvers.get(method).adaptive else 0.25
    t = tf.constant(times, dtype)
    y0, weights = _y0(dtype), _weights(t.shape[0], dtype)
    plain = _gradient_fn(method, "plain", dtype, step_size, max_steps)
    checkpointed = _gradient_fn(method, checkpoints, dtype, step_size, max_steps)
    got = in_mode(checkpointed, mode)(y0, t, weights)
    # The same mode: XLA's float32 round-off can flip an accept/reject
    # decision, and then the two solves differ by their errors.
    want = in_mode(plain, mode)(y0, t, weights)
    for name, g, w in zip(["y0", "t", "w1", "w2"], got, want):
        scale = np.max(np.abs(w))
        assert scale > 0, name
        assert_allclose(g, w, atol=rtol * scale, err_msg=f"d loss / d {name}")


@pytest.mark.parametrize(
    "mode, method",
    [
        ("eager", "dopri5"),
        # Secondary variants, run with `-m slow` (the suite's time budget).
        pytest.param("graph", "dopri5", marks=pytest.mark.slow),
        ("xla", "dopri5"),
        ("xla", "rk4"),
    ],
)
def test_recursive_sweep_equals_plain_backprop(mode, method):
    """Thinning and replays on every level of the recursion."""
    _compare(mode, method, CHECKPOINTS)


@pytest.mark.slow
def test_third_order_method_with_hermite_dense_output():
    """bosh3 (cubic Hermite outputs) takes more steps here than 32."""
    _compare("xla", "bosh3", 8, max_steps=128)


def test_every_step_held_equals_plain_backprop():
    """`checkpoints=None` under XLA with the layer's `max_num_steps=1000`: 64
    slots, a stride that could grow (the `tf.cond` between replaying and not),
    and no replay at all for these solves."""
    _compare("xla", "dopri5", None, max_steps=1000)


@pytest.mark.slow
def test_reversed_time():
    _compare("xla", "dopri5", CHECKPOINTS, times=TIMES[::-1])


def test_per_sample_grids():
    _compare("xla", "dopri5", CHECKPOINTS, times=PER_SAMPLE_TIMES)


def test_float32():
    _compare("xla", "dopri5", CHECKPOINTS, dtype=tf.float32, rtol=F32_RTOL)


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_finite_differences_float64(mode):
    """The gradient of the computed solution, for y0, every t[i] and both
    weights, against central differences of the solve itself."""
    func = FUNCS[tf.float64]
    t0 = np.array(TIMES)
    y0, weights = _y0(), _weights(len(TIMES))
    tight = dict(rtol=1e-12, atol=1e-12, max_num_steps=200, checkpoints=4)

    def loss_fn(y0, t):
        return tf.reduce_sum(weights * tfnode.odeint(func, y0, t, **tight))

    @tf.function(jit_compile=mode == "xla")
    def grads(y0, t):
        with tf.GradientTape() as tape:
            tape.watch([y0, t])
            loss = loss_fn(y0, t)
        return tape.gradient(loss, [y0, t, func.w1, func.w2])

    loss_only = tf.function(loss_fn)  # the forward solve is the same in any mode
    g_y0, g_t, g_w1, g_w2 = grads(y0, tf.constant(t0))
    rng = np.random.default_rng(3)
    for name, grad, direction in [
        ("y0", g_y0, rng.normal(size=(B, D))),
        ("t", g_t, rng.normal(size=t0.shape)),
        ("w1", g_w1, rng.normal(size=func.w1.shape)),
        ("w2", g_w2, rng.normal(size=func.w2.shape)),
    ]:

        def loss_at(step):
            y, t = y0, t0
            weight = getattr(func, name, None)
            if name == "y0":
                y = y0 + step * direction
            elif name == "t":
                t = t0 + step * direction
            else:
                weight.assign_add(step * direction)
            value = loss_only(y, tf.constant(t))
            if weight is not None:
                weight.assign_sub(step * direction)
            return float(value)

        fd = (loss_at(FD_STEP) - loss_at(-FD_STEP)) / (2 * FD_STEP)
        exact = float(np.sum(np.asarray(grad) * direction))
        assert abs(exact - fd) <= FD_RTOL * abs(fd), (name, exact, fd)


def test_nested_state_and_keras_layer():
    """A tuple state and a Keras layer (its weights passed as explicit values)."""

    class Coupled(keras.layers.Layer):
        def build(self, t_shape, y_shape):
            self.a = self.add_weight(shape=(D, D), initializer="ones", dtype="float64")

        def call(self, t, y):
            x, v = y
            return v, -tf.tanh(x @ self.a)

    layer = Coupled(dtype="float64")
    y0 = (_y0(), 0.5 * _y0())
    t = tf.constant(TIMES, tf.float64)
    weights = _weights(len(TIMES))

    def grads(y0, checkpoints):
        with tf.GradientTape() as tape:
            tape.watch(y0)
            xs, vs = tfnode.odeint(
                layer,
                y0,
                t,
                rtol=1e-6,
                atol=1e-6,
                max_num_steps=MAX_STEPS,
                checkpoints=checkpoints,
            )
            loss = tf.reduce_sum(weights * xs) + tf.reduce_sum(weights**2 * vs)
        return tape.gradient(loss, [*y0, layer.a])

    want = tf.function(grads)(y0, None)
    got = tf.function(grads)(y0, CHECKPOINTS)
    for g, w in zip(got, want):
        assert_allclose(g, w, atol=F64_RTOL * np.max(np.abs(w)))


class _Counting(tf.Module):
    """`-k y` with a counter of evaluations; `k` large enough for rejections."""

    def __init__(self):
        super().__init__()
        self.k = tf.Variable(30.0, dtype=tf.float64)
        self.calls = tf.Variable(0, trainable=False)

    def __call__(self, t, y):
        self.calls.assign_add(1)
        return -self.k * tf.sin(y)


def test_sweep_retakes_each_accepted_step_once():
    """Backward evaluations are exactly 7 per accepted dopri5 step (its first
    stage and the six after it, under the tape) when every step is held: a
    skipped, repeated or rejected step changes the count. With 2 slots the
    replays add evaluations but the gradient stays the same."""
    func = _Counting()
    y0 = tf.constant([[1.0], [2.0]], tf.float64)
    t = tf.constant([0.0, 0.5, 1.0], tf.float64)

    @tf.function
    def run(checkpoints):
        with tf.GradientTape() as tape:
            tape.watch(y0)
            ys, stats = tfnode.odeint(
                func,
                y0,
                t,
                rtol=1e-6,
                atol=1e-6,
                first_step=1.0,
                max_num_steps=64,
                checkpoints=checkpoints,
                return_stats=True,
            )
            loss = tf.reduce_sum(ys[1:])
        forward = func.calls.read_value()
        grads = tape.gradient(loss, [y0, func.k])
        return grads, stats, forward, func.calls.read_value() - forward

    grads, stats, _, backward_nfe = run(64)
    assert int(stats.num_rejected) > 0  # the first step of 1.0 is rejected
    assert int(backward_nfe) == 7 * int(stats.num_steps)
    replayed, _, _, _ = run(CHECKPOINTS)
    for g, w in zip(replayed, grads):
        assert_allclose(g, w, atol=F64_RTOL * np.max(np.abs(w)))


def test_failed_solve_gives_nan_gradients_under_xla():
    func = FUNCS[tf.float64]

    @tf.function(jit_compile=True)
    def grads(y0):
        with tf.GradientTape() as tape:
            tape.watch(y0)
            ys, stats = tfnode.odeint(
                func,
                y0,
                tf.constant(TIMES, tf.float64),
                rtol=1e-12,
                atol=1e-12,
                max_num_steps=3,
                return_stats=True,
            )
            loss = tf.reduce_sum(ys)
        return tape.gradient(loss, y0), stats.status

    g, status = grads(_y0())
    assert int(status) == tfnode.Status.MAX_STEPS_REACHED
    assert np.all(np.isnan(g))


def test_second_derivatives_raise():
    """The sweep differentiates what the forward recorded as constants: its
    gradient must not be differentiated again silently."""
    func, y0 = FUNCS[tf.float64], _y0()

    @tf.function(jit_compile=True)
    def hessian_vector(y0):
        with tf.GradientTape() as outer:
            outer.watch(y0)
            with tf.GradientTape() as inner:
                inner.watch(y0)
                loss = tf.reduce_sum(tfnode.odeint(func, y0, [0.0, 1.0]) ** 2)
            total = tf.reduce_sum(inner.gradient(loss, y0))
        return outer.gradient(total, y0)

    with pytest.raises(NotImplementedError, match="cannot be differentiated again"):
        hessian_vector(y0)


@pytest.mark.parametrize("slots", [2, 3, 5, 8])
@pytest.mark.parametrize("max_num_steps", [7, 33])
def test_push_and_sweep_visit_every_step_once_from_its_state(slots, max_num_steps):
    """The bookkeeping alone, eagerly (where an out-of-range write raises): the
    state of step k is k, steps alternate with rejected attempts, and the sweep
    must pull back every step once, last to first, from state k."""
    for num_steps in sorted({1, slots - 1, slots, slots + 1, max_num_steps}):
        if num_steps < 1 or num_steps > max_num_steps:
            continue
        records = checkpoints_lib.start([tf.zeros([])], slots, max_num_steps)
        for k in range(num_steps):
            y = [tf.constant(float(k))]
            u, dt = tf.constant(k / 100), tf.constant(0.01)
            rejected = tf.constant(False)
            records = checkpoints_lib.push(records, rejected, 0, u, dt, [-y[0]])
            records = checkpoints_lib.push(records, ~rejected, 0, u, dt, y)
        visits = []

        def advance(k, y):
            return [y[0] + 1.0]

        def pullback(k, y, carry, visits=visits):
            visits.append((int(k), float(y[0])))
            return carry

        checkpoints_lib.sweep(
            records,
            advance,
            pullback,
            tf.zeros([]),
            slots=slots,
            max_num_steps=max_num_steps,
        )
        expected = [(k, float(k)) for k in reversed(range(num_steps))]
        assert visits == expected, (slots, max_num_steps, num_steps)


@pytest.mark.parametrize("checkpoints", [1, 0, 2.5, True, "8"])
def test_checkpoints_must_be_an_integer_of_at_least_2(checkpoints):
    with pytest.raises(ValueError, match="`checkpoints` must be None .* integer >= 2"):
        tfnode.odeint(
            lambda t, y: -y, tf.ones([2]), [0.0, 1.0], checkpoints=checkpoints
        )


def test_levels_bound_memory_by_log_of_max_num_steps():
    """The sweep's buffers: two levels of 64 up to 4096 steps, one more at 8
    slots per factor of 8, never `max_num_steps` states."""
    assert checkpoints_lib.levels(64, 4096) == [(64, 64)]
    assert checkpoints_lib.levels(64, 256) == [(4, 4)]
    assert checkpoints_lib.levels(64, 64) == [(1, 1)]
    assert checkpoints_lib.levels(8, 4096) == [(8, 512), (8, 64), (8, 8)]
    assert checkpoints_lib.levels(2, 64) == [(2, 32), (2, 16), (2, 8), (2, 4), (2, 2)]


# Runs in a fresh process (the kernel's peak-RSS mark is per process): one
# forward + backward under XLA at max_num_steps 256 and 4096, after warm-up
# calls that trace and compile both; prints the peak resident memory of each
# call above the memory just before it.
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, tfnode

    def status_kb(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])

    rng = np.random.default_rng(0)
    w = tf.Variable(rng.normal(size=(64, 64)).astype("float32") / 8)
    y0 = tf.constant(rng.normal(size=(256, 64)).astype("float32"))
    t = tf.linspace(0.0, 1.0, 11)

    def make(max_num_steps):
        @tf.function(jit_compile=True)
        def fn(y0):
            with tf.GradientTape() as tape:
                tape.watch(y0)
                ys = tfnode.odeint(lambda t, y: tf.tanh(y @ w), y0, t,
                                   rtol=1e-6, atol=1e-6, max_num_steps=max_num_steps)
                loss = tf.reduce_sum(ys ** 2)
            return tape.gradient(loss, [y0, w])
        return fn

    fns = {n: make(n) for n in (256, 4096)}
    for fn in fns.values():
        fn(y0)
    out = {}
    for n, fn in fns.items():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = status_kb("VmRSS")
        fn(y0)[0].numpy()
        out[n] = status_kb("VmHWM") - start
    print("RESULT", json.dumps(out))
    """
)
# Both cases hold the same buffers but for the leaf level's (4 vs 64 states of
# 64 KB) and the per-step scalars (3 x 4096 x 4 bytes): 4 MB apart at most.
# TensorFlow's own gradient of the loop preallocated all 4096 steps (4.4 GB on
# the benchmark problem, whose state is 4x smaller). Measured above the start:
# 5.2-6.0 MB at 256 (run first) and 1.5 MB at 4096.
MEMORY_SLACK_KB = 16 * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_xla_memory_does_not_follow_max_num_steps():
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT")][-1]
    peak = {int(k): v for k, v in json.loads(line.split(" ", 1)[1]).items()}
    assert peak[4096] <= peak[256] + MEMORY_SLACK_KB, peak
