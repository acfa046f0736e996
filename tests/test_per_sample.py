"""Proof of per-sample step control (`per_sample_steps=True`).

A batch of 32 Van der Pol oscillators, `mu` log-spaced in [0.1, 10], carried in
the state so that a sample takes its own `mu` wherever it sits in the batch.
With per-sample steps every sample's output and counts equal its solve alone
(any permutation, eager and XLA); every sample meets its own tolerance against
a tight scipy reference while the shared control misses one by >10x; a sample
whose dynamics turn NaN fails alone; gradients of the adjoint and of backprop
match finite differences, on shared and per-sample grids; a Keras model
predicts the same value for a sample alone and inside a batch of 64, also
through an exported SavedModel.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_allclose, in_mode

import tfnode
from tfnode.stats import Status

B = 32
MU = np.logspace(-1, 1, B)
POISONED = 7  # the sample whose dynamics turn NaN after t = 1
TIMES = np.linspace(0.0, 2.0, 3)
TOL = 1e-6  # any tolerance: invariance holds at each; a looser one solves faster
# Batch invariance: each sample runs the same float64 operations on its own
# rows whatever its batch-mates; only XLA's or the kernels' vectorisation may
# reorder a reduction. Measured: equal to the last bit; the bound.
INVARIANCE_ATOL = 1e-12


def vdp_state(mu=MU):
    """`(xv [B, 2], mu [B])`: every oscillator starts at x = 2, v = 0."""
    xv = np.stack([np.full(len(mu), 2.0), np.zeros(len(mu))], 1)
    return (tf.constant(xv), tf.constant(mu, tf.float64))


def vdp(t, y):
    xv, mu = y
    x, v = xv[:, 0], xv[:, 1]
    return tf.stack([v, mu * (1 - x**2) * v - x], 1), tf.zeros_like(mu)


def poisoned_vdp(t, y):
    """Van der Pol whose derivative is NaN for `mu = MU[POISONED]` after t = 1."""
    dxv, dmu = vdp(t, y)
    poisoned = (tf.equal(y[1], MU[POISONED]) & (t > 1.0))[:, None]
    return tf.where(poisoned, tf.constant(np.nan, tf.float64), dxv), dmu


def _solve(func, y0, t):
    (xv, _), stats = tfnode.odeint(
        func, y0, t, rtol=TOL, atol=TOL, per_sample_steps=True, return_stats=True
    )
    return xv, stats


def solve_vdp(y0):
    return _solve(vdp, y0, tf.constant(TIMES))


def solve_poisoned(y0):
    return _solve(poisoned_vdp, y0, tf.constant(TIMES))


SIGNATURE = (
    (
        tf.TensorSpec([None, 2], tf.float64),
        tf.TensorSpec([None], tf.float64),
    ),
)


def solo_solves(fn, mode, samples):
    """`fn` on each sample alone: the outputs `[T, n, 2]` and stats `[n]`."""
    outputs, stats = [], []
    for i in samples:
        y0 = vdp_state(MU[i : i + 1])
        xv, s = in_mode(fn, mode, input_signature=SIGNATURE)(y0)
        outputs.append(xv.numpy())
        stats.append(np.concatenate([np.asarray(field) for field in s]))
    return np.concatenate(outputs, 1), np.stack(stats, 1)


def as_array(stats):
    return np.stack([np.asarray(field) for field in stats])


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_every_sample_equals_its_solve_alone_in_any_batch_order(mode):
    run = in_mode(solve_vdp, mode, input_signature=SIGNATURE)
    xv, stats = run(vdp_state())
    perm = np.random.default_rng(0).permutation(B)
    xv_perm, stats_perm = run(vdp_state(MU[perm]))
    # Eagerly, the solos run as `tf.function`s (the same kernels; an eager
    # solve of this batch takes seconds).
    solo_xv, solo_stats = solo_solves(
        solve_vdp, "graph" if mode == "eager" else mode, range(B)
    )

    assert_allclose(xv, solo_xv, atol=INVARIANCE_ATOL)
    np.testing.assert_array_equal(as_array(stats), solo_stats)
    assert_allclose(xv_perm, solo_xv[:, perm], atol=INVARIANCE_ATOL)
    np.testing.assert_array_equal(as_array(stats_perm), solo_stats[:, perm])
    # The samples really took different numbers of steps (μ = 10 needs the most).
    steps = np.asarray(stats.num_steps)
    assert steps[-1] > 2 * steps[0], steps


GRID_BACKWARD_STATS = tfnode.BackwardStats()
GRID = np.array([[0.0, 0.0], [0.5, 3.5], [1.0, 4.0]])  # per-sample times [T, B]


@tf.function(
    input_signature=(SIGNATURE[0], tf.TensorSpec([3, None], tf.float64))
)  # one trace for the batch and the samples alone
def grid_solve_and_gradient(y0, t):
    """Per-sample steps on per-sample grids: the outputs, forward stats, the
    adjoint's gradient for `y0` and its backward stats."""
    backward = GRID_BACKWARD_STATS
    with tf.GradientTape() as tape:
        tape.watch(y0)
        (xv, _), stats = tfnode.odeint_adjoint(
            vdp,
            y0,
            t,
            rtol=1e-6,
            atol=1e-6,
            first_step=0.05,  # in units of t: converted per sample
            per_sample_steps=True,
            backward_stats=backward,
            return_stats=True,
        )
        loss = tf.reduce_sum(xv**2)
    grad = tape.gradient(loss, y0[0])
    return xv, tf.stack(list(stats)), grad


def test_per_sample_grids_are_batch_invariant_forward_and_backward():
    mu = np.array([1.0, 3.0])
    batch = grid_solve_and_gradient(vdp_state(mu), tf.constant(GRID))
    backward = backward_stats()
    for i in range(2):
        alone = grid_solve_and_gradient(
            vdp_state(mu[i : i + 1]), tf.constant(GRID[:, i : i + 1])
        )
        assert_allclose(batch[0][:, i : i + 1], alone[0], atol=INVARIANCE_ATOL)
        np.testing.assert_array_equal(batch[1][:, i : i + 1], alone[1])
        assert_allclose(batch[2][i : i + 1], alone[2], atol=INVARIANCE_ATOL)
        np.testing.assert_array_equal(backward[:, i : i + 1], backward_stats())


def backward_stats():
    return np.stack(
        [GRID_BACKWARD_STATS.nfe.numpy(), GRID_BACKWARD_STATS.num_steps.numpy()]
    )


# Tolerance per sample. Over [0, 10] the oscillators with large μ go through
# sharp relaxation jumps, where a shared step size, chosen from an error
# averaged over all 32 samples, is too large for some of them.
TOL_TIMES = np.linspace(0.0, 10.0, 11)
TOL_RTOL = TOL_ATOL = 1e-6
# A sample's error is scaled by `rtol * max|y| + atol`, its largest state over
# the output times: pointwise `|y|` near a zero crossing turns the small phase
# error of any accurate solve (a solo solve too) into a large ratio. Local
# error control bounds each step, not the global error; measured: per-sample
# control ≤ 7.1x (median 2.1x) here, the shared control up to 115x.
TOL_FACTOR = 10.0


def vdp_reference(mu, times):
    from scipy.integrate import solve_ivp

    def rhs(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    solution = solve_ivp(
        rhs,
        (times[0], times[-1]),
        [2.0, 0.0],
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        t_eval=times,
    )
    assert solution.success, solution.message
    return solution.y.T


@tf.function
def solve_for_tolerance(y0, per_sample_steps):
    (xv, _), stats = tfnode.odeint(
        vdp,
        y0,
        tf.constant(TOL_TIMES),
        rtol=TOL_RTOL,
        atol=TOL_ATOL,
        per_sample_steps=per_sample_steps,
        return_stats=True,
    )
    return xv, stats


def test_every_sample_meets_its_own_tolerance_and_the_shared_control_does_not():
    reference = np.stack([vdp_reference(mu, TOL_TIMES) for mu in MU], 1)
    scale = TOL_RTOL * np.abs(reference).max(axis=(0, 2)) + TOL_ATOL
    ratios = {}
    for per_sample_steps in (True, False):
        xv, _ = solve_for_tolerance(vdp_state(), per_sample_steps)
        error = np.abs(xv.numpy() - reference).max(axis=(0, 2))
        ratios[per_sample_steps] = error / scale
    worst = int(np.argmax(ratios[False]))
    report = (
        f"error / (rtol*max|y| + atol) per sample:\n"
        f"  per-sample: {np.round(ratios[True], 2)}\n"
        f"  shared:     {np.round(ratios[False], 2)}"
    )
    assert np.all(ratios[True] <= TOL_FACTOR), report
    assert ratios[False][worst] > TOL_FACTOR, report
    assert ratios[True][worst] <= TOL_FACTOR, report


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_a_sample_turning_nan_fails_alone(mode):
    run = in_mode(solve_poisoned, mode, input_signature=SIGNATURE)
    if mode == "graph":
        # Graph mode (and eager) raise, naming the sample.
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"NaN.*Failing samples:.*\[7\].*\(.*1.*of.*32.*\)",
        ):
            run(vdp_state())
        return
    xv, stats = run(vdp_state())
    status = np.asarray(stats.status)
    expected_status = np.zeros(B, np.int32)
    expected_status[POISONED] = Status.NONFINITE
    np.testing.assert_array_equal(status, expected_status)
    assert np.all(np.isnan(xv.numpy()[:, POISONED]))
    others = [i for i in range(B) if i != POISONED]
    solo_xv, solo_stats = solo_solves(solve_poisoned, mode, others)
    assert_allclose(xv.numpy()[:, others], solo_xv, atol=INVARIANCE_ATOL)
    np.testing.assert_array_equal(as_array(stats)[:, others], solo_stats)


def test_eager_failure_names_the_samples():
    y0 = vdp_state(MU[POISONED - 1 : POISONED + 1])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"NaN.*Failing samples: \[1\] \(1 of 2; the others",
    ):
        _solve(poisoned_vdp, y0, tf.constant(TIMES))


# ----------------------------------------------------------------------------
# Gradients against central finite differences.

G_B = 3
G_TIMES = np.array([0.0, 0.4, 1.0])
G_PER_SAMPLE_TIMES = np.array([[0.0, 0.1, -0.2], [0.5, 0.4, 0.6], [1.0, 1.2, 0.9]])
G_TOL = 1e-12
# Central differences with step 1e-6 of a float64 solve at 1e-12: truncation
# ~1e-12 relative. Step sizes are not differentiated (as in every solver), but
# they move with the inputs: the gradient and the differences part by about
# the tolerance times that sensitivity (at 1e-10: 1.3e-7 for `t`). Measured
# gaps at 1e-12: backprop and adjoint up to 4e-9.
FD_STEP = 1e-6
FD_RTOL = 1e-7
G_WEIGHTS = np.random.default_rng(1).normal(size=(3, G_B, 2))


class Damped(tf.Module):
    """Van der Pol with a learned stiffness `k` and per-sample μ in the state."""

    def __init__(self):
        super().__init__()
        self.k = tf.Variable(1.3, dtype=tf.float64)

    def __call__(self, t, y):
        xv, mu = y
        x, v = xv[:, 0], xv[:, 1]
        return tf.stack([v, mu * (1 - x**2) * v - self.k * x], 1), tf.zeros_like(mu)


DAMPED = Damped()


def g_state():
    xv = np.array([[2.0, 0.0], [1.0, 0.5], [-0.5, 1.0]])
    return tf.constant(xv), tf.constant([0.3, 1.0, 2.5], tf.float64)


def g_loss(y0, t, adjoint):
    options = dict(rtol=G_TOL, atol=G_TOL, per_sample_steps=True)
    if adjoint:
        xv, _ = tfnode.odeint_adjoint(DAMPED, y0, t, params=[DAMPED.k], **options)
    else:
        xv, _ = tfnode.odeint(DAMPED, y0, t, **options)
    return tf.reduce_sum(G_WEIGHTS * xv)


def g_gradients(xv0, t, adjoint):
    with tf.GradientTape() as tape:
        tape.watch([xv0, t])
        loss = g_loss((xv0, g_state()[1]), t, adjoint)
    return tape.gradient(loss, [xv0, t, DAMPED.k])


def gradients_by_adjoint(xv0, t):
    return g_gradients(xv0, t, True)


def gradients_by_backprop(xv0, t):
    return g_gradients(xv0, t, False)


_loss_fn = tf.function(lambda xv0, t: g_loss((xv0, g_state()[1]), t, False))


def finite_differences(t):
    """Central differences of the loss in `xv0`, `t` and `k`."""
    xv0 = g_state()[0].numpy()

    def central(shift):
        return (shift(FD_STEP) - shift(-FD_STEP)) / (2 * FD_STEP)

    def at(x, tt):
        return float(_loss_fn(tf.constant(x), tf.constant(tt)))

    d_xv0 = np.zeros_like(xv0)
    for index in np.ndindex(xv0.shape):
        d_xv0[index] = central(lambda h: at(xv0 + h * _unit(xv0, index), t))
    d_t = np.zeros_like(t)
    for index in np.ndindex(t.shape):
        d_t[index] = central(lambda h: at(xv0, t + h * _unit(t, index)))
    k = DAMPED.k.numpy()

    def shifted_k(h):
        DAMPED.k.assign(k + h)
        try:
            return at(xv0, t)
        finally:
            DAMPED.k.assign(k)

    return [d_xv0, d_t, central(shifted_k)]


def _unit(x, index):
    e = np.zeros_like(x)
    e[index] = 1.0
    return e


_FD = {}


@pytest.mark.parametrize(
    "gradients, mode, grid",
    [
        (gradients_by_adjoint, "graph", "shared"),
        # Under XLA backprop is the checkpointed sweep, per-sample records.
        (gradients_by_backprop, "xla", "per-sample"),
        (gradients_by_adjoint, "xla", "per-sample"),
        # TensorFlow's own gradient of the loop; run with `-m slow`.
        pytest.param(
            gradients_by_backprop, "graph", "per-sample", marks=pytest.mark.slow
        ),
    ],
)
def test_gradients_match_finite_differences(gradients, mode, grid):
    t = G_TIMES if grid == "shared" else G_PER_SAMPLE_TIMES
    if grid not in _FD:
        _FD[grid] = finite_differences(t)
    actual = in_mode(gradients, mode)(g_state()[0], tf.constant(t))
    for name, a, d in zip(["y0", "t", "k"], actual, _FD[grid]):
        assert_allclose(a, d, rtol=FD_RTOL, atol=FD_RTOL, err_msg=name)


class Bounded(tf.Module):
    """`dy/dt = k y^2`, NaN outside [0.455, 2.5]: the solutions from 0.5 and
    0.46 stay inside over [0, 1.5], trial steps of the backward solve do not."""

    def __init__(self):
        super().__init__()
        self.k = tf.Variable(1.0, dtype=tf.float64)

    def __call__(self, t, y):
        outside = (y > 2.5) | (y < 0.455)
        nan = tf.constant(np.nan, tf.float64)
        return self.k * y**2 * tf.where(outside, nan, tf.ones_like(y))


def test_rejected_non_finite_trial_steps_stay_out_of_the_parameter_gradient():
    # Regression: the per-sample parameter quadrature took the VJP at every
    # sample's trial stages, weighted 0 where rejected: 0 * NaN gave dL/dk =
    # NaN with every status 0. The shared control's gradient is the reference;
    # the two solve at rtol 1e-2, so they agree to ~1e-2 (measured 2e-4).
    func = Bounded()
    y0 = tf.constant([[0.5], [0.46]], tf.float64)
    t = tf.constant([0.0, 1.5], tf.float64)
    grads, rejected = {}, {}
    for per_sample_steps in (False, True):
        stats = tfnode.BackwardStats()
        with tf.GradientTape() as tape:
            ys = tfnode.odeint_adjoint(
                func,
                y0,
                t,
                rtol=1e-2,
                atol=1e-2,
                per_sample_steps=per_sample_steps,
                backward_stats=stats,
            )
            loss = tf.reduce_sum(ys[-1])
        grads[per_sample_steps] = tape.gradient(loss, func.k)
        rejected[per_sample_steps] = stats.num_rejected.numpy()
    assert np.all(rejected[True] > 0), rejected  # the case this test is about
    assert_allclose(grads[True], grads[False], rtol=1e-2)


def test_backward_stats_are_per_sample():
    stats = tfnode.BackwardStats()
    xv0 = g_state()[0]
    with tf.GradientTape() as tape:
        tape.watch(xv0)
        xv, _ = tfnode.odeint_adjoint(
            DAMPED,
            (xv0, g_state()[1]),
            tf.constant(G_TIMES),
            params=[DAMPED.k],
            rtol=1e-6,
            atol=1e-6,
            per_sample_steps=True,
            backward_stats=stats,
        )
    tape.gradient(xv, xv0)
    for field in ("nfe", "num_steps", "num_rejected", "status"):
        assert getattr(stats, field).numpy().shape == (G_B,), field
    nfe = stats.nfe.numpy()
    assert np.all(nfe > 0) and len(set(nfe)) > 1, nfe


def test_fixed_step_methods_accept_the_keyword():
    y0 = vdp_state(MU[:4])
    t = tf.constant(TIMES)
    shared = tfnode.odeint(vdp, y0, t, method="rk4", step_size=0.1)
    (xv, _), stats = tfnode.odeint(
        vdp,
        y0,
        t,
        method="rk4",
        step_size=0.1,
        per_sample_steps=True,
        return_stats=True,
    )
    assert_allclose(xv, shared[0], atol=0.0)
    np.testing.assert_array_equal(stats.num_steps, [20] * 4)


# ----------------------------------------------------------------------------
# Keras: a prediction does not depend on the batch.

# A loose tolerance, so that a sample solved alone with shared control (larger
# steps than in a batch) visibly differs from its value in the batch: measured
# 7.9e-5 with `per_sample_steps=False`. With it, the solver is batch-invariant
# but TensorFlow's float32 matmul kernels are not (a row of a batched product
# may differ from the row alone in its last bits, outside XLA): measured
# 2.4e-7, one ulp of these outputs (|y| <= 3.6); the bound is four.
LAYER_RTOL = 1e-2
F32_ROUNDOFF = 1e-6


def test_prediction_of_a_sample_does_not_depend_on_its_batch(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(4)(inputs)
    ode = tfnode.NeuralODELayer(
        tfnode.MLPODEFunc(hidden_units=(16,), output_initializer="glorot_uniform"),
        rtol=LAYER_RTOL,
    )
    assert ode.per_sample_steps  # the layer's default
    model = keras.Model(inputs, keras.layers.Dense(1)(ode(hidden)))
    # Inputs spread over a wide range, so that the samples need different steps.
    x = np.random.default_rng(2).normal(scale=3.0, size=(64, 2)).astype(np.float32)
    batch = model.predict(x, batch_size=64, verbose=0)
    alone = np.concatenate(
        [model.predict(x[i : i + 1], verbose=0) for i in range(0, 64, 9)]
    )
    assert_allclose(alone, batch[::9], atol=F32_ROUNDOFF)

    model.export(tmp_path / "export", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    served = loaded.serve(tf.constant(x)).numpy()
    assert_allclose(served, batch, atol=F32_ROUNDOFF)
    for i in range(0, 64, 9):
        assert_allclose(
            loaded.serve(tf.constant(x[i : i + 1])), batch[i : i + 1], atol=F32_ROUNDOFF
        )
