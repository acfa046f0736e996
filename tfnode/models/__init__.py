"""Keras models built from tfnode layers: the latent ODE, the MNIST classifiers and
the continuous normalizing flow."""

from tfnode.models.classifiers import build_classifier as build_classifier
from tfnode.models.classifiers import build_mlp as build_mlp
from tfnode.models.classifiers import build_odenet as build_odenet
from tfnode.models.classifiers import build_resnet as build_resnet
from tfnode.models.classifiers import build_rknet as build_rknet
from tfnode.models.classifiers import parameter_counts as parameter_counts
from tfnode.models.cnf import CNF as CNF
from tfnode.models.ode_vae import ODEVAE as ODEVAE
from tfnode.models.rnn_baseline import RNNVAE as RNNVAE

__all__ = [
    "CNF",
    "ODEVAE",
    "RNNVAE",
    "build_classifier",
    "build_mlp",
    "build_odenet",
    "build_resnet",
    "build_rknet",
    "parameter_counts",
]
