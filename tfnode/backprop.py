"""Exact gradients of `odeint` in bounded memory: a custom gradient that runs the
checkpointed backward sweep of `tfnode.solvers.checkpoints`.

The gradient is that of the computed solution (discretise-then-optimise), as
plain backprop through the solver gives it: every accepted step is retaken
from a checkpointed state and differentiated, and step-size selection is not
differentiated. What it saves is memory: TensorFlow's own gradient of the
solver's `tf.while_loop` keeps every stage of every step and, under XLA,
preallocates `max_num_steps` steps of them.
"""

from __future__ import annotations

import tensorflow as tf

from tfnode import _tf_private
from tfnode._dynamics import Dynamics
from tfnode._problem import solve
from tfnode.solvers import adaptive, checkpoints, fixed_grid
from tfnode.solvers.time_map import broadcast_to_leaf

# The checkpoints of `checkpoints=None` under XLA, where memory must be fixed
# in advance. Neural-ODE solves mostly take fewer steps, and then the sweep
# replays nothing; 64 states of the 7x7x64 conv block at batch 32 are 26 MB.
AUTOMATIC_SLOTS = 64


def uses_checkpoints(checkpoints_option):
    """Whether `odeint`'s gradient takes the checkpointed sweep: with a budget,
    or under XLA, whose own gradient of a loop preallocates `max_num_steps`."""
    return checkpoints_option is not None or _tf_private.in_xla_context(
        tf.compat.v1.get_default_graph()
    )


def captured_tensors(problem, checkpoints_option):
    """The float tensors that `problem.func` closes over (traced once), which
    backprop differentiates as plain backprop would; variables are not among
    them (`tf.custom_gradient` reports those).

    Returns `None` if `func` cannot be traced on its own (e.g. it creates
    variables on its first call) and no `checkpoints` were asked for: then
    TensorFlow's own gradient, which is right, if under XLA not bounded.

    Raises:
        ValueError: If `func` cannot be traced and `checkpoints` were asked for.
    """
    t_spec = tf.TensorSpec(problem.t.shape[1:], problem.t.dtype)
    y_specs = [tf.TensorSpec(y.shape, y.dtype) for y in problem.y0]
    try:
        graph = (
            tf.function(lambda t, *y: problem.func(t, list(y)), autograph=False)
            .get_concrete_function(t_spec, *y_specs)
            .graph
        )
    except Exception as e:
        if checkpoints_option is None:
            return None
        raise ValueError(
            "`checkpoints` needs `func` to run on its own in a `tf.function` (to "
            "find the tensors it reads), which failed; call `func` once before "
            f"`odeint` if it creates variables on its first call. Received: {e}"
        ) from e
    return [x for x in graph.external_captures if x.dtype.is_floating]


@tf.custom_gradient
def _first_order_only(x):
    """The identity, whose gradient raises: differentiating the checkpointed
    gradient would need the solve differentiable in what it recorded."""

    def grad(_):
        raise NotImplementedError(
            "The checkpointed gradient of `odeint` (used with `checkpoints=N` and "
            "under XLA) cannot be differentiated again. For second derivatives "
            "use `checkpoints=None` outside XLA (TensorFlow's own gradient)."
        )

    return tf.identity(x), grad


def solve_checkpointed(problem, func, slots, options, captured):
    """`odeint`'s solve of `problem` with the checkpointed gradient.

    Args:
        problem: A `Problem` (see `tfnode._problem.prepare`).
        func: The user's `func`; a Keras layer is evaluated on explicit
            weight values (`stateless_call`), other callables' variables
            reach the gradient through `tf.custom_gradient`.
        slots: States per checkpoint buffer, or `None` for `AUTOMATIC_SLOTS`.
        options: The drivers' options (`rtol`, ..., `max_num_steps`).
        captured: `captured_tensors(problem)`: they become inputs of the
            custom gradient, which returns their gradients.

    Returns:
        `(ys, stats)`: flat outputs and the forward `SolverStats`.
    """
    max_num_steps = options["max_num_steps"]
    slots = max(2, min(slots or AUTOMATIC_SLOTS, max_num_steps))
    tableau = problem.tableau
    replay = adaptive.replay if tableau.adaptive else fixed_grid.replay
    dynamics = Dynamics(func, None, problem)
    num_leaves = len(problem.y0)
    num_params = len(dynamics.params)
    stats_out = []

    @tf.custom_gradient
    def checkpointed(*inputs):
        y0 = list(inputs[:num_leaves])
        t = inputs[num_leaves]
        param_values = list(inputs[num_leaves + 1 : num_leaves + 1 + num_params])
        # The captured tensors' inputs are not read: `func` reads the originals.
        with _tf_private.stop_recording():
            y0 = [tf.stop_gradient(y) for y in y0]
            t = tf.stop_gradient(t)
            param_values = [tf.stop_gradient(p) for p in param_values]
            per_sample = options.get("per_sample_steps", False) and tableau.adaptive
            records = checkpoints.start(y0, slots, max_num_steps, per_sample)
            ys, stats, _, records = solve(
                problem,
                dynamics.untaped_func(param_values),
                y0,
                t,
                records=records,
                **options,
            )
        stats_out.append(stats)

        def grad_fn(*grad_ys, variables=None):
            variables = list(variables or [])
            grad_ys = [
                tf.zeros_like(y) if g is None else g for g, y in zip(grad_ys, ys)
            ]
            f = dynamics.flat_func(param_values)
            targets = [t, *param_values, *captured, *variables]

            def advance(k, y):
                return replay(f, t, tableau, records, k, y)[0]

            def pullback(k, y, carry):
                cotangent, accumulated = carry
                with tf.GradientTape() as tape:
                    tape.watch(y)
                    tape.watch(targets)
                    y1, dot = replay(f, t, tableau, records, k, y, grad_ys)
                    objective = dot + tf.add_n(
                        [tf.reduce_sum(c * v) for c, v in zip(cotangent, y1)]
                    )
                grads = tape.gradient(
                    objective,
                    y + targets,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                accumulated = [a + g for a, g in zip(accumulated, grads[num_leaves:])]
                return grads[:num_leaves], accumulated

            carry = (
                [tf.zeros_like(y) for y in y0],
                [tf.zeros_like(x) for x in targets],
            )
            cotangent, accumulated = checkpoints.sweep(
                records,
                advance,
                pullback,
                carry,
                slots=slots,
                max_num_steps=max_num_steps,
            )
            # ys[0] is y0 itself.
            grads = [c + g[0] for c, g in zip(cotangent, grad_ys)] + accumulated
            # A failed solve has NaN outputs; its gradients are NaN too: per
            # sample for y0 with per-sample steps, wherever one failed for the rest.
            failed = stats.status != 0
            masks = [broadcast_to_leaf(failed, g) for g in grads[:num_leaves]]
            masks += [tf.reduce_any(failed)] * (len(grads) - num_leaves)
            grads = [
                _first_order_only(tf.where(m, tf.constant(float("nan"), g.dtype), g))
                for m, g in zip(masks, grads)
            ]
            num_inputs = num_leaves + 1 + num_params + len(captured)
            return grads[:num_inputs], grads[num_inputs:]

        return ys, grad_fn

    ys = checkpointed(*problem.y0, problem.t, *dynamics.param_values(), *captured)
    return list(ys), stats_out[0]
