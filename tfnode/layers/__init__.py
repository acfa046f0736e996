"""Keras layers: dynamics (`ODEFunc` and friends) and `NeuralODELayer`."""

from tfnode.layers.augmented import AugmentedDynamics as AugmentedDynamics
from tfnode.layers.conv_ode import ConvODEBlock as ConvODEBlock
from tfnode.layers.conv_ode import ConvODEFunc as ConvODEFunc
from tfnode.layers.neural_ode import NeuralODELayer as NeuralODELayer
from tfnode.layers.ode_func import ConcatSquashODEFunc as ConcatSquashODEFunc
from tfnode.layers.ode_func import MLPODEFunc as MLPODEFunc
from tfnode.layers.ode_func import ODEFunc as ODEFunc

__all__ = [
    "AugmentedDynamics",
    "ConcatSquashODEFunc",
    "ConvODEBlock",
    "ConvODEFunc",
    "MLPODEFunc",
    "NeuralODELayer",
    "ODEFunc",
]
