"""The two private TensorFlow APIs tfnode relies on, in one place to check on a
TensorFlow upgrade (measured with TF 2.21)."""

from tensorflow.python.eager import record
from tensorflow.python.ops import control_flow_util


def in_xla_context(graph) -> bool:
    """Whether `graph` (or a graph it is nested in) is compiled by XLA. XLA drops
    assertions and needs static shapes, so some code paths differ there."""
    return control_flow_util.GraphOrParentsInXlaContext(graph)


def stop_recording():
    """A context in which no tape (eager or `tf.function`) records operations:
    the adjoint's forward solve, which must not keep its steps for backprop."""
    return record.stop_recording()
