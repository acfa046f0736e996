"""`func` with its parameters made explicit, for the custom gradients of
`odeint_adjoint` and of the checkpointed `odeint` backprop."""

from __future__ import annotations

import tensorflow as tf

from tfnode import _tf_private, _validation


class Dynamics:
    """`func` with its parameters made explicit, for the forward solve and the
    vector-Jacobian products of the backward solve."""

    def __init__(self, func, params, problem):
        """`problem`: the validated problem (a Keras layer `func` is built on
        its first state, one call, so that its weights exist to pass in)."""
        structure = problem.structure
        if params is None and hasattr(func, "stateless_call") and not func.built:
            func(problem.t[0], tf.nest.pack_sequence_as(structure, problem.y0))
        self.func = func
        self.structure = structure
        self.is_keras = hasattr(func, "stateless_call") and params is None
        if self.is_keras:
            self.params = list(func.trainable_variables)
        elif params is not None:
            self.params = list(params)
        elif isinstance(func, tf.Module):
            self.params = list(func.trainable_variables)
        else:
            self.params = []

    def param_values(self):
        return [tf.convert_to_tensor(p) for p in self.params]

    def flat_func(self, param_values):
        """`func` on flat lists; a Keras layer reads `param_values`."""
        if self.is_keras:
            non_trainable = [
                tf.convert_to_tensor(v) for v in self.func.non_trainable_variables
            ]

            def user_func(t, y):
                return self.func.stateless_call(param_values, non_trainable, t, y)[0]
        else:
            user_func = self.func
        return _validation.flat_func(user_func, self.structure)

    def untaped_func(self, param_values):
        """`flat_func` for a solve that no outer tape may record (the adjoint's
        forward, the checkpointed backprop's, run under `stop_recording`): for
        a Keras layer `func`, a tape it opens itself (a Jacobian trace, a
        Hamiltonian's `dH/dq`) still records, and what it computes is cut from
        any tape outside, inputs and outputs alike."""
        func = self.flat_func(param_values)
        if not self.is_keras:
            # A plain function or `tf.Module` reads its variables directly, and
            # outer tapes would watch them and record every evaluation (memory
            # growing with the steps), so no tape records here. Dynamics that
            # open their own tape must be Keras layers, whose weights
            # `stateless_call` feeds as the cut `param_values`.
            return func

        def untaped(t, y):
            t = tf.stop_gradient(t)
            y = [tf.stop_gradient(v) for v in y]
            with _tf_private.resume_recording():
                dy = func(t, y)
            return [tf.stop_gradient(d) for d in dy]

        return untaped

    def vjp_targets(self, param_values):
        """What the tape differentiates for the parameter adjoint (the
        `tf.Variable` behind a Keras 3 variable)."""
        if self.is_keras:
            return param_values
        return [p if _tf_variable(p) is None else _tf_variable(p) for p in self.params]

    def variable_grads(self, variables):
        """Gradients for variables that `tf.custom_gradient` saw `func` read.

        Parameters already reach them through their explicit value inputs.
        """
        if not variables:
            return []
        known = {
            _tf_variable(p).ref() for p in self.params if _tf_variable(p) is not None
        }
        missing = [
            v for v in variables if v.trainable and _tf_variable(v).ref() not in known
        ]
        if missing:
            raise ValueError(
                "`func` reads trainable variables that are not in `params`, so "
                "`odeint_adjoint` cannot differentiate them: "
                f"{[v.name for v in missing]}. Pass them in `params=[...]` (or make "
                "`func` a `tf.Module` / Keras layer that owns them)."
            )
        return [None] * len(variables)


def _tf_variable(p):
    """The `tf.Variable` behind `p` (a Keras 3 variable wraps one), else None."""
    if isinstance(p, tf.Variable):
        return p
    value = getattr(p, "value", None)
    return value if isinstance(value, tf.Variable) else None
