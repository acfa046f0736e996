"""Tests of the spirals data sets and their `tf.data` pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from helpers import assert_allclose

from tfnode.data import spirals

# float32 storage of trajectories of magnitude <= ~20.
FLOAT32_ATOL = 1e-5


def _turning(x):
    """Total signed turning angle of the velocity of each `[N, T, 2]` path."""
    v = np.diff(x.astype(np.float64), axis=1)
    angle = np.unwrap(np.arctan2(v[..., 1], v[..., 0]), axis=1)
    return angle[:, -1] - angle[:, 0]


@pytest.fixture(scope="module", params=["linear", "paper"])
def data(request):
    make = (
        spirals.linear_spirals if request.param == "linear" else spirals.paper_spirals
    )
    return make(40, seed=3)


def test_shapes_and_dtypes(data):
    n, t = 40, 200
    assert data.t.shape == (t,) and data.x.shape == data.x_true.shape == (n, t, 2)
    assert data.x.dtype == data.x_true.dtype == data.t.dtype == np.float32
    assert data.clockwise.shape == (n,) and data.clockwise.sum() == n // 2
    assert np.all(np.diff(data.t) > 0) and data.t[0] == 0


def test_directions(data):
    # The velocity turns clockwise (negative angle) exactly on clockwise spirals.
    turning = _turning(data.x_true)
    assert np.all((turning < 0) == data.clockwise), turning


def test_noise_level():
    for make, std in ((spirals.linear_spirals, 0.02), (spirals.paper_spirals, 0.3)):
        data = make(200, seed=0)
        measured = np.std(data.x - data.x_true)
        assert abs(measured - std) < 0.03 * std, (make.__name__, measured)


def test_linear_spirals_solve_their_linear_ode():
    # Recover W from the noiseless path and check x(t) = expm(W t) x0 (closed form).
    data = spirals.linear_spirals(6, t_max=6.29 * 5, seed=5)
    dt = float(data.t[1] - data.t[0])
    for x in data.x_true.astype(np.float64):
        # x_(k+1) = expm(W dt) x_k
        step = np.linalg.lstsq(x[:-1], x[1:], rcond=None)[0].T
        w = scipy.linalg.logm(step).real / dt
        assert np.all(np.linalg.eigvals(w).real < 0)  # stable
        expected = np.stack([scipy.linalg.expm(w * t) @ x[0] for t in data.t])
        assert_allclose(x, expected, atol=1e-4)
    assert data.t[-1] == np.float32(6.29 * 5)


@pytest.mark.parametrize("clockwise_curve", ["archimedean", "hyperbolic"])
def test_paper_spirals_follow_the_reference_curves(clockwise_curve):
    data = spirals.paper_spirals(10, clockwise_curve=clockwise_curve, seed=1)
    theta = np.linspace(0, 6 * np.pi, 500)
    cc = np.stack([0.3 * theta * np.cos(theta) + 5, 0.3 * theta * np.sin(theta)], -1)
    if clockwise_curve == "archimedean":  # the mirror image through x = 0
        cw = cc * [-1, 1]
    else:  # torchdiffeq's examples/latent_ode.py
        z = 6 * np.pi + 1 - theta
        cw = np.stack([15 / z * np.cos(z) - 5, 15 / z * np.sin(z)], -1)
    assert np.all(_turning(cw[None]) < 0) and np.all(_turning(cc[None]) > 0)
    for x, clockwise in zip(data.x_true, data.clockwise):
        curve = cw if clockwise else cc
        start = np.argmin(np.sum((curve - x[0]) ** 2, -1))
        assert 100 <= start <= 300  # away from the curve's start; 200 points fit
        assert_allclose(x, curve[start : start + 200], atol=FLOAT32_ATOL * 20)
    assert_allclose(data.t, theta[:200], atol=1e-6)


def test_generators_are_seeded():
    for make in (spirals.linear_spirals, spirals.paper_spirals):
        a, b, c = make(8, seed=1), make(8, seed=1), make(8, seed=2)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert not np.allclose(a.x, c.x)


def _batches(data, k=4, **kwargs):
    return [
        {key: v.numpy() for key, v in batch.items()}
        for batch in spirals.spiral_dataset(data, **kwargs).take(k)
    ]


def test_dataset_batches():
    data = spirals.linear_spirals(30, seed=0)
    batches = _batches(
        data, k=12, batch_size=8, span=100, num_observations=(30, 50, 100)
    )
    seen_n = set()
    for batch in batches:
        x, t = batch["x"], batch["t"]
        n = t.shape[1]
        seen_n.add(n)
        assert x.shape == (8, n, 2) and t.shape == (8, n) and x.dtype == np.float32
        # every per-sample grid strictly increasing
        assert np.all(np.diff(t, axis=1) > 0)
        index = np.rint(t / data.t[1]).astype(int)
        assert_allclose(data.t[index], t, atol=1e-5)  # times lie on the data grid
        assert np.all(index[:, -1] - index[:, 0] < 100)  # within one sub-span of 100
        # Each row is a subset of one spiral at those times.
        for row_x, row_i in zip(x, index):
            matches = np.all(np.abs(data.x[:, row_i] - row_x) < 1e-7, axis=(1, 2))
            assert matches.sum() == 1
        if n < 100:  # irregular: grids differ between samples
            assert len({tuple(row) for row in index - index[:, :1]}) > 1
    assert seen_n == {30, 50, 100}


def test_dataset_max_start_zero_uses_first_span():
    data = spirals.paper_spirals(20, seed=0)
    for batch in _batches(data, batch_size=5, max_start=0, num_observations=(100,)):
        assert_allclose(batch["t"], np.broadcast_to(data.t[:100], (5, 100)), atol=0)


def test_dataset_is_seeded():
    data = spirals.linear_spirals(30, seed=0)
    a, b = _batches(data, batch_size=8, seed=7), _batches(data, batch_size=8, seed=7)
    c = _batches(data, batch_size=8, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["x"], y["x"])
        np.testing.assert_array_equal(x["t"], y["t"])
    assert any(
        x["t"].shape != z["t"].shape or not np.array_equal(x["t"], z["t"])
        for x, z in zip(a, c)
    )


def test_extrapolation_split():
    data = spirals.paper_spirals(12, seed=0)
    split = spirals.extrapolation_split(data, num_observations=30, seed=0)
    assert split.x_seed.shape == (12, 30, 2) and split.t_seed.shape == (12, 30)
    assert split.t_future.shape == (12, 100) and split.x_future.shape == (12, 100, 2)
    assert np.all(np.diff(split.t_seed, axis=1) > 0)
    assert np.all(split.t_seed[:, -1] <= data.t[99]) and np.all(
        split.t_future[:, 0] == data.t[100]
    )
    np.testing.assert_array_equal(split.x_future, data.x_true[:, 100:])
    rows = np.arange(12)[:, None]
    index = np.searchsorted(data.t, split.t_seed)
    np.testing.assert_array_equal(split.x_seed, data.x[rows, index])
    again = spirals.extrapolation_split(data, num_observations=30, seed=0)
    np.testing.assert_array_equal(again.t_seed, split.t_seed)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(span=300), "span"),
        (dict(num_observations=(120,)), "num_observations"),
        (dict(max_start=150), "max_start"),
    ],
)
def test_dataset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spirals.spiral_dataset(
            spirals.linear_spirals(4, seed=0), **{"batch_size": 2, **kwargs}
        )


def test_generator_errors():
    with pytest.raises(ValueError, match="num_total"):
        spirals.paper_spirals(4, num_total=250)
    with pytest.raises(ValueError, match="clockwise_curve"):
        spirals.paper_spirals(4, clockwise_curve="logarithmic")
    with pytest.raises(ValueError, match="num_spirals"):
        spirals.linear_spirals(0)
    with pytest.raises(ValueError, match="num_seed"):
        spirals.extrapolation_split(
            spirals.linear_spirals(4), num_observations=30, num_seed=200
        )
