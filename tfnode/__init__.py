"""tfnode: Neural Ordinary Differential Equations for TensorFlow and Keras 3."""

from importlib import metadata as _metadata

from tfnode import data as data
from tfnode import layers as layers
from tfnode import models as models
from tfnode import solvers as solvers
from tfnode.adjoint import BackwardStats as BackwardStats
from tfnode.adjoint import odeint_adjoint as odeint_adjoint
from tfnode.layers import ConvODEBlock as ConvODEBlock
from tfnode.layers import ConvODEFunc as ConvODEFunc
from tfnode.layers import MLPODEFunc as MLPODEFunc
from tfnode.layers import NeuralODELayer as NeuralODELayer
from tfnode.layers import ODEFunc as ODEFunc
from tfnode.odeint import odeint as odeint
from tfnode.stats import SolverStats as SolverStats
from tfnode.stats import Status as Status

try:
    __version__ = _metadata.version("tfnode")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackwardStats",
    "ConvODEBlock",
    "ConvODEFunc",
    "MLPODEFunc",
    "NeuralODELayer",
    "ODEFunc",
    "SolverStats",
    "Status",
    "odeint",
    "data",
    "layers",
    "models",
    "odeint_adjoint",
    "solvers",
]
