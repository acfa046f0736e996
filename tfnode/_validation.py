"""Python-time checks of user input: each error names the argument, echoes
what it received and says what to do."""

import difflib
import functools
import inspect
import math
import numbers

import numpy as np
import tensorflow as tf

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def is_real_number(value):
    """Whether `value` is a real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _positive(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if not is_real_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive finite number. Received: {name}={value!r}"
        )


def check_options(
    tableau, *, rtol, atol, step_size, first_step, max_num_steps, prefix=""
):
    """Checks the solver options against the method `tableau`. Messages name each
    option with `prefix` (`"adjoint_"` for the backward pass's options)."""
    rtol_, atol_, step_, first_, max_ = (
        prefix + name
        for name in ("rtol", "atol", "step_size", "first_step", "max_num_steps")
    )
    if tableau.adaptive:
        if step_size is not None:
            hint = " (set the initial step with `first_step`)" if not prefix else ""
            raise ValueError(
                f"`{step_}` is only used by fixed-step methods; "
                f"method {tableau.name!r} is adaptive and chooses its own steps "
                f"from `{rtol_}` and `{atol_}`{hint}. Received: {step_}={step_size!r}"
            )
        _positive(rtol_, rtol)
        _positive(atol_, atol)
        _positive(first_, first_step, allow_none=True)
    else:
        if step_size is None:
            raise ValueError(
                f"Fixed-step method {tableau.name!r} needs `{step_}`, e.g. "
                f"`{step_}=0.01`, or use an adaptive method such as 'dopri5'. "
                f"Received: {step_}=None"
            )
        _positive(step_, step_size)
        if first_step is not None:
            raise ValueError(
                f"`{first_}` is only used by adaptive methods, not {tableau.name!r}. "
                f"Received: {first_}={first_step!r}"
            )
    if (
        isinstance(max_num_steps, (bool, np.bool_))
        or not isinstance(max_num_steps, numbers.Integral)
        or max_num_steps < 1
    ):
        raise ValueError(
            f"`{max_}` must be a positive integer. Received: {max_}={max_num_steps!r}"
        )


def as_state(y0):
    """`y0` as the solver reads it: a (nested) list of Python numbers is one
    tensor, as `tf.constant` reads it (`[2.0, 0.0]` is a vector, the natural
    first try). Tuples, dicts and anything holding a tensor or an array keep
    their structure (a tuple of numbers is a nested state of scalars)."""
    if not (isinstance(y0, list) and y0):
        return y0
    leaves = tf.nest.flatten(y0)
    if not all(is_real_number(x) for x in leaves) or any(
        isinstance(x, tuple) for x in _sublists(y0)
    ):
        return y0
    try:
        return tf.constant(y0)
    except ValueError as e:  # e.g. rows of different lengths
        raise ValueError(
            "`y0` given as a nested list of numbers must be rectangular, as "
            f"`tf.constant` reads it. Received: y0={y0!r}"
        ) from e


def _sublists(x):
    """`x` and every list or tuple nested in it."""
    yield x
    if isinstance(x, (list, tuple)):
        for item in x:
            yield from _sublists(item)


def check_checkpoints(checkpoints):
    """`checkpoints`: `None` (automatic) or how many states a checkpoint buffer
    holds, at least 2 (the thinning keeps every other one)."""
    if checkpoints is None:
        return
    if (
        isinstance(checkpoints, (bool, np.bool_))
        or not isinstance(checkpoints, numbers.Integral)
        or checkpoints < 2
    ):
        raise ValueError(
            "`checkpoints` must be None (automatic) or an integer >= 2, the "
            "number of states a buffer of the backward pass holds. Received: "
            f"checkpoints={checkpoints!r}"
        )


def check_state(y0):
    """Flattens `y0` into a list of tensors of one floating dtype."""
    leaves = [tf.convert_to_tensor(x) for x in tf.nest.flatten(y0)]
    if not leaves:
        raise ValueError(f"`y0` must hold at least one tensor. Received: y0={y0!r}")
    for leaf in leaves:
        if leaf.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                "`y0` must be floating point (float16, bfloat16, float32 or float64). "
                f"Received: y0 with dtype {leaf.dtype.name}. "
                "Cast it first, e.g. `tf.cast(y0, tf.float32)`."
            )
    dtypes = {leaf.dtype for leaf in leaves}
    if len(dtypes) > 1:
        raise ValueError(
            "Every tensor in `y0` must have the same dtype. Received dtypes "
            f"{sorted(d.name for d in dtypes)}."
        )
    return leaves


def check_flag(name, value):
    """A boolean option: `True` or `False` (numpy's too), not a truthy object."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_batched(y0):
    """Per-sample steps need a leading batch axis, the same in every leaf."""
    sizes = {leaf.shape[0] for leaf in y0 if leaf.shape.rank}
    if any(leaf.shape.rank == 0 for leaf in y0) or len(sizes - {None}) > 1:
        raise ValueError(
            "`per_sample_steps=True` steps each sample of the leading batch axis on "
            "its own, so every tensor in `y0` needs that axis, of one size B. "
            f"Received: y0 with shapes {[tuple(leaf.shape) for leaf in y0]}. Add "
            "a batch axis (`y0[None]` for one sample) or pass "
            "`per_sample_steps=False`."
        )


def check_times(t, dtype, y0):
    """Converts `t` to `dtype` and checks its shape against the state `y0`.

    Returns `(t, times_ok)`: `times_ok` is `None` when `t` was checked here
    (its value is known), else a boolean tensor for the solver to report.
    """
    if isinstance(t, (tf.Tensor, tf.Variable)):
        if not (t.dtype.is_floating or t.dtype.is_integer):
            raise ValueError(
                f"`t` must be real numbers. Received: t with dtype {t.dtype.name}"
            )
        t = tf.cast(t, dtype)
    else:
        t = tf.convert_to_tensor(np.asarray(t, dtype=dtype.as_numpy_dtype))
    if t.shape.rank not in (1, 2):
        raise ValueError(
            "`t` must have shape [T] (one grid) or [T, B] (a grid per sample). "
            f"Received: t with shape {t.shape}"
        )
    if t.shape[0] is not None and t.shape[0] < 2:
        raise ValueError(
            "`t` needs at least 2 times: t[0] for y0 and the times to solve for. "
            f"Received: t={_show(t)}"
        )
    if t.shape.rank == 2:
        batch = t.shape[1]
        for leaf in y0:
            if leaf.shape.rank == 0 or (
                batch is not None
                and leaf.shape[0] is not None
                and leaf.shape[0] != batch
            ):
                raise ValueError(
                    f"A per-sample `t` of shape {t.shape} ([T, B]) needs every tensor "
                    f"in `y0` to have a leading batch axis of size B={batch}. "
                    f"Received: y0 with shape {leaf.shape}"
                )
    value = tf.get_static_value(t)
    if value is None:
        return t, _times_ok(t)
    steps = np.diff(value, axis=0)
    if not np.all(np.isfinite(value)) or not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError(
            "`t` must be strictly increasing or strictly decreasing (in every column, "
            f"for per-sample grids), with finite values. Received: t={_show(t)}"
        )
    return t, None


def _times_ok(t):
    steps = t[1:] - t[:-1]
    monotonic = tf.reduce_all(steps > 0) | tf.reduce_all(steps < 0)
    return monotonic & tf.reduce_all(tf.math.is_finite(t))


def _show(t):
    value = tf.get_static_value(t)
    return np.array2string(value, threshold=20) if value is not None else str(t)


def flat_func(func, structure):
    """Wraps `func(t, y)` on the user's structure as a function on flat lists,
    checking once (at trace time) that it returns what the state needs."""
    if not callable(func):
        raise ValueError(
            f"`func` must be callable as `func(t, y)`. Received: func={func!r}"
        )

    def wrapped(t, y):
        dy = _stack_components(func(t, tf.nest.pack_sequence_as(structure, y)), y)
        try:
            tf.nest.assert_same_structure(structure, dy)
        except (ValueError, TypeError) as e:
            raise ValueError(
                "`func(t, y)` must return dy/dt with the structure of `y`. Received: "
                f"{_shapes(dy)!r} for y0 of structure {_shapes(structure)!r}"
            ) from e
        out = []
        for leaf, d in zip(y, tf.nest.flatten(dy)):
            d = tf.convert_to_tensor(d)
            if d.dtype != leaf.dtype:
                raise ValueError(
                    f"`func(t, y)` must return the dtype of `y` ({leaf.dtype.name}). "
                    f"Received: {d.dtype.name}"
                )
            if not d.shape.is_compatible_with(leaf.shape):
                raise ValueError(
                    f"`func(t, y)` must return the shape of `y` ({leaf.shape}). "
                    f"Received: {d.shape}"
                )
            out.append(d)
        return out

    return wrapped


def _shapes(structure):
    """`structure` with each tensor replaced by its shape (other leaves kept)."""
    return tf.nest.map_structure(lambda x: getattr(x, "shape", x), structure)


def _stack_components(dy, y):
    """Stacks `[dy0, dy1, ...]`, one scalar per component of a vector state `y`
    (`lambda t, y: [y[1], -y[0]]`), into one tensor; returns `dy` otherwise."""
    if not (isinstance(dy, (list, tuple)) and len(y) == 1 and y[0].shape.rank == 1):
        return dy
    if len(dy) != y[0].shape[0] or any(
        not is_real_number(d) and getattr(d, "shape", None) != () for d in dy
    ):
        return dy
    dtypes = {d.dtype.name for d in dy if not is_real_number(d)}
    if dtypes - {y[0].dtype.name}:
        raise ValueError(
            f"`func(t, y)` must return the dtype of `y` ({y[0].dtype.name}). "
            f"Received: components of dtype {sorted(dtypes)}"
        )
    return tf.stack([tf.convert_to_tensor(d, y[0].dtype) for d in dy])


# torchdiffeq's names for what tfnode takes as keywords, and what to write instead.
TORCHDIFFEQ_KEYWORDS = {
    "options": (
        "solver options are keywords here, not an `options` dict: e.g. "
        "`method='rk4', step_size=0.1` or `first_step=0.01`"
    ),
    "adjoint_options": "the backward solve's options are keywords here",
    "adjoint_params": "the tensors to differentiate go in `params=[...]`",
}


def check_keywords(where, received, valid, options=None):
    """Raises a `TypeError` for keywords of `received` not in `valid`: for
    torchdiffeq's names it says what to write instead, for others it suggests
    the closest of `options` (default: `valid`), the names a user sets by
    keyword."""
    options = valid if options is None else options
    unknown = [name for name in received if name not in valid]
    if not unknown:
        return
    name = unknown[0]
    adjoint_options = sorted(o for o in options if o.startswith("adjoint_"))
    if name.startswith("adjoint_") and options and not adjoint_options:
        hint = (
            "this solve backpropagates through the solver and has no adjoint "
            "settings; for adjoint gradients use `tfnode.odeint_adjoint`"
        )
    elif name in TORCHDIFFEQ_KEYWORDS:
        hint = TORCHDIFFEQ_KEYWORDS[name]
        if name == "adjoint_options" and adjoint_options:
            hint += ": " + ", ".join(f"`{o}`" for o in adjoint_options)
    else:
        close = difflib.get_close_matches(name, options, n=2)
        hint = (
            f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""
        ) + f"the options are {', '.join(sorted(options))}"
    raise TypeError(
        f"{where} got an unexpected keyword argument `{name}`: {hint}. "
        f"Received: {name}={received[name]!r}"
    )


def keywords_checked(fn):
    """Decorates a public function so that an unknown keyword raises
    `check_keywords`' message instead of Python's bare `TypeError`."""
    params = inspect.signature(fn).parameters.values()
    valid = [
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    options = [p.name for p in params if p.kind == p.KEYWORD_ONLY]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        check_keywords(f"`{fn.__name__}()`", kwargs, valid, options)
        return fn(*args, **kwargs)

    # AutoGraph reads a function's source through `__wrapped__` and would
    # convert `fn`'s source with this wrapper's closure: keep the signature
    # for `help()` without the link.
    wrapper.__signature__ = inspect.signature(fn)
    del wrapper.__wrapped__
    return wrapper
