"""Tests of the latent ODE (`ODEVAE`) and its recurrent baseline (`RNNVAE`)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_allclose

from tfnode.data import spirals
from tfnode.models.ode_vae import ODEVAE
from tfnode.models.rnn_baseline import RNNVAE

# float32 evaluation of a tiny network vs the same maths in float64 numpy.
FLOAT32_RTOL = 1e-5
# The ODE of the hand-computed case is dz/dt = const (see below), which every
# Runge-Kutta method integrates exactly; only float32 round-off remains.
ODE_EXACT_ATOL = 1e-5

TINY = dict(latent_dim=3, encoder_units=5, decoder_units=(4,))


def _models(**kwargs):
    return {
        "ode": ODEVAE(2, hidden_units=(6,), seed=1, **TINY, **kwargs),
        "rnn": RNNVAE(2, hidden_units=6, seed=1, **TINY, **kwargs),
    }


def _batch(batch_size=4, n=7, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, 3.0, (batch_size, n)), axis=1).astype(np.float32)
    x = rng.normal(size=(batch_size, n, 2)).astype(np.float32)
    return x, t


# -- the ELBO by hand -------------------------------------------------------


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gru_backwards(x, kernel, recurrent, bias):
    """Keras's GRU (reset_after=True; gates z, r, h) over `x[:, ::-1]`."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    for x_i in x[:, ::-1].transpose(1, 0, 2):
        xw, hu = x_i @ kernel + bias[0], h @ recurrent + bias[1]
        z = _sigmoid(xw[:, :units] + hu[:, :units])
        r = _sigmoid(xw[:, units : 2 * units] + hu[:, units : 2 * units])
        candidate = np.tanh(xw[:, 2 * units :] + r * hu[:, 2 * units :])
        h = z * h + (1 - z) * candidate
    return h


def _weights(layer):
    return [np.asarray(w, np.float64) for w in layer.get_weights()]


def test_negative_elbo_matches_a_hand_computation():
    noise_std = 0.25
    model = ODEVAE(2, hidden_units=(6,), noise_std=noise_std, **TINY)
    # Zero the dynamics' output kernel: dz/dt = b, so z(t) = z0 + b (t - t0) exactly.
    out = model.latent_dynamics.func.out
    b_dyn = np.array([0.3, -0.2, 0.5], np.float32)
    out.set_weights([np.zeros_like(out.get_weights()[0]), b_dyn])
    x, t = _batch()

    loss, reconstruction, kl = (np.asarray(v) for v in model.negative_elbo(x, t))

    # Encoder: GRU backwards over [x_i, t_i - t_(i-1)], then a dense layer.
    gaps = np.diff(t.astype(np.float64), axis=1, prepend=t[:, :1])
    h = _gru_backwards(
        np.concatenate([x, gaps[..., None]], -1), *_weights(model.encoder_rnn)
    )
    w, b = _weights(model.encoder_head)
    mean, log_var = np.split(h @ w + b, 2, axis=-1)
    # Decoder: the exact latent path, then the ReLU readout.
    z = mean[:, None, :] + b_dyn * (t - t[:, :1])[..., None]
    (w1, b1), (w2, b2) = _weights(model.readout)[:2], _weights(model.readout)[2:]
    x_pred = np.maximum(z @ w1 + b1, 0) @ w2 + b2
    # -log N(x; x_pred, noise_std^2) summed over times and features;
    # KL(N(mean, var) || N(0, 1)).
    expected_rec = np.sum(
        0.5 * ((x - x_pred) / noise_std) ** 2
        + np.log(noise_std)
        + 0.5 * np.log(2 * np.pi),
        axis=(1, 2),
    )
    expected_kl = np.sum(0.5 * (mean**2 + np.exp(log_var) - log_var - 1), -1)

    assert_allclose(
        model.reconstruct(x, t), x_pred, rtol=FLOAT32_RTOL, atol=ODE_EXACT_ATOL
    )
    assert_allclose(
        reconstruction, expected_rec, rtol=FLOAT32_RTOL, atol=ODE_EXACT_ATOL * 1e2
    )
    assert_allclose(kl, expected_kl, rtol=FLOAT32_RTOL, atol=1e-6)
    assert_allclose(
        loss, expected_rec + expected_kl, rtol=FLOAT32_RTOL, atol=ODE_EXACT_ATOL * 1e2
    )
    assert_allclose(
        model.compute_loss(x={"x": x, "t": t}, training=False),
        np.mean(expected_rec + expected_kl),
        rtol=FLOAT32_RTOL,
    )


def test_training_loss_uses_a_posterior_sample():
    model = _models()["ode"]
    x, t = _batch()
    det = np.asarray(model.negative_elbo(x, t)[1])
    a, b = (np.asarray(model.negative_elbo(x, t, training=True)[1]) for _ in range(2))
    assert not np.allclose(a, det) and not np.allclose(a, b)
    # The KL term does not depend on the sample.
    assert_allclose(
        model.negative_elbo(x, t, training=True)[2],
        model.negative_elbo(x, t)[2],
        rtol=FLOAT32_RTOL,
    )


# -- shapes and methods ------------------------------------------------------


@pytest.mark.parametrize("kind", ["ode", "rnn"])
def test_methods_shapes(kind):
    model = _models()[kind]
    x, t = _batch(batch_size=3, n=6)
    z_mean, z_log_var = model.encode(x, t)
    assert z_mean.shape == z_log_var.shape == (3, 3)
    assert model((x, t)).shape == (3, 6, 2)
    assert model({"x": x, "t": t}).shape == (3, 6, 2)
    assert model.decode(z_mean, np.linspace(0, 1, 9, dtype=np.float32)).shape == (
        3,
        9,
        2,
    )
    assert model.reconstruct(x, t, t_out=t[:, :4]).shape == (3, 4, 2)
    future = t[:, -1:] + np.arange(1, 6, dtype=np.float32)
    assert model.extrapolate(x, t, future).shape == (3, 5, 2)
    assert model.sample_prior(4, np.linspace(0, 1, 5, dtype=np.float32)).shape == (
        4,
        5,
        2,
    )


def test_extrapolate_continues_the_reconstruction():
    # The ODE decoder's outputs do not depend on the other requested times.
    model = _models()["ode"]
    x, t = _batch(batch_size=2, n=5)
    future = t[:, -1:] + np.array([0.5, 1.0], np.float32)
    whole = model.reconstruct(x, t, t_out=np.concatenate([t, future], 1))
    assert_allclose(model.extrapolate(x, t, future), whole[:, 5:], rtol=1e-4, atol=1e-5)


# -- gradients, saving, training ----------------------------------------------


@pytest.mark.parametrize(
    "kind, adjoint", [("ode", False), ("ode", True), ("rnn", None)]
)
def test_gradient_reaches_every_weight(kind, adjoint):
    model = (
        ODEVAE(2, hidden_units=(6,), adjoint=adjoint, seed=1, **TINY)
        if kind == "ode"
        else _models()["rnn"]
    )
    x, t = _batch()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x={"x": x, "t": t}, training=True)
    weights = model.trainable_variables
    grads = tape.gradient(loss, weights)
    assert len(weights) == (13 if kind == "ode" else 14)
    for w, g in zip(weights, grads):
        assert g is not None, w.path
        assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0), w.path


@pytest.mark.parametrize("kind", ["ode", "rnn"])
def test_keras_round_trip(kind, tmp_path):
    model = _models(noise_std=0.1)[kind]
    x, t = _batch()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    z_mean, z_log_var = model.encode(x, t)
    loaded_mean, loaded_log_var = loaded.encode(x, t)
    np.testing.assert_array_equal(loaded_mean, z_mean)
    np.testing.assert_array_equal(loaded_log_var, z_log_var)
    np.testing.assert_array_equal(loaded.decode(z_mean, t), model.decode(z_mean, t))


def test_config_round_trip():
    model = ODEVAE(
        3,
        5,
        (7, 7),
        encoder_units=9,
        decoder_units=(4, 4),
        noise_std=0.2,
        method="bosh3",
        rtol=1e-4,
        atol=1e-5,
        adjoint=True,
        activation="tanh",
    )
    clone = ODEVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.latent_dynamics.method == "bosh3" and clone.latent_dynamics.adjoint


def test_invalid_arguments():
    with pytest.raises(ValueError, match="noise_std"):
        ODEVAE(2, noise_std=0.0)
    with pytest.raises(ValueError, match="latent_dim"):
        RNNVAE(2, latent_dim=0)
    with pytest.raises(ValueError, match="pair"):
        _models()["rnn"](np.zeros([2, 3, 2], np.float32))


@pytest.mark.parametrize("kind", ["ode", "rnn"])
def test_fit_lowers_the_loss(kind):
    keras.utils.set_random_seed(0)
    data = spirals.paper_spirals(40, seed=0)
    model = _models(noise_std=0.3)[kind]
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    # One observation count: one trace of the training step.
    dataset = spirals.spiral_dataset(data, batch_size=20, num_observations=(30,))
    history = model.fit(dataset, epochs=4, steps_per_epoch=8, verbose=0).history
    expected = {"loss", "reconstruction", "kl"} | (
        {"ode_nfe", "ode_nfe_max"} if kind == "ode" else set()
    )
    assert set(history) == expected
    # Epoch means: the last at most half the first
    # (the untrained loss is ~100x the noise floor).
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    if kind == "ode":
        assert min(history["ode_nfe"]) > 0
