"""`odeint_adjoint`: gradients of `odeint` by the adjoint method, in constant
memory (Chen et al. 2018, Algorithm 1), through `tf.custom_gradient`."""

from __future__ import annotations

import tensorflow as tf

from tfnode import _tf_private, _validation, solvers
from tfnode._adjoint_system import augmented, parameter_quadrature
from tfnode._dynamics import Dynamics
from tfnode._problem import finish, prepare, run_driver, solve
from tfnode._typing import ODEFunction, State, TensorLike, TimeLike
from tfnode.solvers.controller import per_sample_rms_norm, rms_norm
from tfnode.stats import SolverStats, raise_on_failure

_NORMS = ("seminorm", "full")


class BackwardStats(tf.Module):
    """Receives the statistics of `odeint_adjoint`'s backward pass.

    The backward solve runs when the gradient is computed, after
    `odeint_adjoint` has returned, so its counts cannot be return values.
    Create one of these outside any `tf.function`, pass it as
    `backward_stats=`, and read it after `tape.gradient(...)`: each attribute
    is an int32 variable holding the counts of the most recent backward pass
    (summed over its output intervals; `status` is the worst one), of shape
    `[B]`, one per sample, with `per_sample_steps=True`.

    Example:

    >>> bstats = tfnode.BackwardStats()
    >>> w = tf.Variable(-1.0)
    >>> with tf.GradientTape() as tape:
    ...     ys = tfnode.odeint_adjoint(lambda t, y: w * y, tf.ones([2]), [0.0, 1.0],
    ...                                params=[w], backward_stats=bstats)
    >>> _ = tape.gradient(ys, w)
    >>> int(bstats.nfe) > 0
    True
    """

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        with self.name_scope:
            for field in SolverStats._fields:
                setattr(
                    self,
                    field,
                    tf.Variable(
                        0,
                        trainable=False,
                        name=field,
                        # a scalar, or [B] after a per-sample backward pass
                        shape=tf.TensorShape(None),
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                    ),
                )

    def record(self, stats: SolverStats):
        """Assigns `stats`; returns the assign ops (for control dependencies)."""
        return [
            getattr(self, f).assign(tf.cast(x, tf.int32))
            for f, x in zip(SolverStats._fields, stats)
        ]

    def result(self) -> SolverStats:
        """The recorded counts as a `SolverStats` of tensors."""
        return SolverStats(
            *(tf.convert_to_tensor(getattr(self, f)) for f in SolverStats._fields)
        )


@_validation.keywords_checked
def odeint_adjoint(
    func: ODEFunction,
    y0: State,
    t: TimeLike,
    *,
    params: list[TensorLike] | None = None,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
    first_step: float | None = None,
    max_num_steps: int = 4096,
    adjoint_method: str | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_step_size: float | None = None,
    adjoint_max_num_steps: int | None = None,
    adjoint_norm: str = "seminorm",
    backward_stats: BackwardStats | None = None,
    per_sample_steps: bool = False,
    return_stats: bool = False,
) -> State | tuple[State, SolverStats]:
    """Integrates `dy/dt = func(t, y)` like `odeint`, with adjoint gradients.

    The forward pass is `odeint`'s solve with nothing recorded for backprop.
    The backward pass solves the adjoint system `da/dt = -a^T df/dy`,
    `d(a_params)/dt = -a^T df/dparams` backwards from `t[-1]` to `t[0]`
    together with `y` itself, one output interval at a time: at each `t[i]`
    the state is reset to the forward solution and the incoming gradient
    `dL/dy(t_i)` is added to `a`. Memory is constant in the number of steps.

    Gradients are returned for `y0`, every entry of `t` (`dL/dt_i = dL/dy_i .
    f(t_i, y_i)` for `i >= 1` and `dL/dt_0 = -a(t_0) . f(t_0, y_0)`, the
    closed form of the paper's time adjoint) and every tensor in `params`.

    Args:
        func: Callable `func(t, y) -> dy/dt`, as in `odeint`. A Keras layer is
            evaluated with `stateless_call` on its weights; for a `tf.Module`
            the default `params` are its trainable variables.
        y0, t, method, rtol, atol, step_size, first_step, max_num_steps: As in
            `odeint`.
        params: The tensors and variables that `func` reads and that need
            gradients. Defaults to `func.trainable_variables` for a Keras layer
            or `tf.Module`, else none.
        adjoint_method, adjoint_rtol, adjoint_atol, adjoint_step_size: Solver
            settings of the backward pass. Default to the forward ones.
        adjoint_max_num_steps: Bound on the steps of each backward interval.
            Defaults to `max_num_steps`.
        adjoint_norm: `"seminorm"` (default) leaves `a_params` out of the
            backward error control (Kidger et al. 2021), which takes fewer
            steps; `"full"` controls the error of every adjoint component.
        backward_stats: A `tfnode.BackwardStats` that receives the backward
            pass's statistics when the gradient is computed.
        per_sample_steps: As in `odeint`, for the forward and the backward
            solve: each sample's `(y, a)` is stepped on its own (its own
            `BackwardStats` entries, `[B]`), and `a_params`, which has no batch
            axis, is integrated as a quadrature over each sample's accepted
            steps, so it is outside error control as with `"seminorm"`, which
            `adjoint_norm="full"` then also means. Fixed-step backward solves
            keep one status for the batch (the parameter adjoint is shared).
        return_stats: Whether to also return the forward `tfnode.SolverStats`.

    Returns:
        As `odeint`.

    Raises:
        ValueError: As `odeint`; also for an unknown `adjoint_norm`, and (when
            the gradient is taken) if `func` reads a trainable variable that
            is not in `params`.
        TypeError: For an unknown keyword; torchdiffeq's `adjoint_params=`
            and `adjoint_options=` are explained.

    Note:
        Adjoint gradients are exact only to solver tolerance: they differ from
        `odeint` backprop by O(tol). Tensors closed over by a plain Python
        `func` are not differentiated unless passed in `params`. Under XLA a
        failed backward solve yields NaN gradients and, in `backward_stats`,
        its status.

    Example:

    >>> w = tf.Variable(-1.0)
    >>> with tf.GradientTape() as tape:
    ...     ys = tfnode.odeint_adjoint(lambda t, y: w * y, tf.ones([2]), [0.0, 1.0],
    ...                                params=[w])
    ...     loss = tf.reduce_sum(ys[-1])
    >>> round(float(tape.gradient(loss, w)), 4)  # d/dw 2 e^w at w = -1
    0.7358

    References:
        Chen et al. (2018), "Neural Ordinary Differential Equations", NeurIPS.
        Kidger et al. (2021), "Hey, that's not an ODE: Faster ODE Adjoints via
        Seminorms", ICML.
    """
    if adjoint_norm not in _NORMS:
        raise ValueError(
            f"`adjoint_norm` must be one of {_NORMS}. "
            f"Received: adjoint_norm={adjoint_norm!r}"
        )
    options = dict(
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        first_step=first_step,
        max_num_steps=max_num_steps,
    )
    problem = prepare(func, y0, t, method, per_sample_steps, **options)
    options["per_sample_steps"] = bool(per_sample_steps)
    backward_tableau, backward_options = backward_settings(
        method,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        max_num_steps=max_num_steps,
        adjoint_method=adjoint_method,
        adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol,
        adjoint_step_size=adjoint_step_size,
        adjoint_max_num_steps=adjoint_max_num_steps,
    )

    dynamics = Dynamics(func, params, problem)
    num_leaves = len(problem.y0)
    stats_out = []

    @tf.custom_gradient
    def adjoint_solve(*inputs):
        y0_in, t_in, param_values = _split(inputs, num_leaves)
        with _tf_private.stop_recording():
            y0_in = [tf.stop_gradient(y) for y in y0_in]
            t_in = tf.stop_gradient(t_in)
            param_values = [tf.stop_gradient(p) for p in param_values]
            f = dynamics.untaped_func(param_values)
            ys, stats, last_step = solve(problem, f, y0_in, t_in, **options)
        stats_out.append(stats)

        def grad_fn(*grad_ys, variables=None):
            grads = _backward(
                dynamics,
                param_values,
                ys,
                [g if g is not None else tf.zeros_like(y) for g, y in zip(grad_ys, ys)],
                y0_in,
                t_in,
                backward_tableau,
                backward_options,
                adjoint_norm,
                backward_stats,
                last_step,
                bool(per_sample_steps),
            )
            return grads, dynamics.variable_grads(variables)

        return ys, grad_fn

    ys = adjoint_solve(*problem.y0, problem.t, *dynamics.param_values())
    ys = finish(problem, list(ys), stats_out[0], max_num_steps=max_num_steps)
    return (ys, stats_out[0]) if return_stats else ys


def backward_settings(
    method,
    *,
    rtol,
    atol,
    step_size,
    max_num_steps,
    adjoint_method=None,
    adjoint_rtol=None,
    adjoint_atol=None,
    adjoint_step_size=None,
    adjoint_max_num_steps=None,
):
    """Returns the backward pass's tableau and solver options, checked.

    Used by `odeint_adjoint` and by `NeuralODELayer` at construction. Each
    `adjoint_*` setting is used, or the forward one where it is `None`; a
    forward `step_size` is not passed on to an adaptive backward method.

    Args:
        method: The forward method's name.
        rtol: The forward relative tolerance.
        atol: The forward absolute tolerance.
        step_size: The forward fixed step, or `None`.
        max_num_steps: The forward step bound.
        adjoint_method: The backward method's name, or `None`.
        adjoint_rtol: The backward relative tolerance, or `None`.
        adjoint_atol: The backward absolute tolerance, or `None`.
        adjoint_step_size: The backward fixed step, or `None`.
        adjoint_max_num_steps: The backward step bound per interval, or `None`.

    Returns:
        `(tableau, options)`: the backward `ButcherTableau` and the keyword
        options of the solver drivers (`rtol`, `atol`, `step_size`,
        `first_step`, `max_num_steps`).

    Raises:
        ValueError: Naming the `adjoint_*` argument, as `odeint` does for its
            own; also for an explicit `adjoint_step_size` with an adaptive
            backward method.
    """
    tableau = solvers.get(adjoint_method or method)
    options = dict(
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol,
        step_size=step_size if adjoint_step_size is None else adjoint_step_size,
        first_step=None,
        max_num_steps=max_num_steps
        if adjoint_max_num_steps is None
        else adjoint_max_num_steps,
    )
    if tableau.adaptive and adjoint_step_size is None:
        options["step_size"] = None
    _validation.check_options(tableau, prefix="adjoint_", **options)
    return tableau, options


def _split(inputs, num_leaves):
    return list(inputs[:num_leaves]), inputs[num_leaves], list(inputs[num_leaves + 1 :])


def _backward(
    dynamics,
    param_values,
    ys,
    grad_ys,
    y0,
    t,
    tableau,
    options,
    norm_name,
    recorder,
    last_step,
    per_sample_steps,
):
    """Solves the adjoint system from `t[-1]` back to `t[0]`; returns the
    gradients for `(*y0, t, *params)`. `last_step` is the step the forward
    controller proposed at `t[-1]` (units of `t`, `None` for fixed steps; per
    sample with per-sample steps): it starts the first backward interval,
    since the adjoint shares the forward Jacobian's time scales, and saves the
    initial-step heuristic's evaluations and the small first steps it tends to
    choose. With `per_sample_steps` the backward solve steps each sample on its
    own too, its parameter adjoint included (see `tfnode._adjoint_system`)."""
    num_leaves = len(y0)
    per_sample_grid = t.shape.rank == 2
    func = dynamics.flat_func(param_values)
    per_sample_params = per_sample_steps and tableau.adaptive
    make_g = augmented(dynamics, param_values, num_leaves, per_sample_params)
    make_increment = parameter_quadrature(dynamics, param_values, num_leaves, tableau)
    # Each interval is solved in unit time u in [0, 1] on a grid shared by all
    # samples (make_g maps u to each sample's own times), so the parameter
    # adjoint, which has no batch axis, needs no per-sample output times.
    unit_interval = tf.constant([0.0, 1.0], t.dtype)
    base_norm = per_sample_rms_norm if per_sample_params else rms_norm
    norm = base_norm
    if norm_name == "seminorm":

        def norm(leaves):
            return base_norm(leaves[: 2 * num_leaves])

    def dot(a, b):
        """Sum of `a * b` over each sample (per-sample grids) or overall."""
        terms = [
            tf.reduce_sum(tf.reshape(x * y, [tf.shape(x)[0], -1]), 1)
            if per_sample_grid
            else tf.reduce_sum(x * y)
            for x, y in zip(a, b)
        ]
        return tf.add_n(terms)

    num_times = tf.shape(t)[0]
    batch = [tf.shape(y0[0])[0]] if per_sample_params else []
    adj_params = [tf.zeros_like(p) for p in param_values]
    adj_t = tf.zeros_like(t)

    def interval(i, adj_y, adj_params, adj_t, first_step):
        """Adds the direct gradients at `t[i]`, then solves back to `t[i-1]`.

        Adaptive methods start from the step proposed at the end of the
        previous interval (in units of `t`), not from the initial-step
        heuristic: the adjoint is as smooth across `t[i]` as within an
        interval, and restarting from a small step costs 2-3x the NFE.
        """
        y_i = [y[i] for y in ys]
        g_i = [g[i] for g in grad_ys]
        adj_y = [a + g for a, g in zip(adj_y, g_i)]
        state = y_i + adj_y + ([] if per_sample_params else adj_params)
        span = t[i - 1] - t[i]
        # Units of t per unit of u: each sample's own with per-sample steps,
        # else the widest sample's (its span is u = 1).
        width = tf.abs(span) if per_sample_params else tf.reduce_max(tf.abs(span))
        augmented = make_g(t[i], span)

        def rescale(_func, _t0, _span):
            return augmented

        if tableau.adaptive:
            # The first stage's y-part is span * f(t_i, y_i): it also gives dL/dt_i.
            k1 = augmented(tf.zeros(batch, t.dtype), state)
            f_i = dot(g_i, k1[:num_leaves]) / span
            interval_options = dict(
                options, first_step=None if first_step is None else first_step / width
            )
        else:
            k1 = None
            f_i = dot(g_i, func(t[i], y_i))
            interval_options = dict(
                options, step_size=options["step_size"] / tf.reduce_max(width)
            )
        quadrature = None
        if per_sample_params:
            increment = make_increment(t[i], span)
            quadrature = ([tf.zeros_like(p) for p in adj_params], increment)
        out, stats, next_step, *integrals = run_driver(
            tableau,
            None,
            state,
            unit_interval,
            norm=norm,
            rescale=rescale,
            k1=k1,
            # Fixed steps are per-sample already; their state holds the
            # parameter adjoint, which has no batch axis to split a status by.
            per_sample_steps=per_sample_params,
            quadrature=quadrature,
            **interval_options,
        )
        if tableau.adaptive:
            next_step = next_step * width
        else:
            stats = stats._replace(nfe=stats.nfe + 1)  # f(t_i, y_i) for dL/dt_i
            next_step = tf.zeros([], t.dtype)
        adj_t = tf.tensor_scatter_nd_update(adj_t, [[i]], f_i[None])
        end = [x[-1] for x in out]
        if per_sample_params:
            end += [a + b for a, b in zip(adj_params, integrals[0])]
        return (
            end[num_leaves : 2 * num_leaves],
            end[2 * num_leaves :],
            adj_t,
            stats,
            next_step,
        )

    def body(i, adj_y, adj_params, adj_t, step, nfe, num_steps, num_rejected, status):
        adj_y, adj_params, adj_t, stats, step = interval(
            i, adj_y, adj_params, adj_t, step
        )
        return (
            i - 1,
            adj_y,
            adj_params,
            adj_t,
            step,
            nfe + stats.nfe,
            num_steps + stats.num_steps,
            num_rejected + stats.num_rejected,
            tf.maximum(status, stats.status),
        )

    adj_y0 = [tf.zeros_like(y) for y in y0]
    # [B] with per-sample steps (fixed-step counts broadcast: alike for all).
    counts = tf.zeros([tf.shape(y0[0])[0]] if per_sample_steps else [], tf.int32)
    first = body(
        num_times - 1,
        adj_y0,
        adj_params,
        adj_t,
        last_step,
        1 + counts,
        counts,
        counts,
        counts,
    )
    _, adj_y, adj_params, adj_t, _, nfe, num_steps, num_rejected, status = (
        tf.while_loop(
            lambda i, *_: i > 0,
            body,
            first,
            maximum_iterations=num_times - 2 if t.shape[0] is None else t.shape[0] - 2,
        )
    )
    # dL/dt_0 = -a(t_0) . f(t_0, y_0), before the direct gradient at t_0 is added.
    adj_t = tf.tensor_scatter_nd_update(adj_t, [[0]], -dot(adj_y, func(t[0], y0))[None])
    adj_y = [a + g[0] for a, g in zip(adj_y, grad_ys)]
    grads = adj_y + [adj_t] + adj_params
    stats = SolverStats(nfe, num_steps, num_rejected, status)
    checks = raise_on_failure(
        status,
        max_num_steps=options["max_num_steps"],
        context="In the backward (adjoint) solve: ",
    )
    if recorder is not None:
        checks += recorder.record(stats)
    if checks:
        with tf.control_dependencies(checks):
            grads = [tf.identity(g) for g in grads]
    return grads
