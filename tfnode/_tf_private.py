"""The private TensorFlow APIs tfnode relies on, in one place to check on a
TensorFlow upgrade (measured with TF 2.21)."""

import contextlib

from tensorflow.python import pywrap_tfe
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


@contextlib.contextmanager
def resume_recording():
    """Inside `stop_recording`: lets tapes record again, so that a tape the
    dynamics open themselves (a Jacobian trace, a Hamiltonian's gradient) sees
    its operations. Tapes outside see nothing they watch as long as the
    dynamics' inputs are `tf.stop_gradient`-ed, which `Dynamics.untaped_func`
    ensures (and it cuts the outputs too)."""
    stopped = pywrap_tfe.TFE_Py_TapeSetIsStopped()
    if stopped:
        pywrap_tfe.TFE_Py_TapeSetRestartOnThread()
    try:
        yield
    finally:
        if stopped:
            pywrap_tfe.TFE_Py_TapeSetStopOnThread()
