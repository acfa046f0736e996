"""Every error `odeint` reports: Python-time `ValueError`s that name the argument and
echo what was received, and run-time failures (too many steps, step-size underflow,
non-finite values, invalid times) in every execution regime. Nothing may hang."""

import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import in_mode

import tfnode
from tfnode import Status
from tfnode.solvers import SOLVERS
from tfnode.stats import status_message

ADAPTIVE = sorted(name for name, tableau in SOLVERS.items() if tableau.adaptive)
FIXED = sorted(name for name, tableau in SOLVERS.items() if not tableau.adaptive)


def decay(t, y):
    return tf.nest.map_structure(tf.negative, y)


def call(y0=None, t=(0.0, 1.0), func=decay, **kwargs):
    y0 = tf.ones([2, 3]) if y0 is None else y0
    return tfnode.odeint(func, y0, t, **kwargs)


# --------------------------------------------------------------------------------------
# Python time: configuration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["foo", "Dopri5", "rk45", None, 5])
def test_unknown_method_lists_valid_ones(method):
    """An unknown `method` is echoed and every valid name is listed."""
    with pytest.raises(
        ValueError, match=re.escape(f"Unknown `method`: {method!r}")
    ) as info:
        call(method=method)
    for name in SOLVERS:
        assert repr(name) in str(info.value)


def test_method_accepts_a_tableau():
    """A `ButcherTableau` is accepted in place of a name."""
    ys = call(method=SOLVERS["rk4"], step_size=0.5)
    assert ys.shape == (2, 2, 3)


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_method_needs_step_size(method):
    """A fixed-step method without `step_size` says how to set one."""
    with pytest.raises(
        ValueError, match=rf"Fixed-step method '{method}' needs `step_size`"
    ):
        call(method=method)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_step_size_is_rejected_by_adaptive_methods(method):
    """`step_size` on an adaptive method is an error, not silently ignored."""
    with pytest.raises(
        ValueError,
        match=rf"`step_size` is only used by fixed-step methods; method '{method}' "
        r"is adaptive.*Received: step_size=0\.1",
    ):
        call(method=method, step_size=0.1)


@pytest.mark.parametrize("method", FIXED)
def test_first_step_is_rejected_by_fixed_step_methods(method):
    """`first_step` on a fixed-step method is an error, not silently ignored."""
    with pytest.raises(
        ValueError,
        match=r"`first_step` is only used by adaptive methods.*first_step=0\.1",
    ):
        call(method=method, step_size=0.1, first_step=0.1)


BAD_NUMBERS = [0, -1e-3, float("nan"), float("inf"), "1e-3", True, None]


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("name", ["rtol", "atol", "first_step", "step_size"])
def test_tolerances_and_steps_must_be_positive_numbers(name, value):
    """`rtol`, `atol`, `first_step` and `step_size` must be positive finite numbers."""
    if value is None and name in ("first_step", "step_size"):
        pytest.skip(f"None is the documented default of {name}")
    method = "rk4" if name == "step_size" else "dopri5"
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"`{name}` must be a positive finite number. Received: {name}={value!r}"
        ),
    ):
        call(method=method, **{name: value})


@pytest.mark.parametrize("value", [0, -5, 2.5, True, None, "100"], ids=repr)
def test_max_num_steps_must_be_a_positive_integer(value):
    """`max_num_steps` must be a positive `int` (not a bool, float or string)."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`max_num_steps` must be a positive integer. "
            f"Received: max_num_steps={value!r}"
        ),
    ):
        call(max_num_steps=value)


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_max_num_steps_bounds_attempted_steps_exactly(method):
    """A solve that needs N attempted steps succeeds with `max_num_steps=N` and fails
    with N - 1 (no off-by-one either way)."""
    options = {"step_size": 0.25} if not SOLVERS[method].adaptive else {}
    _, stats = call(method=method, return_stats=True, **options)
    attempts = int(stats.num_steps) + int(stats.num_rejected)
    call(method=method, max_num_steps=attempts, **options)
    message = status_message(Status.MAX_STEPS_REACHED, max_num_steps=attempts - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        call(method=method, max_num_steps=attempts - 1, **options)


def test_numpy_scalars_are_numbers():
    """Options computed with numpy (np.float32 tolerances, np.int64 step counts) are
    accepted like Python numbers, and solve the same."""
    expected = call(rtol=1e-6, atol=1e-8, max_num_steps=100)
    got = call(
        rtol=np.float32(1e-6), atol=np.float64(1e-8), max_num_steps=np.int64(100)
    )
    np.testing.assert_array_equal(got, expected)
    call(method="rk4", step_size=np.float32(0.25))
    with pytest.raises(ValueError, match=r"`rtol` must be a positive finite number"):
        call(rtol=np.bool_(True))


@pytest.mark.parametrize(
    "options, message",
    [
        (
            dict(adjoint_rtol=-1.0),
            "`adjoint_rtol` must be a positive finite number. "
            "Received: adjoint_rtol=-1.0",
        ),
        (
            dict(adjoint_max_num_steps=0),
            "`adjoint_max_num_steps` must be a positive integer. "
            "Received: adjoint_max_num_steps=0",
        ),
        (
            dict(adjoint_method="rk4"),
            "Fixed-step method 'rk4' needs `adjoint_step_size`",
        ),
    ],
    ids=["rtol", "max_num_steps", "step_size"],
)
def test_adjoint_options_are_named_as_passed(options, message):
    """Errors about the backward pass's options name the `adjoint_` argument."""
    with pytest.raises(ValueError, match=re.escape(message)):
        tfnode.odeint_adjoint(lambda t, y: -y, tf.ones([2]), [0.0, 1.0], **options)


def test_misspelt_option_raises():
    """Unknown keyword arguments are not silently ignored."""
    with pytest.raises(TypeError, match="step_sise"):
        call(method="rk4", step_sise=0.1)


# --------------------------------------------------------------------------------------
# Python time: the state and the times
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("y0", [(), {}, []], ids=["tuple", "dict", "list"])
def test_empty_state(y0):
    """A `y0` without any tensor in it is rejected."""
    with pytest.raises(
        ValueError, match=r"`y0` must hold at least one tensor\. Received: y0="
    ):
        call(y0=y0)


@pytest.mark.parametrize(
    "y0, dtype",
    [
        (tf.constant([1, 2], tf.int32), "int32"),
        (np.array([1, 2]), "int64"),
        (tf.constant([1j]), "complex128"),
        ((tf.ones([1]), tf.constant([1], tf.int32)), "int32"),
    ],
    ids=["int32", "numpy_int", "complex", "nested_int"],
)
def test_state_must_be_floating_point(y0, dtype):
    """Integer or complex states (also inside a nested `y0`) are rejected,
    naming the dtype."""
    with pytest.raises(
        ValueError,
        match=rf"`y0` must be floating point "
        rf"\(float16, bfloat16, float32 or float64\)\. "
        rf"Received: y0 with dtype "
        rf"{dtype}\. Cast it first",
    ):
        call(y0=y0)


def test_state_dtypes_must_agree():
    """The leaves of a nested `y0` must share one dtype."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Every tensor in `y0` must have the same dtype. "
            "Received dtypes ['float32', 'float64']"
        ),
    ):
        call(y0=(tf.ones([1]), tf.ones([1], tf.float64)))


@pytest.mark.parametrize(
    "t, received",
    [
        ([0.0, 0.5, 0.5, 1.0], "[0.  0.5 0.5 1. ]"),
        ([0.0, 1.0, 0.5], "[0.  1.  0.5]"),
        ([1.0, 1.0], "[1. 1.]"),
        ([0.0, float("nan"), 1.0], "[ 0. nan  1.]"),
        ([0.0, float("inf")], "[ 0. inf]"),
        ([[0.0, 1.0], [1.0, 0.0]], "[[0. 1.]\n [1. 0.]]"),
        ([[0.0, 0.0], [1.0, 0.0]], "[[0. 0.]\n [1. 0.]]"),
    ],
    ids=[
        "repeated",
        "non_monotonic",
        "constant",
        "nan",
        "inf",
        "mixed_directions",
        "flat_column",
    ],
)
def test_times_must_be_strictly_monotonic(t, received):
    """Repeated, non-monotonic or non-finite times (in any column of a per-sample grid,
    which must all run in one direction) are rejected with the values echoed."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`t` must be strictly increasing or strictly decreasing (in every column, "
            f"for per-sample grids), with finite values. Received: t={received}"
        ),
    ):
        call(t=t)


@pytest.mark.parametrize(
    "t, received", [([0.0], "[0.]"), ([], "[]")], ids=["one", "none"]
)
def test_times_need_two_points(t, received):
    """`t` with fewer than 2 times is rejected."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"`t` needs at least 2 times: t[0] for y0 and the times to "
            f"solve for. Received: t={received}"
        ),
    ):
        call(t=t)


@pytest.mark.parametrize(
    "t, shape",
    [(0.0, "()"), (np.zeros([2, 2, 2]), "(2, 2, 2)")],
    ids=["rank0", "rank3"],
)
def test_times_must_be_rank_1_or_2(t, shape):
    """`t` must be `[T]` or `[T, B]`; scalars and rank-3 grids are rejected."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`t` must have shape [T] (one grid) or [T, B] (a grid per sample). "
            f"Received: t with shape {shape}"
        ),
    ):
        call(t=t)


@pytest.mark.parametrize("dtype", [tf.bool, tf.string, tf.complex64])
def test_times_must_be_real(dtype):
    """`t` of a non-real dtype (bool, string, complex) is rejected."""
    t = tf.constant(["a", "b"]) if dtype == tf.string else tf.cast([0, 1], dtype)
    with pytest.raises(
        ValueError,
        match=rf"`t` must be real numbers\. Received: t with dtype "
        rf"{dtype.name}",
    ):
        call(t=t)


@pytest.mark.parametrize(
    "y0, shape",
    [
        (tf.ones([2, 3]), "(2, 3)"),  # batch 2, grid for 3 samples
        (tf.ones([]), "()"),  # no batch axis at all
        ((tf.ones([3, 2]), tf.ones([4])), "(4,)"),  # one leaf of a nested state is off
    ],
    ids=["batch_mismatch", "scalar_state", "nested_leaf"],
)
def test_per_sample_times_need_matching_batch(y0, shape):
    """`t` of shape [T, B] requires every leaf of `y0`
    to have a leading axis of size B."""
    t = np.stack([np.linspace(0.0, 1.0, 4)] * 3, axis=1)  # [4, 3]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "A per-sample `t` of shape (4, 3) ([T, B]) needs every tensor in `y0` "
            "to have a leading batch axis of size B=3. "
            f"Received: y0 with shape {shape}"
        ),
    ):
        call(y0=y0, t=t)


# --------------------------------------------------------------------------------------
# Python (trace) time: the function
# --------------------------------------------------------------------------------------


def test_func_must_be_callable():
    """A non-callable `func` is rejected before anything runs."""
    with pytest.raises(
        ValueError,
        match=r"`func` must be callable as `func\(t, y\)`\. Received: "
        r"func=3",
    ):
        call(func=3)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize(
    "func, y0, message",
    [
        (
            lambda t, y: (y, y),
            tf.ones([2]),
            "must return dy/dt with the structure of `y`",
        ),
        (lambda t, y: {"b": y["a"]}, {"a": tf.ones([2])}, "with the structure of `y`"),
        (lambda t, y: y[0], (tf.ones([2]),), "with the structure of `y`"),
        (
            lambda t, y: tf.cast(y, tf.float64),
            tf.ones([2]),
            r"must return the dtype of `y` \(float32\)\. Received: float64",
        ),
        (
            lambda t, y: tf.ones([3]),
            tf.ones([2]),
            r"must return the shape of `y` \(\(2,\)\)\. Received: \(3,\)",
        ),
        (
            lambda t, y: y[:, None],
            tf.ones([2]),
            r"must return the shape of `y` \(\(2,\)\)\. Received: \(2, 1\)",
        ),
    ],
    ids=["extra_leaf", "dict_keys", "unwrapped", "dtype", "shape", "rank"],
)
def test_func_output_must_match_state(func, y0, message, method):
    """`func` returning the wrong structure, dtype or shape
    is caught on its first call."""
    step = {"step_size": 0.5} if not SOLVERS[method].adaptive else {}
    with pytest.raises(ValueError, match=message):
        call(y0=y0, func=func, method=method, **step)


# --------------------------------------------------------------------------------------
# Run time: failures found inside the solver loop, in every regime
# --------------------------------------------------------------------------------------


def _blow_up(t, y):
    return y**2  # y(t) = 1 / (1 - t) from y(0) = 1: infinite at t = 1


def _nan_after_half(t, y):
    nan = tf.constant(float("nan"), y.dtype)
    return tf.where(t > 0.5, nan, -y)


def _max_steps_adaptive():
    return call(max_num_steps=3, return_stats=True)


def _max_steps_fixed():
    return call(method="rk4", step_size=0.01, max_num_steps=10, return_stats=True)


def _underflow_singularity():
    return call(y0=tf.ones([1]), t=[0.0, 2.0], func=_blow_up, return_stats=True)


def _tolerance_below_eps():
    # float32 cannot resolve a relative error of 1e-14 (eps ~ 1.2e-7): the embedded
    # error estimate only meets it at steps ~1e-7 of the span,
    # ~1e7 of them to reach `t[-1]`.
    return call(
        y0=tf.ones([1]), rtol=1e-14, atol=1e-14, max_num_steps=50, return_stats=True
    )


def _nan_in_state():
    return call(y0=tf.constant([1.0, float("nan")]), return_stats=True)


def _nan_from_func_adaptive():
    return call(func=_nan_after_half, return_stats=True)


def _nan_from_func_fixed():
    return call(func=_nan_after_half, method="rk4", step_size=0.1, return_stats=True)


RUNTIME_FAILURES = {
    "max_steps_adaptive": (_max_steps_adaptive, Status.MAX_STEPS_REACHED, 3),
    "max_steps_fixed": (_max_steps_fixed, Status.MAX_STEPS_REACHED, 10),
    "underflow_singularity": (_underflow_singularity, Status.STEP_SIZE_UNDERFLOW, 4096),
    "tolerance_below_eps": (_tolerance_below_eps, Status.MAX_STEPS_REACHED, 50),
    "nan_in_y0": (_nan_in_state, Status.NONFINITE, 4096),
    "nan_from_func_adaptive": (_nan_from_func_adaptive, Status.NONFINITE, 4096),
    "nan_from_func_fixed": (_nan_from_func_fixed, Status.NONFINITE, 4096),
}


@pytest.mark.parametrize("case", sorted(RUNTIME_FAILURES))
def test_runtime_failure(mode, case):
    """Eagerly and in `tf.function` a failed solve raises `InvalidArgumentError` with
    the status's message; under XLA (assertions dropped) `stats.status` holds the code
    and every output is NaN."""
    solve, status, max_num_steps = RUNTIME_FAILURES[case]
    message = status_message(status, max_num_steps=max_num_steps)
    if mode == "xla":
        ys, stats = in_mode(solve, mode)()
        assert int(stats.status) == status
        assert np.all(np.isnan(ys.numpy()))
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            in_mode(solve, mode)()


def _solve_runtime_times(t):
    return call(y0=tf.ones([2, 3]), t=t, return_stats=True)


@pytest.mark.parametrize("mode", ["graph", "xla"])
@pytest.mark.parametrize(
    "t",
    [
        [0.0, 1.0, 0.5],
        [0.0, 0.5, 0.5, 1.0],
        [0.0, float("nan"), 1.0],
        [[0.0, 1.0], [1.0, 0.0]],
    ],
    ids=["non_monotonic", "repeated", "nan", "per_sample_mixed_directions"],
)
def test_times_known_only_at_run_time(t, mode):
    """Times whose values are unknown while tracing are checked when the solve runs:
    `tf.function` raises the INVALID_TIMES message,
    XLA reports the status with NaN outputs."""
    t = np.array(t)
    signature = (tf.TensorSpec([None] * t.ndim, tf.float32),)
    solve = in_mode(_solve_runtime_times, mode, input_signature=signature)
    message = status_message(Status.INVALID_TIMES, max_num_steps=4096)
    if mode == "xla":
        ys, stats = solve(tf.constant(t, tf.float32))
        assert int(stats.status) == Status.INVALID_TIMES
        assert np.all(np.isnan(ys.numpy()))
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            solve(tf.constant(t, tf.float32))


# --------------------------------------------------------------------------------------
# A new user's first tries
# --------------------------------------------------------------------------------------

F32_ULPS_OF_2 = 10 * np.finfo(np.float32).eps * 2


def test_list_of_numbers_is_one_vector_state():
    """`[2.0, 0.0]`, the natural first try, is the vector `tf.constant` reads;
    `func` may return the components as a list, and a mismatch names shapes."""
    t = tf.linspace(0.0, 1.0, 3)
    rotate = tf.constant([[0.0, -1.0], [1.0, 0.0]])
    ys = tfnode.odeint(lambda t, y: tf.linalg.matvec(rotate, y), [2.0, 0.0], t)
    assert isinstance(ys, tf.Tensor) and ys.shape == (3, 2)
    by_components = tfnode.odeint(lambda t, y: [-y[1], y[0]], [2.0, 0.0], t)
    np.testing.assert_allclose(by_components, ys, rtol=0, atol=0)
    # rtol = 1e-7 in float32 leaves round-off: 10 ulps of values of size 2.
    np.testing.assert_allclose(
        ys[-1], [2 * np.cos(1.0), 2 * np.sin(1.0)], atol=F32_ULPS_OF_2
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`func(t, y)` must return dy/dt with the structure of `y`. Received: "
            "(TensorShape([2]), TensorShape([2])) for y0 of structure "
            "TensorShape([2])"
        ),
    ):
        tfnode.odeint(lambda t, y: (y, y), [2.0, 0.0], t)


def test_tuple_of_numbers_keeps_its_structure_and_ragged_lists_are_named():
    t = tf.linspace(0.0, 1.0, 3)
    xs, vs = tfnode.odeint(lambda t, y: (y[1], -y[0]), (1.0, 0.0), t)
    assert xs.shape == vs.shape == (3,)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`y0` given as a nested list of numbers must be rectangular, as "
            "`tf.constant` reads it. Received: y0=[[1.0], [2.0, 3.0]]"
        ),
    ):
        tfnode.odeint(decay, [[1.0], [2.0, 3.0]], t)


def test_components_of_another_dtype_are_named():
    with pytest.raises(
        ValueError,
        match=re.escape("Received: components of dtype ['float32', 'float64']"),
    ):
        tfnode.odeint(
            lambda t, y: [tf.constant(1.0, tf.float64), -y[0]], [2.0, 0.0], [0.0, 1.0]
        )


def test_structure_message_shows_python_numbers():
    """A nested state holding tensors keeps its structure; the message shows
    the numbers a func returned instead of crashing on `.shape`."""
    with pytest.raises(
        ValueError, match=re.escape("Received: 1.0 for y0 of structure (TensorShape")
    ):
        call(y0=(tf.ones([2]), tf.ones([1])), func=lambda t, y: 1.0)


@pytest.mark.parametrize(
    "keyword, value, message",
    [
        ("options", {"step_size": 0.1}, "solver options are keywords here"),
        ("adjoint_params", [], "the tensors to differentiate go in `params=[...]`"),
        ("rtoll", 1e-3, "did you mean `rtol` or `atol`? the options are "),
    ],
)
@pytest.mark.parametrize("solver", ["odeint", "odeint_adjoint"])
def test_unknown_keywords_say_what_to_write(solver, keyword, value, message):
    if solver == "odeint" and keyword == "adjoint_params":
        message = (
            "has no adjoint settings; for adjoint gradients use `tfnode.odeint_adjoint`"
        )
    with pytest.raises(
        TypeError,
        match=rf"`{solver}\(\)` got an unexpected keyword argument `{keyword}`: "
        rf".*{re.escape(message)}.*Received: {keyword}=",
    ):
        getattr(tfnode, solver)(decay, tf.ones([2]), [0.0, 1.0], **{keyword: value})


@pytest.mark.parametrize(
    "y0",
    [tf.zeros([]), (tf.zeros([3, 2]), tf.zeros([4]))],
    ids=["scalar", "two-batch-sizes"],
)
@pytest.mark.parametrize("solve", [tfnode.odeint, tfnode.odeint_adjoint])
def test_per_sample_steps_need_one_batch_axis(solve, y0):
    with pytest.raises(ValueError, match=r"needs that axis, of one size B.*y0\[None\]"):
        solve(lambda t, y: y, y0, [0.0, 1.0], per_sample_steps=True)


@pytest.mark.parametrize("value", ["no", 1, None], ids=repr)
def test_per_sample_steps_must_be_a_bool(value):
    with pytest.raises(ValueError, match="`per_sample_steps` must be True or False"):
        tfnode.odeint(
            lambda t, y: y, tf.ones([2, 1]), [0.0, 1.0], per_sample_steps=value
        )
    with pytest.raises(ValueError, match="`per_sample_steps` must be True or False"):
        tfnode.NeuralODELayer(tfnode.MLPODEFunc(), per_sample_steps=value)
