"""Proof that `tfnode.odeint_adjoint` computes the right gradients.

Gradients three ways, none trusted alone: the adjoint against
central finite differences of an independent float64 solver (scipy's DOP853),
against plain backprop through `tfnode.odeint`, and against the closed-form
gradient of a linear ODE. The checks run eagerly, in `tf.function` ("graph")
and in `tf.function(jit_compile=True)` ("xla"), and for every way of handing
parameters to the adjoint: a Keras layer, a `tf.Module`, and a plain callable
with `params=[...]` holding variables or plain tensors.

Everything is float64 except `test_float32_gradients`. Problems are tiny
(batch 3, state 2) because eager mode is about 40x slower than graph mode, and
tracing the adjoint costs 2-5 s per function, so compiled functions are cached
and shared between tests. Combinations that exercise no code path the default
ones miss are marked `slow` (run them with `-m slow`).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import tensorflow as tf
from helpers import assert_allclose, in_mode
from tensorflow.python.eager import record

import tfnode

# The solver tolerance of every adjoint and backprop solve compared below.
TIGHT = dict(rtol=1e-10, atol=1e-10)
MAX_STEPS = 1000  # bounds the checkpoint levels of backprop under XLA (tracing time)

# Adjoint vs central finite differences of scipy's DOP853 solution at
# rtol = atol = 1e-13 with step FD_STEP: the difference quotient has
# truncation error ~ FD_STEP^2 |L'''| / 6 ~ 1e-11 and solver noise
# ~ 1e-13 / FD_STEP ~ 1e-8 at worst (measured: FD with steps 1e-5 and 1e-4
# agree to 5e-9, and the adjoint at TIGHT agrees with FD to 2e-10 on
# gradients of size 0.05-1.5). 1e-8 is 50x the measured gap.
FD_STEP = 1e-5
FD_RTOL = 1e-8
FD_ATOL = 1e-8

# Adjoint at TIGHT vs `odeint` backprop at BACKPROP_TIGHT. Backprop is the
# less accurate of the two for dL/dt: it differentiates the dense-output
# interpolant in the output time, which loses an order. At 1e-10 its dL/dt
# was up to 1.3e-7 off the finite-difference gradient (per-sample reversed
# grid) where the adjoint's was 7e-11, so backprop solves 100x tighter:
# measured gap <= 1.1e-9 (dL/dt; <= 2e-10 elsewhere). 1e-8 is 9x that; a
# wrong term in any vector-Jacobian product is O(1e-3) or more.
BACKPROP_TIGHT = dict(rtol=1e-12, atol=1e-12)
BACKPROP_RTOL = 1e-8
BACKPROP_ATOL = 1e-8

# Adjoint vs the closed form of the linear ODE (scipy's expm / expm_frechet,
# exact to ~1e-14): only the adjoint's solver error at TIGHT, measured 2e-11.
LINEAR_RTOL = 1e-9
LINEAR_ATOL = 1e-9


def assert_grads_close(actual, desired, names, *, rtol, atol):
    assert len(actual) == len(desired) == len(names)
    for a, d, name in zip(actual, desired, names):
        assert a is not None, f"{name}: gradient is None"
        assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=name)


def numpy_list(tensors):
    return [t.numpy() for t in tensors]


# ---------------------------------------------------------------------------
# The MLP problem: f(t, y) = W2^T tanh(W1^T [y, t] + b1) + b2 (time-dependent)

BATCH, STATE, HIDDEN = 3, 2, 6
TIMES = np.array([0.1, 0.35, 0.8, 1.3])  # t[0] != 0, uneven: every t[i] matters


def _mlp_problem(seed=0):
    rng = np.random.default_rng(seed)
    weights = [
        rng.standard_normal((STATE + 1, HIDDEN)) / np.sqrt(STATE + 1),
        0.3 * rng.standard_normal(HIDDEN),
        rng.standard_normal((HIDDEN, STATE)) / np.sqrt(HIDDEN),
        0.3 * rng.standard_normal(STATE),
    ]
    y0 = rng.standard_normal((BATCH, STATE))
    # Random weights on every output: the loss depends on each ys[i].
    loss_weights = rng.standard_normal((len(TIMES), BATCH, STATE))
    return weights, y0, loss_weights


WEIGHTS, Y0, LOSS_WEIGHTS = _mlp_problem()
GRAD_NAMES = ("dL/dy0", "dL/dt", "dL/dW1", "dL/db1", "dL/dW2", "dL/db2")


def time_column(t, y):
    """`t` (scalar, or `[B]` for per-sample grids)
    as a `[B, 1]` column for `y` `[B, D]`."""
    return tf.broadcast_to(
        tf.reshape(tf.cast(t, y.dtype), [-1, 1]), [tf.shape(y)[0], 1]
    )


def mlp(t, y, w1, b1, w2, b2):
    h = tf.tanh(tf.matmul(tf.concat([y, time_column(t, y)], 1), w1) + b1)
    return tf.matmul(h, w2) + b2


class KerasMLP(keras.layers.Layer):
    """The MLP as a Keras layer with Dense sublayers: `call(t, y)`."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float64", **kwargs)
        self.hidden = keras.layers.Dense(HIDDEN, activation="tanh", dtype="float64")
        self.out = keras.layers.Dense(STATE, dtype="float64")

    def build(self, t_shape, y_shape):
        self.hidden.build((None, STATE + 1))
        self.out.build((None, HIDDEN))

    def call(self, t, y):
        return self.out(self.hidden(tf.concat([y, time_column(t, y)], 1)))


class ModuleMLP(tf.Module):
    """The MLP as a `tf.Module` owning its variables."""

    def __init__(self, weights):
        super().__init__()
        # Attribute names sort differently from the canonical order (and
        # `tf.Module.trainable_variables` sorts by name), so a gradient routed
        # by position instead of by variable would show.
        self.z_w1, self.a_b1, self.y_w2, self.b_b2 = (tf.Variable(w) for w in weights)

    def __call__(self, t, y):
        return mlp(t, y, self.z_w1, self.a_b1, self.y_w2, self.b_b2)


def _keras_mlp():
    layer = KerasMLP()
    layer(tf.zeros([], tf.float64), tf.zeros([BATCH, STATE], tf.float64))
    variables = [
        layer.hidden.kernel,
        layer.hidden.bias,
        layer.out.kernel,
        layer.out.bias,
    ]
    for v, w in zip(variables, WEIGHTS):
        v.assign(w)
    return layer, variables


@functools.cache
def dynamics(kind):
    """`bind(param_tensors) -> (func, params, sources)` for each way of giving
    `func` its parameters; `sources` are what the gradient is taken of, in the
    order W1, b1, W2, b2."""
    if kind == "keras":  # default params: the layer's trainable weights
        layer, variables = _keras_mlp()
        return lambda _: (layer, None, variables)
    if kind == "keras_params":  # a plain callable over a Keras layer's weights
        layer, variables = _keras_mlp()
        return lambda _: (
            lambda t, y: layer(t, y),
            list(layer.trainable_variables),
            variables,
        )
    if kind == "module":  # default params: the module's trainable variables
        module = ModuleMLP(WEIGHTS)
        return lambda _: (
            module,
            None,
            [module.z_w1, module.a_b1, module.y_w2, module.b_b2],
        )
    if kind == "variables":
        variables = [tf.Variable(w) for w in WEIGHTS]
        return lambda _: (lambda t, y: mlp(t, y, *variables), variables, variables)
    if kind == "tensors":
        # Plain tensors arrive as arguments of the (traced) function, as a
        # user's would, and are watched by the caller's tape.
        return lambda tensors: (lambda t, y: mlp(t, y, *tensors), tensors, tensors)
    raise ValueError(kind)


@functools.cache
def mlp_gradient_fn(kind, mode, solver):
    """`(y0, t, weights) -> (grads, nfe_before_gradient)` in `mode`, with
    `grads = [dL/dy0, dL/dt, dL/dW1, ...]` of `L = sum(LOSS_WEIGHTS * ys)`;
    `solver` is "backprop" or "adjoint_<norm>". Returns also the
    `BackwardStats` that the adjoint writes."""
    bind = dynamics(kind)
    bstats = tfnode.BackwardStats()

    def gradients(y0, t, weights):
        with tf.GradientTape() as tape:
            tape.watch([y0, t, *weights])
            func, params, sources = bind(weights)
            if solver == "backprop":
                ys = tfnode.odeint(
                    func, y0, t, **BACKPROP_TIGHT, max_num_steps=MAX_STEPS
                )
            else:
                ys = tfnode.odeint_adjoint(
                    func,
                    y0,
                    t,
                    params=params,
                    **TIGHT,
                    max_num_steps=MAX_STEPS,
                    adjoint_norm=solver.removeprefix("adjoint_"),
                    backward_stats=bstats,
                )
            loss = tf.reduce_sum(LOSS_WEIGHTS * ys)
        nfe_before = bstats.nfe.read_value()
        return tape.gradient(loss, [y0, t, *sources]), nfe_before

    return in_mode(gradients, mode), bstats


@functools.cache
def mlp_gradients(kind, mode, solver="adjoint_seminorm"):
    """Gradients (cached: computed once per configuration), the backward NFE
    read before the gradient was taken, and the backward statistics."""
    fn, bstats = mlp_gradient_fn(kind, mode, solver)
    grads, nfe_before = fn(
        tf.constant(Y0), tf.constant(TIMES), [tf.constant(w) for w in WEIGHTS]
    )
    stats = tfnode.SolverStats(*(int(x) for x in bstats.result()))
    return numpy_list(grads), int(nfe_before), stats


def _numpy_mlp_loss(y0, times, weights):
    """`L` from scipy's DOP853 at rtol = atol = 1e-13: independent of tfnode."""
    w1, b1, w2, b2 = weights

    def rhs(t, y):
        y = y.reshape(BATCH, STATE)
        z = np.concatenate([y, np.full((BATCH, 1), t)], 1)
        return (np.tanh(z @ w1 + b1) @ w2 + b2).ravel()

    sol = scipy.integrate.solve_ivp(
        rhs,
        (times[0], times[-1]),
        y0.ravel(),
        method="DOP853",
        t_eval=times,
        rtol=1e-13,
        atol=1e-13,
    )
    assert sol.success, sol.message
    ys = sol.y.T.reshape(len(times), BATCH, STATE)
    ys[0] = y0  # exactly y0, as odeint returns
    return float(np.sum(LOSS_WEIGHTS * ys))


@functools.cache
def finite_difference_gradients():
    """Central differences of `_numpy_mlp_loss` for y0, every t[i], every weight."""
    args = [Y0, TIMES, *WEIGHTS]

    def loss(args):
        return _numpy_mlp_loss(args[0], args[1], args[2:])

    grads = []
    for k, arg in enumerate(args):
        grad = np.zeros_like(arg)
        for idx in np.ndindex(arg.shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[k][idx] += FD_STEP
            minus[k][idx] -= FD_STEP
            grad[idx] = (loss(plus) - loss(minus)) / (2 * FD_STEP)
        grads.append(grad)
    return grads


def test_finite_differences_see_every_input():
    """The reference is nonzero everywhere, so a missing contribution cannot
    pass by matching a zero."""
    for grad, name in zip(finite_difference_gradients(), GRAD_NAMES):
        assert np.min(np.abs(grad)) > 1000 * FD_ATOL, name


# Every (kind, mode) pair; the default suite runs those that cover distinct
# code paths: the Keras layer (values passed in, `stateless_call`) in every
# mode; variables read by `func` (routed through `custom_gradient`'s
# `variables=`, in arbitrary order in eager mode, sorted by name in graphs)
# from a `tf.Module` eagerly and a plain callable in a graph (and under XLA in
# `test_linear_ode_closed_form`); plain tensors in eager and graph mode.
_DEFAULT_CASES = {
    ("keras", "eager"),
    ("keras", "graph"),
    ("keras", "xla"),
    ("module", "eager"),
    ("variables", "graph"),
    ("tensors", "eager"),
    ("tensors", "graph"),
}
GRADIENT_CASES = [
    pytest.param(
        kind, mode, marks=() if (kind, mode) in _DEFAULT_CASES else pytest.mark.slow
    )
    for kind in ("keras", "module", "variables", "tensors")
    for mode in ("eager", "graph", "xla")
] + [pytest.param("keras_params", "graph")]  # keras.Variables passed in `params=`
# Backprop under XLA compiles a second large function per case, and the XLA
# adjoint is already checked against finite differences.
BACKPROP_CASES = [
    case
    if case.values[1] != "xla"
    else pytest.param(*case.values, marks=pytest.mark.slow)
    for case in GRADIENT_CASES
]


@pytest.mark.parametrize("kind, mode", GRADIENT_CASES)
def test_adjoint_vs_finite_differences(kind, mode):
    grads, _, _ = mlp_gradients(kind, mode)
    assert_grads_close(
        grads, finite_difference_gradients(), GRAD_NAMES, rtol=FD_RTOL, atol=FD_ATOL
    )


@pytest.mark.parametrize("kind, mode", BACKPROP_CASES)
def test_adjoint_vs_backprop(kind, mode):
    # Backprop does not depend on how the parameters are passed: one per mode.
    grads, _, _ = mlp_gradients(kind, mode)
    backprop, _, _ = mlp_gradients("variables", mode, "backprop")
    assert_grads_close(
        grads, backprop, GRAD_NAMES, rtol=BACKPROP_RTOL, atol=BACKPROP_ATOL
    )


# ---------------------------------------------------------------------------
# Linear ODE dy/dt = A y: the gradient in closed form

LIN_A = np.array([[-0.5, 1.2, 0.3], [-0.9, -0.2, 0.4], [0.2, -0.6, -0.4]])
LIN_Y0 = np.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.1]])
LIN_T = np.array([0.2, 0.5, 1.1, 1.7])
LIN_W = np.random.default_rng(1).standard_normal((len(LIN_T), *LIN_Y0.shape))


def linear_gradients_exact():
    """`L = sum_i sum_b w_ib . expm(A s_i) y0_b = sum_i <M_i, W_i^T Y0>` with
    `M_i = expm(A s_i)`, `s_i = t_i - t_0`: dL/dy0, dL/dt and dL/dA (entry by
    entry, from the Frechet derivative of expm in direction `E_jk s_i`)."""
    n = LIN_A.shape[0]
    grad_y0 = LIN_W[0].copy()  # ys[0] is y0 itself
    grad_t = np.zeros_like(LIN_T)
    grad_a = np.zeros_like(LIN_A)
    for i in range(1, len(LIN_T)):
        s = LIN_T[i] - LIN_T[0]
        m = scipy.linalg.expm(LIN_A * s)
        outer = LIN_W[i].T @ LIN_Y0
        grad_y0 += LIN_W[i] @ m
        rate = np.sum((LIN_A @ m) * outer)  # dL_i/ds_i, as dM_i/ds_i = A M_i
        grad_t[i] += rate
        grad_t[0] -= rate
        for j, k in np.ndindex(n, n):
            direction = np.zeros((n, n))
            direction[j, k] = s
            _, dm = scipy.linalg.expm_frechet(LIN_A * s, direction)
            grad_a[j, k] += np.sum(dm * outer)
    return [grad_y0, grad_t, grad_a]


@functools.cache
def linear_gradient_fn(mode):
    a = tf.Variable(LIN_A)

    def gradients(y0, t):
        with tf.GradientTape() as tape:
            tape.watch([y0, t])
            ys = tfnode.odeint_adjoint(
                lambda t, y: tf.matmul(y, a, transpose_b=True),
                y0,
                t,
                params=[a],
                **TIGHT,
            )
            loss = tf.reduce_sum(LIN_W * ys)
        return tape.gradient(loss, [y0, t, a])

    return in_mode(gradients, mode)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_linear_ode_closed_form(mode):
    grads = linear_gradient_fn(mode)(tf.constant(LIN_Y0), tf.constant(LIN_T))
    assert_grads_close(
        numpy_list(grads),
        linear_gradients_exact(),
        ("dL/dy0", "dL/dt", "dL/dA"),
        rtol=LINEAR_RTOL,
        atol=LINEAR_ATOL,
    )


# ---------------------------------------------------------------------------
# Time grids, fixed steps, state structures, float32: adjoint == backprop

_PER_SAMPLE = np.stack([TIMES, 0.5 * TIMES - 0.2, 1.4 * TIMES + 0.1], 1)  # [T, B]
GRIDS = {
    "reversed": TIMES[::-1].copy(),
    "per_sample": _PER_SAMPLE,  # each sample its own grid: other starts and spans
    "per_sample_reversed": _PER_SAMPLE[::-1].copy(),
}


@functools.cache
def grid_gradient_fn(mode, solver, options):
    variables = [tf.Variable(w) for w in WEIGHTS]
    options = dict(options)

    def func(t, y):
        return mlp(t, y, *variables)

    def gradients(y0, t, loss_weights):
        with tf.GradientTape() as tape:
            tape.watch([y0, t])
            if solver == "adjoint":
                ys = tfnode.odeint_adjoint(func, y0, t, params=variables, **options)
            else:
                ys = tfnode.odeint(func, y0, t, **options)
            loss = tf.reduce_sum(loss_weights * ys)
        return tape.gradient(loss, [y0, t, *variables])

    return in_mode(gradients, mode)


def grid_gradients(mode, solver, t, loss_weights=LOSS_WEIGHTS, **options):
    fn = grid_gradient_fn(mode, solver, tuple(sorted(options.items())))
    return numpy_list(fn(tf.constant(Y0), tf.constant(t), tf.constant(loss_weights)))


@pytest.mark.parametrize("mode", ["graph", pytest.param("xla", marks=pytest.mark.slow)])
@pytest.mark.parametrize("grid", GRIDS)
def test_time_grids_adjoint_equals_backprop(grid, mode):
    t = GRIDS[grid]
    adjoint = grid_gradients(mode, "adjoint", t, **TIGHT, max_num_steps=MAX_STEPS)
    backprop = grid_gradients(
        mode, "backprop", t, **BACKPROP_TIGHT, max_num_steps=MAX_STEPS
    )
    assert adjoint[1].shape == t.shape
    assert_grads_close(
        adjoint, backprop, GRAD_NAMES, rtol=BACKPROP_RTOL, atol=BACKPROP_ATOL
    )


@pytest.mark.slow
def test_per_sample_grid_equals_separate_solves():
    """Column b of a [T, B] grid gives sample b the gradient that a solve of
    sample b alone on grid t[:, b] gives (the parameter gradient sums them)."""
    t = GRIDS["per_sample"]
    options = dict(**TIGHT, max_num_steps=MAX_STEPS)
    joint = grid_gradients("graph", "adjoint", t, **options)
    variables = [tf.Variable(w) for w in WEIGHTS]

    @tf.function
    def one_sample(y0, t, loss_weights):
        with tf.GradientTape() as tape:
            tape.watch([y0, t])
            ys = tfnode.odeint_adjoint(
                lambda t, y: mlp(t, y, *variables), y0, t, params=variables, **options
            )
            loss = tf.reduce_sum(loss_weights * ys)
        return tape.gradient(loss, [y0, t, *variables])

    param_sum = [np.zeros_like(w) for w in WEIGHTS]
    for b in range(BATCH):
        g_y0, g_t, *g_params = numpy_list(
            one_sample(
                tf.constant(Y0[b : b + 1]),
                tf.constant(t[:, b]),
                tf.constant(LOSS_WEIGHTS[:, b : b + 1]),
            )
        )
        tols = dict(rtol=BACKPROP_RTOL, atol=BACKPROP_ATOL)
        assert_allclose(joint[0][b], g_y0[0], err_msg=f"dL/dy0[{b}]", **tols)
        assert_allclose(joint[1][:, b], g_t, err_msg=f"dL/dt[:, {b}]", **tols)
        param_sum = [s + g for s, g in zip(param_sum, g_params)]
    assert_grads_close(
        joint[2:], param_sum, GRAD_NAMES[2:], rtol=BACKPROP_RTOL, atol=BACKPROP_ATOL
    )


# Fixed-step rk4, forward and backward, with steps of at most RK4_STEP: the
# adjoint (rk4 on the adjoint system) and backprop (the exact derivative of
# the rk4 forward map) are different O(h^4) approximations of the exact
# gradient. Measured: they differ by <= 8e-9 and the adjoint is 1e-9 off the
# exact gradient; 1e-7 bounds both with 12x headroom. An O(h) error in one
# term (a VJP at the wrong stage time, a missed interval) shows as 1e-3 or more.
RK4_STEP = 0.02
RK4_RTOL = 1e-7
RK4_ATOL = 1e-7
RK4 = dict(method="rk4", step_size=RK4_STEP, max_num_steps=MAX_STEPS)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("eager", marks=pytest.mark.slow),
        "graph",
        pytest.param("xla", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize(
    "grid", ["forward", pytest.param("per_sample_reversed", marks=pytest.mark.slow)]
)
def test_fixed_step_rk4_adjoint_equals_backprop(grid, mode):
    t = TIMES if grid == "forward" else GRIDS[grid]
    adjoint = grid_gradients(mode, "adjoint", t, **RK4)
    backprop = grid_gradients(mode, "backprop", t, **RK4)
    assert_grads_close(adjoint, backprop, GRAD_NAMES, rtol=RK4_RTOL, atol=RK4_ATOL)


def test_fixed_step_rk4_close_to_exact_gradient():
    """Both are within the O(h^4) bound of the exact (finite-difference)
    gradient, so the comparison above is not between two wrong answers."""
    adjoint = grid_gradients("graph", "adjoint", TIMES, **RK4)
    assert_grads_close(
        adjoint, finite_difference_gradients(), GRAD_NAMES, rtol=RK4_RTOL, atol=RK4_ATOL
    )


def _nested_func(w):
    def func(t, y):
        position, velocity = y
        return velocity, -tf.tanh(tf.matmul(position, w)) - 0.1 * velocity * tf.cos(t)

    return func


@functools.cache
def nested_gradient_fn(mode, solver):
    rng = np.random.default_rng(2)
    w = tf.Variable(rng.standard_normal((STATE, STATE)))
    loss_weights = [rng.standard_normal((len(TIMES), BATCH, STATE)) for _ in range(2)]

    def gradients(y0, t):
        with tf.GradientTape() as tape:
            tape.watch([y0, t])
            if solver == "adjoint":
                ys = tfnode.odeint_adjoint(_nested_func(w), y0, t, params=[w], **TIGHT)
            else:
                ys = tfnode.odeint(_nested_func(w), y0, t, **BACKPROP_TIGHT)
            assert isinstance(ys, tuple) and len(ys) == 2
            loss = tf.reduce_sum(loss_weights[0] * ys[0]) + tf.reduce_sum(
                loss_weights[1] * ys[1]
            )
        return tape.gradient(loss, [y0[0], y0[1], t, w])

    return in_mode(gradients, mode)


@pytest.mark.parametrize(
    "mode", [pytest.param("eager", marks=pytest.mark.slow), "graph"]
)
def test_nested_state_adjoint_equals_backprop(mode):
    rng = np.random.default_rng(3)
    y0 = tuple(tf.constant(rng.standard_normal((BATCH, STATE))) for _ in range(2))
    t = tf.constant(TIMES)
    adjoint = numpy_list(nested_gradient_fn(mode, "adjoint")(y0, t))
    backprop = numpy_list(nested_gradient_fn(mode, "backprop")(y0, t))
    assert_grads_close(
        adjoint,
        backprop,
        ("dL/dposition0", "dL/dvelocity0", "dL/dt", "dL/dw"),
        rtol=BACKPROP_RTOL,
        atol=BACKPROP_ATOL,
    )


def test_loss_on_some_outputs():
    """A loss on ys[1] alone: the times after it get exactly zero gradient
    (the backward pass starts from zero adjoints there), the rest match."""
    loss_weights = np.zeros_like(LOSS_WEIGHTS)
    loss_weights[1] = LOSS_WEIGHTS[1]
    adjoint = grid_gradients(
        "graph", "adjoint", TIMES, loss_weights, **TIGHT, max_num_steps=MAX_STEPS
    )
    backprop = grid_gradients(
        "graph",
        "backprop",
        TIMES,
        loss_weights,
        **BACKPROP_TIGHT,
        max_num_steps=MAX_STEPS,
    )
    assert np.all(adjoint[1][2:] == 0), adjoint[1]
    assert np.all(adjoint[1][:2] != 0), adjoint[1]
    assert_grads_close(
        adjoint, backprop, GRAD_NAMES, rtol=BACKPROP_RTOL, atol=BACKPROP_ATOL
    )


# float32 vs the exact (finite-difference) gradient, at a tolerance whose solver
# error lies below float32 round-off (eps = 1.2e-7): float64 solves at 1e-8 are
# within 9.3e-9 (in units of 1 + |gradient|), so what remains is round-off. (A
# tolerance below float32's eps is safe on this problem: the float32 forward solve
# takes 10 steps, none rejected, and the backward solve 10 steps, 2 rejected, both
# with status 0.)
# Measured in float32: at most 1.5e-7 (4.0e-7 absolute, on gradients up to 3.3);
# 1e-6 is 7x that. At 1e-6 the solver's own error (3.0e-6 in units of 1 +
# |gradient|, the same in float64) would dominate: this test then used 99% of its
# old bounds (3e-6).
FLOAT32_SOLVER_TOL = 1e-8
FLOAT32_RTOL = 1e-6
FLOAT32_ATOL = 1e-6


def test_float32_gradients():
    variables = [tf.Variable(w.astype(np.float32)) for w in WEIGHTS]

    @tf.function
    def gradients(y0, t):
        with tf.GradientTape() as tape:
            tape.watch([y0, t])
            ys = tfnode.odeint_adjoint(
                lambda t, y: mlp(t, y, *variables),
                y0,
                t,
                params=variables,
                rtol=FLOAT32_SOLVER_TOL,
                atol=FLOAT32_SOLVER_TOL,
            )
            loss = tf.reduce_sum(tf.constant(LOSS_WEIGHTS, tf.float32) * ys)
        return tape.gradient(loss, [y0, t, *variables])

    grads = gradients(tf.constant(Y0, tf.float32), tf.constant(TIMES, tf.float32))
    assert [g.dtype for g in grads] == [tf.float32] * len(grads)
    assert_grads_close(
        numpy_list(grads),
        finite_difference_gradients(),
        GRAD_NAMES,
        rtol=FLOAT32_RTOL,
        atol=FLOAT32_ATOL,
    )


# ---------------------------------------------------------------------------
# Parameters that the adjoint cannot see


def _unlisted_variable_gradient():
    listed = tf.Variable(-0.5, dtype=tf.float64, name="listed")
    hidden = tf.Variable(0.3, dtype=tf.float64, name="hidden_rate")
    y0 = tf.constant([1.0, 2.0], tf.float64)
    with tf.GradientTape() as tape:
        ys = tfnode.odeint_adjoint(
            lambda t, y: listed * y + hidden,
            y0,
            [0.0, 1.0],
            params=[listed],
            rtol=1e-4,
            atol=1e-4,
        )
        loss = tf.reduce_sum(ys)
    return tape.gradient(loss, listed)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_unlisted_variable_raises(mode):
    with pytest.raises(
        ValueError,
        match=r"reads trainable variables that are not in `params`"
        r".*hidden_rate.*Pass them in `params=\[\.\.\.\]`",
    ):
        in_mode(_unlisted_variable_gradient, mode)()


def test_unlisted_variable_with_default_params_raises():
    """A plain callable has no default parameters:
    every variable it reads is unlisted."""
    w = tf.Variable(-0.5, dtype=tf.float64, name="rate")
    with tf.GradientTape() as tape:
        ys = tfnode.odeint_adjoint(
            lambda t, y: w * y,
            tf.constant([1.0], tf.float64),
            [0.0, 1.0],
            rtol=1e-4,
            atol=1e-4,
        )
    with pytest.raises(ValueError, match=r"not in `params`.*rate"):
        tape.gradient(ys, w)


# ---------------------------------------------------------------------------
# Backward statistics and the seminorm


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_backward_stats_written_by_gradient(mode):
    """`BackwardStats` is empty until `tape.gradient` runs the backward pass."""
    _, nfe_before, stats = mlp_gradients("keras", mode)
    assert nfe_before == 0, (
        "backward statistics were written before the gradient was taken"
    )
    assert stats.status == tfnode.Status.SUCCESS
    assert stats.num_steps > 0
    # dopri5 costs 6 evaluations per attempted step (FSAL), plus one first stage
    # per interval (which also gives dL/dt_i) and one f(t_0, y_0) for dL/dt_0; no
    # initial-step heuristic: each interval starts from the step proposed before it.
    assert stats.nfe == 6 * (stats.num_steps + stats.num_rejected) + len(TIMES)


def test_seminorm_no_more_steps_than_full():
    """Seminorm and full norm both give the right gradient; the seminorm, which
    leaves the parameter adjoint out of error control, needs no more work
    (measured at TIGHT: 250 vs 274 backward evaluations)."""
    semi, _, semi_stats = mlp_gradients("variables", "graph", "adjoint_seminorm")
    full, _, full_stats = mlp_gradients("variables", "graph", "adjoint_full")
    backprop, _, _ = mlp_gradients("variables", "graph", "backprop")
    for grads in (semi, full):
        assert_grads_close(
            grads, backprop, GRAD_NAMES, rtol=BACKPROP_RTOL, atol=BACKPROP_ATOL
        )
    assert 0 < semi_stats.nfe <= full_stats.nfe, (semi_stats, full_stats)


def test_backward_steps_carry_over_from_the_forward_solve():
    """The backward pass starts from the step the forward controller proposed at
    t[-1] and carries each interval's step into the next. On a smooth problem
    whose forward steps (8 over [0, 1] here) are longer than the output
    intervals (0.1), every backward interval is then one dopri5 step: 10 x 7
    evaluations (6 + the first stage) + f(t_0, y_0) = 71, the least any
    adjoint that restarts at each output time can do. With outputs at t0 and t1
    only, the backward pass needs fewer evaluations than the forward one."""
    rng = np.random.default_rng(0)
    a = tf.constant(-0.5 * np.eye(4) + 0.5 * rng.standard_normal((4, 4)), tf.float64)
    y0 = tf.constant(rng.standard_normal((3, 4)), tf.float64)
    counts = {}
    for num_times in (11, 2):
        bstats = tfnode.BackwardStats()
        with tf.GradientTape() as tape:
            tape.watch(y0)
            ys, stats = tfnode.odeint_adjoint(
                lambda t, y: tf.linalg.matvec(a, y),
                y0,
                np.linspace(0.0, 1.0, num_times),
                params=[a],
                rtol=1e-6,
                atol=1e-6,
                backward_stats=bstats,
                return_stats=True,
            )
            loss = tf.reduce_sum(ys**2)
        tape.gradient(loss, [y0, a])
        counts[num_times] = int(stats.nfe), bstats.result()
    forward_nfe, backward = counts[11]
    assert (int(backward.num_steps), int(backward.num_rejected), int(backward.nfe)) == (
        10,
        0,
        71,
    )
    forward_nfe, backward = counts[2]
    assert int(backward.nfe) < forward_nfe, (forward_nfe, backward)


def test_unknown_adjoint_norm_raises():
    with pytest.raises(
        ValueError, match=r"`adjoint_norm` must be one of .*'semi_norm'"
    ):
        tfnode.odeint_adjoint(
            lambda t, y: -y,
            tf.ones([2], tf.float64),
            [0.0, 1.0],
            adjoint_norm="semi_norm",
        )


@functools.cache
def _failing_backward_gradient(mode):
    """A gradient whose backward solve exceeds `adjoint_max_num_steps`."""
    w = tf.Variable(-2.0, dtype=tf.float64)
    bstats = tfnode.BackwardStats()

    def gradient():
        with tf.GradientTape() as tape:
            ys = tfnode.odeint_adjoint(
                lambda t, y: w * tf.sin(3 * t) * y,
                tf.constant([1.0], tf.float64),
                [0.0, 3.0],
                params=[w],
                rtol=1e-5,
                atol=1e-5,
                adjoint_max_num_steps=3,
                backward_stats=bstats,
            )
        return tape.gradient(ys, w), bstats.status.read_value()

    return in_mode(gradient, mode)


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_failed_backward_solve_raises(mode):
    """Outside XLA, which drops assertions, a failed solve raises: the backward too."""
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"backward.*reached `max_num_steps=3`"
    ):
        _failing_backward_gradient(mode)()


def test_failed_backward_solve_under_xla_gives_nan_and_status():
    """Under XLA, where assertions are dropped, the failure shows as NaN
    gradients and as the status in `BackwardStats`."""
    grad, status = _failing_backward_gradient("xla")()
    assert np.isnan(grad.numpy())
    assert int(status) == tfnode.Status.MAX_STEPS_REACHED


# ---------------------------------------------------------------------------
# Memory: the forward solve records nothing on the caller's tape


def test_forward_solve_records_nothing_on_eager_tape():
    """An eager tape keeps every op it records, and the tensors its gradient
    needs, until it is released: that is why backprop's memory grows with the
    number of steps. `odeint_adjoint` must evaluate the dynamics with recording
    off during the forward solve. The same probe sees recording on under
    `odeint`, so it can detect a regression."""
    w = tf.Variable(-0.3, dtype=tf.float64)
    recording = []

    def func(t, y):
        recording.append(record.could_possibly_record())
        return w * y + tf.sin(t)

    y0 = tf.constant([1.0, -1.0], tf.float64)
    t = tf.constant([0.0, 4.0, 10.0], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(y0)
        ys, stats = tfnode.odeint_adjoint(
            func, y0, t, params=[w], rtol=1e-5, atol=1e-5, return_stats=True
        )
        loss = tf.reduce_sum(ys[-1])
    assert len(recording) == int(stats.nfe) > 20
    assert not any(recording), (
        f"{sum(recording)} of {len(recording)} evaluations recorded"
    )

    recording.clear()
    with tf.GradientTape() as tape_backprop:
        tape_backprop.watch(y0)
        tfnode.odeint(func, y0, t, rtol=1e-5, atol=1e-5)
    assert recording and all(recording), "the probe does not see a recording tape"

    # The backward solve still differentiates through the long horizon: for
    # this linear ODE dy(t1)/dy0 = e^(w (t1 - t0)).
    grad_y0, grad_w = tape.gradient(loss, [y0, w])
    assert_allclose(grad_y0, np.full(2, np.exp(-0.3 * 10.0)), rtol=1e-3)
    assert grad_w is not None


def test_unbuilt_keras_layer_is_built_and_differentiated():
    """An unbuilt Keras layer as `func` gets built, and every weight gets a gradient."""
    func = tfnode.MLPODEFunc(hidden_units=(4,), dtype="float64")
    y0 = tf.ones([2, 3], tf.float64)
    with tf.GradientTape() as tape:
        ys = tfnode.odeint_adjoint(func, y0, [0.0, 0.5])
        loss = tf.reduce_sum(ys[-1] ** 2)
    grads = tape.gradient(loss, func.trainable_variables)
    assert func.built and len(grads) == 4
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
