"""`RNNVAE`: the recurrent baseline of the latent ODE, with the same encoder,
loss and interface, and a GRU decoder fed the time gaps."""

from __future__ import annotations

import keras

from tfnode.models.ode_vae import AbstractLatentVAE, time_gaps


@keras.saving.register_keras_serializable(package="tfnode")
class RNNVAE(AbstractLatentVAE):
    """A sequence VAE whose decoder is a GRU stepping through the time gaps.

    The baseline against which Chen et al. (2018, §5.1) compare the latent
    ODE: the encoder, posterior, loss and methods are those of
    `tfnode.models.ode_vae.ODEVAE`; the decoder maps `z(t0)` to the GRU's
    initial state (dense, tanh) and feeds it the gaps `t_i - t_(i-1)` (`0`
    first), so its state evolves in discrete jumps whose size it must learn
    from the gaps; an MLP maps each output to data space.

    Args:
        obs_dim: Dimension `D` of an observation.
        latent_dim: Dimension of `z(t0)`. Defaults to `4`.
        hidden_units: Units of the decoder GRU. Defaults to `25`.
        encoder_units: Units of the encoder GRU. Defaults to `25`.
        decoder_units: Hidden sizes of the readout MLP (ReLU). Defaults to
            `(20,)`.
        noise_std: Known observation noise std. Defaults to `0.3`.
        seed: Seed of the posterior samples drawn in training.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Call arguments:
        inputs: `{"x": [B, T, D], "t": [B, T]}` or a pair `(x, t)`.
        training: Whether to sample `z(t0)` (else its mean is used).

    Returns:
        The reconstruction of `x`, `[B, T, D]`.

    Example:

    >>> model = RNNVAE(obs_dim=2, latent_dim=3, hidden_units=8)
    >>> model.decode(tf.zeros([5, 3]), tf.linspace(0.0, 1.0, 7)).shape
    TensorShape([5, 7, 2])
    """

    def __init__(
        self,
        obs_dim,
        latent_dim=4,
        hidden_units=25,
        encoder_units=25,
        decoder_units=(20,),
        noise_std=0.3,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            obs_dim,
            latent_dim,
            encoder_units=encoder_units,
            decoder_units=decoder_units,
            noise_std=noise_std,
            seed=seed,
            **kwargs,
        )
        self.hidden_units = int(hidden_units)
        self.decoder_init = keras.layers.Dense(
            self.hidden_units, activation="tanh", name="decoder_init"
        )
        self.latent_dynamics = keras.layers.GRU(
            self.hidden_units, return_sequences=True, name="decoder_gru"
        )
        self.build()

    def _build_decoder(self):
        self.decoder_init.build((None, self.latent_dim))
        self.latent_dynamics.build((None, None, 1))
        self.readout.build((None, None, self.hidden_units))

    def _latent_path(self, z0, t, training):
        h0 = self.decoder_init(z0)
        return self.latent_dynamics(time_gaps(t), initial_state=h0, training=training)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}
