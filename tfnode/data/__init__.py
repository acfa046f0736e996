"""Data sets: the spirals generator, the MNIST loader, MNIST digits for
machines that cannot download MNIST, and the 2-D toy densities of continuous
normalizing flows."""

from tfnode.data.densities import TOY_DENSITIES as TOY_DENSITIES
from tfnode.data.densities import (
    eight_gaussians_log_prob as eight_gaussians_log_prob,
)
from tfnode.data.densities import toy_density as toy_density
from tfnode.data.mnist import MNISTNotFoundError as MNISTNotFoundError
from tfnode.data.mnist import load_mnist as load_mnist
from tfnode.data.mnist_digits import (
    prepare_mnist_from_digits as prepare_mnist_from_digits,
)
from tfnode.data.mnist_digits import prepared_from_digits as prepared_from_digits
from tfnode.data.spirals import Extrapolation as Extrapolation
from tfnode.data.spirals import Spirals as Spirals
from tfnode.data.spirals import extrapolation_split as extrapolation_split
from tfnode.data.spirals import linear_spirals as linear_spirals
from tfnode.data.spirals import paper_spirals as paper_spirals
from tfnode.data.spirals import spiral_dataset as spiral_dataset

__all__ = [
    "Extrapolation",
    "MNISTNotFoundError",
    "Spirals",
    "TOY_DENSITIES",
    "eight_gaussians_log_prob",
    "extrapolation_split",
    "linear_spirals",
    "load_mnist",
    "paper_spirals",
    "prepare_mnist_from_digits",
    "prepared_from_digits",
    "spiral_dataset",
    "toy_density",
]
