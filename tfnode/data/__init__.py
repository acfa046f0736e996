"""Data sets: the spirals generator and the MNIST loader."""

from tfnode.data.mnist import MNISTNotFoundError as MNISTNotFoundError
from tfnode.data.mnist import load_mnist as load_mnist
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
    "extrapolation_split",
    "linear_spirals",
    "load_mnist",
    "paper_spirals",
    "spiral_dataset",
]
