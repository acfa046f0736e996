"""Proof of the continuous normalizing flow: `tfnode.layers.AugmentedDynamics`
(trace, kinetic energy, Jacobian norm), `tfnode.models.CNF` and its bijector.

Float64 throughout unless said; small dynamics (hidden 16) at solver tolerance
1e-10, so that every comparison below measures the quantity, not the solver.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfnode
from tfnode.layers.augmented import exact_jacobian_terms

TIGHT = dict(rtol=1e-10, atol=1e-10)
F64 = "float64"


def make_func(seed=0, hidden=(16, 16)):
    keras.utils.set_random_seed(seed)
    func = tfnode.layers.ConcatSquashODEFunc(hidden, dtype=F64)
    func(tf.constant(0.0, F64), tf.zeros([1, 2], F64))
    # Weights of order one, so the flow is far from the identity map.
    for w in func.trainable_weights:
        w.assign(np.random.default_rng(seed).normal(0, 0.7, w.shape))
    return func


@pytest.fixture(scope="module")
def func():
    return make_func()


@pytest.fixture(scope="module")
def x():
    return tf.constant(tfnode.data.toy_density("8gaussians", 6, seed=1), F64) / 2


@pytest.fixture(scope="module")
def cnf(func):
    model = tfnode.models.CNF(2, func, dtype=F64, **TIGHT)
    model.build()
    return model


def test_exact_log_det_equals_autodiff_of_the_flow_map(func, x):
    aug = tfnode.layers.AugmentedDynamics(func, trace=True, dtype=F64)
    t = tf.constant([0.0, 1.0], F64)
    log_det = tfnode.odeint(aug, aug.initial_state(x), t, **TIGHT)["trace"][-1]
    # The flow map's Jacobian by TensorFlow's own backprop through the solve,
    # one row per output component.
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        end = tfnode.odeint(func, x, t, **TIGHT)[-1]
        rows = [end[:, 0], end[:, 1]]
    jacobian = np.stack([tape.gradient(r, x).numpy() for r in rows], 1)
    # Both come from solves at 1e-10 (measured gap 3e-12).
    expected = np.linalg.slogdet(jacobian)[1]
    np.testing.assert_allclose(log_det, expected, rtol=0, atol=1e-6)
    assert np.ptp(expected) > 0.1  # a non-trivial flow, different per sample


def test_exact_jacobian_terms_match_the_batch_jacobian(func, x):
    t = tf.constant(0.3, F64)
    dy, trace, frobenius = exact_jacobian_terms(func, t, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = func(t, x)
    jacobian = tape.batch_jacobian(out, x).numpy()
    np.testing.assert_allclose(dy, out, rtol=1e-14)
    np.testing.assert_allclose(trace, np.trace(jacobian, axis1=1, axis2=2), 1e-13)
    np.testing.assert_allclose(frobenius, (jacobian**2).sum((1, 2)), rtol=1e-13)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_trace_is_unbiased(func, x, noise):
    # 400 independent draws per sample, all in one solve: each row of the
    # repeated batch carries its own noise. At 1e-8 the solver's error is far
    # below the standard errors (about 1e-2).
    draws = 400
    exact = tfnode.layers.AugmentedDynamics(func, trace=True, dtype=F64)
    hutch = tfnode.layers.AugmentedDynamics(
        func, trace=True, jacobian_norm=True, estimator="hutchinson", dtype=F64
    )
    t = tf.constant([0.0, 1.0], F64)
    reference = tfnode.odeint(exact, exact.initial_state(x), t, **TIGHT)
    many = tf.tile(x, [draws, 1])
    state = hutch.initial_state(many, seed=7, kind=noise)
    estimates = tfnode.odeint(hutch, state, t, rtol=1e-8, atol=1e-8)["trace"][-1]
    estimates = estimates.numpy().reshape(draws, -1)
    mean = estimates.mean(0)
    standard_error = estimates.std(0, ddof=1) / np.sqrt(draws)
    gap = np.abs(mean - reference["trace"][-1].numpy())
    assert np.all(standard_error > 0)
    assert np.all(gap < 3 * standard_error), (gap, standard_error)


def test_regulariser_integrals_equal_quadrature_along_the_trajectory(func, x):
    aug = tfnode.layers.AugmentedDynamics(
        func, kinetic_energy=True, jacobian_norm=True, dtype=F64
    )
    t = tf.constant([0.0, 1.0], F64)
    ends = tfnode.odeint(aug, aug.initial_state(x), t, **TIGHT)
    # Simpson's rule on 201 points of the solved trajectory: error ~ h^4
    # |g''''| / 180 ~ 1e-11 for these smooth integrands.
    grid = tf.constant(np.linspace(0.0, 1.0, 201), F64)
    path = tfnode.odeint(func, x, grid, **TIGHT)
    # Every point of the path in one batch, each with its own time.
    times = tf.repeat(grid, x.shape[0])
    dy, _, frobenius = exact_jacobian_terms(func, times, tf.reshape(path, [-1, 2]))
    kinetic = tf.reshape(tf.reduce_sum(dy**2, -1), [201, -1])
    frobenius = tf.reshape(frobenius, [201, -1])
    weights = np.ones(201)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    weights /= 3 * 200
    for name, values in (("kinetic_energy", kinetic), ("jacobian_norm", frobenius)):
        quadrature = weights @ values.numpy()
        np.testing.assert_allclose(ends[name][-1], quadrature, rtol=1e-7)


def test_log_prob_equals_tfp_ffjord(cnf, func, x):
    tfb, tfd = tfp.bijectors, tfp.distributions
    ffjord = tfb.FFJORD(
        state_time_derivative_fn=lambda t, y: func(t, y),
        trace_augmentation_fn=tfb.ffjord.trace_jacobian_exact,
        ode_solve_fn=tfp.math.ode.DormandPrince(rtol=1e-8, atol=1e-8).solve,
        dtype=tf.float64,
    )
    base = tfd.MultivariateNormalDiag(tf.zeros(2, F64))
    # TFP solves at 1e-8 (its eager solve is slow): both within 1e-7 of the
    # exact log-density, checked against the 1e-5.
    expected = tfd.TransformedDistribution(base, ffjord).log_prob(x)
    np.testing.assert_allclose(cnf.log_prob(x), expected, rtol=0, atol=1e-5)
    # The same through the model's bijector, in TFP's own distribution.
    ours = tfd.TransformedDistribution(base, cnf.bijector).log_prob(x)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_sample_log_prob_round_trip(cnf):
    x, log_q = cnf.sample_and_log_prob(5, seed=3)
    # One solve with the trace, one without: error control differs, 1e-10.
    np.testing.assert_allclose(x, cnf.sample(5, seed=3), rtol=0, atol=1e-9)
    # Back through the flow: the same density, and the base sample again.
    np.testing.assert_allclose(cnf.log_prob(x), log_q, rtol=0, atol=1e-8)
    z = keras.random.normal((5, 2), dtype=F64, seed=3)
    path = cnf.transform(x, [1.0, 0.5, 0.0])
    assert path.shape == (3, 5, 2)
    np.testing.assert_allclose(path[-1], z, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cnf.bijector.inverse(x), z, rtol=0, atol=1e-8)
    # The forward log-det: log q(x) = log N(z) - fldj(z), and fldj = -ildj.
    fldj = cnf.bijector.forward_log_det_jacobian(z, event_ndims=1)
    base = tfnode.models.cnf.standard_normal_log_prob(z)
    np.testing.assert_allclose(base - fldj, log_q, rtol=0, atol=1e-8)
    ildj = cnf.bijector.inverse_log_det_jacobian(x, event_ndims=1)
    np.testing.assert_allclose(fldj, -ildj, rtol=0, atol=1e-8)


def _directional_fd(loss, variables, direction, step=1e-6):
    """Central difference of `loss()` along `direction` in `variables`."""
    originals = [v.numpy() for v in variables]
    values = []
    for sign in (1.0, -1.0):
        for v, o, d in zip(variables, originals, direction):
            v.assign(o + sign * step * d)
        values.append(float(loss()))
    for v, o in zip(variables, originals):
        v.assign(o)
    return (values[0] - values[1]) / (2 * step)


@pytest.mark.parametrize(
    "estimator",
    # Hutchinson's product is the exact trace's with one cotangent; -m slow.
    ["exact", pytest.param("hutchinson", marks=pytest.mark.slow)],
)
def test_augmented_gradients_adjoint_backprop_and_fd(func, x, estimator):
    aug = tfnode.layers.AugmentedDynamics(
        func,
        trace=True,
        kinetic_energy=True,
        jacobian_norm=True,
        estimator=estimator,
        dtype=F64,
    )
    state = aug.initial_state(x[:3], seed=11)  # one fixed noise draw
    t = tf.constant([1.0, 0.0], F64)  # data to base, as log_prob solves
    variables = func.trainable_variables

    def loss_of(solver):
        ys = solver(aug, state, t, **TIGHT)
        end = {k: v[-1] for k, v in ys.items()}
        nll = -(tfnode.models.cnf.standard_normal_log_prob(end["y"]) + end["trace"])
        return (
            tf.reduce_sum(nll)
            + 0.3 * tf.reduce_sum(end["kinetic_energy"])
            + 0.2 * tf.reduce_sum(end["jacobian_norm"])
        )

    grads = {}
    for name, solver in (
        ("adjoint", tfnode.odeint_adjoint),
        ("backprop", tfnode.odeint),
    ):

        @tf.function
        def gradient(solver=solver):
            with tf.GradientTape() as tape:
                loss = loss_of(solver)
            return tape.gradient(loss, variables)

        grads[name] = [g.numpy() for g in gradient()]
    flat = {k: np.concatenate([g.ravel() for g in v]) for k, v in grads.items()}
    # Adjoint vs backprop at 1e-10: both within O(tol) of the exact gradient
    # (measured gap 1e-9 relative to the largest entry).
    scale = np.abs(flat["backprop"]).max()
    np.testing.assert_allclose(flat["adjoint"], flat["backprop"], atol=1e-7 * scale)
    direction = [np.random.default_rng(5).normal(size=v.shape) for v in variables]
    fd = _directional_fd(
        tf.function(lambda: loss_of(tfnode.odeint)), variables, direction
    )
    analytic = sum(np.sum(g * d) for g, d in zip(grads["adjoint"], direction))
    # FD step 1e-6: truncation ~1e-12, solver noise ~1e-10 / 1e-6 = 1e-4 at
    # worst relative to O(1) losses; measured agreement about 1e-8.
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


def test_keras_save_load_keeps_log_prob(cnf, x, tmp_path):
    path = tmp_path / "cnf.keras"
    cnf.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, tfnode.models.CNF) and loaded.trace == cnf.trace
    np.testing.assert_allclose(loaded.log_prob(x), cnf.log_prob(x), rtol=1e-12)


def test_neural_ode_layer_adds_the_regularisers_to_its_losses():
    keras.utils.set_random_seed(0)
    func = tfnode.MLPODEFunc((8,))
    layer = tfnode.NeuralODELayer(func, kinetic_energy=0.5, jacobian_norm=0.25)
    y0 = tf.random.normal([4, 3])
    out_train = layer(y0, training=True)
    assert len(layer.losses) == 1
    penalty = float(layer.losses[0])
    out_infer = layer(y0)
    np.testing.assert_allclose(out_train, out_infer, atol=1e-5)
    # The kinetic energy alone is exact: the penalty is at least its share.
    plain = tfnode.layers.AugmentedDynamics(func, kinetic_energy=True)
    ke = tfnode.odeint(plain, plain.initial_state(y0), [0.0, 1.0], rtol=1e-6)
    assert penalty > 0.5 * float(tf.reduce_mean(ke["kinetic_energy"][-1]))
    config = layer.get_config()
    assert config["kinetic_energy"] == 0.5 and config["jacobian_norm"] == 0.25


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=0), "`dim` must be a positive int"),
        (dict(trace="hutch"), "`trace` must be one of"),
        (dict(noise="uniform"), "`noise` must be one of"),
        (dict(t=(1.0, 1.0)), "`t` must be a pair"),
        (dict(kinetic_energy=-1.0), "`kinetic_energy` is a regulariser weight"),
        (dict(jacobian_norm=-1.0), "`jacobian_norm` is a regulariser weight"),
        (dict(method="rk45"), "method"),
        (dict(rtol=-1.0), "rtol"),
    ],
)
def test_bad_arguments_say_what_to_pass(kwargs, match):
    kwargs = {"dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        tfnode.models.CNF(**kwargs)


def test_wrong_data_shape_is_explained(cnf):
    with pytest.raises(ValueError, match=r"batches of 2-vectors, of shape \[B, 2\]"):
        cnf.log_prob(tf.zeros([4, 3], F64))
