"""`odeint`: solves `dy/dt = func(t, y)` at the times `t` (time-major output)."""

from __future__ import annotations

from tfnode import _validation
from tfnode._problem import finish, prepare, solve
from tfnode._typing import ODEFunction, State, TimeLike
from tfnode.backprop import captured_tensors, solve_checkpointed, uses_checkpoints
from tfnode.stats import SolverStats


@_validation.keywords_checked
def odeint(
    func: ODEFunction,
    y0: State,
    t: TimeLike,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
    first_step: float | None = None,
    max_num_steps: int = 4096,
    checkpoints: int | None = None,
    per_sample_steps: bool = False,
    return_stats: bool = False,
) -> State | tuple[State, SolverStats]:
    """Integrates `dy/dt = func(t, y)` from `t[0]` through every time in `t`.

    Adaptive methods step freely under a PI controller and produce outputs at
    `t` by dense-output interpolation; they do not shorten steps to hit `t`.
    Fixed-step methods split each interval of `t` into equal steps of at most
    `step_size`, so they hit every output time.

    Its gradient is the exact gradient of the computed solution (the
    "RK-Net" of Chen et al.; step-size selection is not differentiated) for
    `y0`, every `t[i]` and every variable or tensor `func` reads. How it is
    computed decides its memory:

    - `checkpoints=None` outside XLA: TensorFlow differentiates the solver's
      loop, keeping every stage of every step (memory grows with the steps
      taken). The fastest.
    - `checkpoints=N`, and under XLA always (`N = 64` by default): the solve
      keeps `N` states at evenly spread steps (thinned as the solve goes on)
      and three scalars per step; the backward pass retakes each step from
      the states under a tape, replaying segments longer than `N` steps on
      further levels. Memory follows `N` states and `log(max_num_steps)`
      levels, never the steps taken, plus three scalars per allowed step;
      time is one more evaluation of each step, plus one replay per extra
      level. (TensorFlow's own gradient of a loop under XLA preallocates
      `max_num_steps` steps of every stage.) This gradient cannot be
      differentiated again (second derivatives raise).

    `odeint_adjoint` needs memory constant in the steps at any length, but its
    gradients are exact only to the solver's tolerance.

    Args:
        func: Callable `func(t, y) -> dy/dt`. `t` is a scalar tensor (shape
            `[B]` for per-sample grids) and the output has the structure,
            shape and dtype of `y`.
        y0: Initial state at `t[0]`: a float tensor of any shape, or a nested
            structure (tuple, list, dict) of them with one dtype.
        t: Times of shape `[T]`, strictly increasing or strictly decreasing,
            `T >= 2`; or `[T, B]`, one such grid per sample (all in the same
            direction), for states with a leading batch axis `B`.
        method: One of `tfnode.solvers.SOLVERS`: `"euler"`, `"midpoint"`,
            `"rk4"` (fixed step) or `"bosh3"`, `"dopri5"`, `"tsit5"`
            (adaptive). Defaults to `"dopri5"`.
        rtol: Relative tolerance of adaptive methods. Defaults to `1e-7`.
        atol: Absolute tolerance of adaptive methods. Defaults to `1e-9`.
        step_size: Largest step of fixed-step methods (required by them).
        first_step: First step of adaptive methods, in units of `t`; by
            default chosen by the Hairer–Nørsett–Wanner heuristic with the
            book's exponent `1 / (order + 1)`, applied in the unit time `(t -
            t[0]) / (t[-1] - t[0])`, so it differs from scipy's and
            torchdiffeq's (see `tfnode.solvers.initial_step`).
        max_num_steps: Bound on the number of (attempted) steps. Defaults to
            `4096`.
        checkpoints: How many states the gradient keeps per checkpoint
            buffer (at least 2), or `None`: TensorFlow's own gradient outside
            XLA, 64 under XLA. See above.
        per_sample_steps: Whether each sample of the leading batch axis of
            every leaf is solved on its own: its own step size, error norm
            (over its own components), accept/reject decisions, counts and
            status, so that its output does not depend on the other samples
            of the batch. `func` then receives `t` of shape `[B]`, and the
            fields of `stats` have shape `[B]`. A failed sample's outputs are
            NaN and the others are valid (gradients of parameters shared by
            the batch are NaN, as every sample contributes to them). `func`
            must not mix samples (no sums or normalisation over the batch).
            Fixed-step methods take the same steps for all samples on a grid
            `[T]`; on a per-sample grid `[T, B]` each interval takes the
            number of steps of the widest sample's span, so there a sample's
            result depends on the others' spans. The checkpointed gradient
            then records `u`, `dt` and acceptance per sample. Defaults to
            `False` (one step size for the batch, chosen by the RMS error
            over all of it).
        return_stats: Whether to also return a `tfnode.SolverStats`.

    Returns:
        `ys` with the structure of `y0` and each tensor of shape
        `[T, *y0.shape]`; `ys[0]` equals `y0`. With `return_stats=True`, a
        tuple `(ys, stats)`.

    Raises:
        ValueError: If `t` is not strictly monotonic, has fewer than 2 times
            or does not match `y0`; if `y0` is not floating point; if `method`
            is unknown or an option does not fit it.
        TypeError: For an unknown keyword; torchdiffeq's `options=` and
            `adjoint_params=` are explained.
        tf.errors.InvalidArgumentError: When the solve fails (too many steps,
            step-size underflow, a non-finite state): eagerly at once, in a
            `tf.function` when it runs.

    Note:
        Under `tf.function(jit_compile=True)` TensorFlow drops assertions, so
        a failed solve does not raise: its outputs are NaN and
        `stats.status` holds the `tfnode.Status` code. Check it there.

    Example:

    >>> ys = tfnode.odeint(lambda t, y: -y, tf.ones([3]), tf.linspace(0., 1., 5))
    >>> ys.shape
    TensorShape([5, 3])

    References:
        Chen et al. (2018), "Neural Ordinary Differential Equations", NeurIPS.
    """
    options = dict(
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        first_step=first_step,
        max_num_steps=max_num_steps,
    )
    _validation.check_checkpoints(checkpoints)
    problem = prepare(func, y0, t, method, per_sample_steps, **options)
    options["per_sample_steps"] = bool(per_sample_steps)
    captured = (
        captured_tensors(problem, checkpoints)
        if uses_checkpoints(checkpoints)
        else None
    )
    if captured is not None:
        ys, stats = solve_checkpointed(problem, func, checkpoints, options, captured)
    else:
        ys, stats, _ = solve(problem, problem.func, problem.y0, problem.t, **options)
    ys = finish(problem, ys, stats, max_num_steps=max_num_steps)
    return (ys, stats) if return_stats else ys
