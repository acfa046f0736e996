"""Keras models built from tfnode layers: the latent ODE and the MNIST classifiers."""
