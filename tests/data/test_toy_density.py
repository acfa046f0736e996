"""Tests of the 2-D toy densities and the closed-form log density of 8gaussians."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.special
import scipy.stats

from tfnode.data import TOY_DENSITIES, eight_gaussians_log_prob, toy_density

# The documented 8gaussians mixture, written out again rather than read from the
# module: centres c_k = 4 (cos(k pi / 4), sin(k pi / 4)) / 1.414, std 0.5 / 1.414.
ANGLES = np.arange(8) * np.pi / 4
CENTRES = 4 / 1.414 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], -1)  # [8, 2]
STD = 0.5 / 1.414
# The entropy in nats that `eight_gaussians_log_prob`'s docstring states: to 2
# decimals, and by quadrature.
ENTROPY = 2.83
ENTROPY_QUADRATURE = 2.8319
# A grid on [-6, 6]^2 with spacing 0.05. The rectangle rule integrates a Gaussian
# of std s with spacing h to within about 2 exp(-2 pi^2 s^2 / h^2) = e^-987
# (Poisson summation), and the mass beyond the grid (>= 8.9 s from every
# centre) is below 1e-17, so only float64 round-off over the 58,081 terms is
# left: about 1e-13.
GRID_SPACING = 0.05
GRID_TOLERANCE = 1e-9


def _grid():
    g = np.arange(-6.0, 6.0 + GRID_SPACING / 2, GRID_SPACING)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1)  # [G, G, 2]


def _within(count, n, p, num_se=5):
    """Whether a count is within `num_se` binomial standard errors of `n p`."""
    return abs(count - n * p) < num_se * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("name", TOY_DENSITIES)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_shapes_and_dtypes(name, n):
    x = toy_density(name, n, seed=0)
    assert isinstance(x, np.ndarray)
    assert x.shape == (n, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))


def test_names():
    assert TOY_DENSITIES == ("8gaussians", "moons", "checkerboard", "pinwheel", "rings")


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_seeded(name):
    a, b = toy_density(name, 100, seed=3), toy_density(name, 100, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(toy_density(name, 100), toy_density(name, 100, 0))
    assert not np.allclose(a, toy_density(name, 100, seed=4))


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_bounded(name):
    x = toy_density(name, 10_000, seed=0)
    # Nothing beyond |6| in any seed: it is >= 8.9 std from the 8gaussians
    # centres (radius 2.83, std 0.35), 6.7 std of the pinwheel's radial noise
    # (radius 2 (1 + 0.3 z)), > 15 std from the moons and rings, and the
    # checkerboard fills [-4, 4]^2 exactly.
    assert np.max(np.abs(x)) < 6
    # Roughly [-4, 4]^2 like FFJORD's: in expectation < 0.1% of the coordinates
    # lie outside (8gaussians: 3.3 std beyond the 2 centres on each axis;
    # pinwheel: 3.3 std of its radial noise); allow 1%.
    assert np.mean(np.abs(x) > 4) < 0.01


def test_eight_gaussians_mean_and_clusters():
    n = 8000
    x = toy_density("8gaussians", n, seed=1).astype(np.float64)
    # Per coordinate, var = r^2 / 2 + std^2 (centres evenly on the circle of
    # radius r); allow 5 standard errors.
    se = math.sqrt(((4 / 1.414) ** 2 / 2 + STD**2) / n)
    assert np.all(np.abs(x.mean(0)) < 5 * se), x.mean(0)
    distance = np.linalg.norm(x[:, None] - CENTRES, axis=-1)  # [n, 8]
    nearest = np.argmin(distance, axis=1)
    counts = np.bincount(nearest, minlength=8)
    assert all(_within(count, n, 1 / 8) for count in counts), counts
    # About each centre, isotropic noise of the documented std: 2n residuals, so
    # the relative standard error of their std is 1 / sqrt(4n) = 0.6%; a sample
    # nearer another centre (3.1 std from the boundary: 0.2%) barely biases it.
    residual = x - CENTRES[nearest]
    assert abs(residual.std() / STD - 1) < 0.03, residual.std()
    assert abs(np.corrcoef(residual.T)[0, 1]) < 0.05


def test_log_prob_agrees_with_scipy():
    rng = np.random.default_rng(0)
    # Points near the data and far away, where exp(log N) underflows: the
    # log-sum-exp must stay finite and exact.
    x = np.concatenate([4 * rng.standard_normal((200, 2)), [[0, 0], [50, -80]]])
    expected = scipy.special.logsumexp(
        [scipy.stats.multivariate_normal(c, STD**2).logpdf(x) for c in CENTRES],
        axis=0,
    ) - math.log(8)
    actual = eight_gaussians_log_prob(x)
    assert actual.shape == (202,) and actual.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    # At a centre the other components contribute < 1e-8: log(1 / (8 2 pi s^2)).
    at_centre = eight_gaussians_log_prob(CENTRES[3:4])
    np.testing.assert_allclose(at_centre, -math.log(16 * math.pi * STD**2), rtol=1e-7)


def test_log_prob_integrates_to_one():
    log_p = eight_gaussians_log_prob(_grid())  # [G, G]: any leading shape
    total = np.sum(np.exp(log_p)) * GRID_SPACING**2
    assert abs(total - 1) < GRID_TOLERANCE, total


def test_entropy_by_quadrature():
    log_p = eight_gaussians_log_prob(_grid())
    entropy = -np.sum(np.exp(log_p) * log_p) * GRID_SPACING**2
    # The documented 4 decimals, to their rounding.
    assert abs(entropy - ENTROPY_QUADRATURE) < 5e-5, entropy
    # Just under the entropy of 8 disjoint components, as documented.
    disjoint = math.log(8) + math.log(2 * math.pi * math.e * STD**2)
    assert 0 < disjoint - entropy < 0.01 and round(disjoint, 4) == 2.8382


def test_entropy_by_monte_carlo():
    n = 400_000
    nll = -eight_gaussians_log_prob(toy_density("8gaussians", n, seed=2))
    entropy, se = nll.mean(), nll.std() / math.sqrt(n)  # se ~ 0.0015
    # The documented value is rounded to 2 decimals (off by <= 0.005); allow 4
    # Monte Carlo standard errors more (a 6e-5 chance of failing for a random
    # seed).
    assert abs(entropy - ENTROPY) < 0.005 + 4 * se, (entropy, se)
    assert f"`H = {ENTROPY}` nats" in eight_gaussians_log_prob.__doc__


def test_checkerboard_squares():
    n = 8000
    x = toy_density("checkerboard", n, seed=0)
    column, row = np.floor(x[:, 0] / 2), np.floor(x[:, 1] / 2)  # in -2..1
    assert np.all((column + row) % 2 == 0)  # only the squares of one colour
    counts = np.bincount(((column + 2) * 4 + row + 2).astype(int), minlength=16)
    assert np.count_nonzero(counts) == 8
    assert all(_within(count, n, 1 / 8) for count in counts[counts > 0]), counts


def test_rings_radii():
    n = 8000
    x = toy_density("rings", n, seed=0).astype(np.float64)
    radii = np.array([0.75, 1.5, 2.25, 3.0])
    r = np.linalg.norm(x, axis=1)
    nearest = np.argmin(np.abs(r[:, None] - radii), axis=1)
    counts = np.bincount(nearest, minlength=4)
    assert all(_within(count, n, 1 / 4) for count in counts), counts
    # Radial noise of std 0.08 (the rings are 9 std apart); 3% is 4 standard
    # errors of a std from 8000 samples.
    assert abs((r - radii[nearest]).std() / 0.08 - 1) < 0.03


def test_moons_arcs():
    n = 8000
    x = toy_density("moons", n, seed=0).astype(np.float64)
    # The half circles of radius 2: upper about (-1, -0.2), lower about (1, 0.8),
    # each chosen with probability 1/2 at a uniform angle.
    expected_mean = [0.0, 0.3]  # (+-1, -0.2 + 4 / pi) and (+-1, 0.8 - 4 / pi)
    se = x.std(0) / math.sqrt(n)
    assert np.all(np.abs(x.mean(0) - expected_mean) < 5 * se), x.mean(0)

    def to_arc(centre, side):
        offset = x - centre
        on_side = side * offset[:, 1] >= 0
        to_circle = np.abs(np.linalg.norm(offset, axis=1) - 2)
        to_end = np.linalg.norm(np.abs(offset) - [2, 0], axis=1)
        return np.where(on_side, to_circle, to_end)

    distance = np.minimum(to_arc([-1, -0.2], 1), to_arc([1, 0.8], -1))
    # Noise of std 0.2 per coordinate: distances of RMS about 0.2 (the arcs
    # are 5 std apart at their closest, and a point past an end is a little
    # farther); 10% is > 10 standard errors.
    assert abs(np.sqrt(np.mean(distance**2)) / 0.2 - 1) < 0.1


def test_pinwheel_arms():
    x = toy_density("pinwheel", 8000, seed=0).astype(np.float64)
    # Each arm turns clockwise by 0.25 exp(r / 2) at radius r, from one of the 5
    # angles 2 pi k / 5: undo the turn and the angles bunch at multiples of
    # 2 pi / 5 with a spread of about 0.12 rad (mostly the tangential noise, 0.1
    # at radius 1), whereas uniform angles would spread (2 pi / 5) / sqrt(12) =
    # 0.36 rad.
    r, theta = np.linalg.norm(x, axis=1), np.arctan2(x[:, 1], x[:, 0])
    untwisted = theta + 0.25 * np.exp(r / 2)
    period = 2 * np.pi / 5
    residual = (untwisted + period / 2) % period - period / 2
    assert np.std(residual) < 0.15, np.std(residual)
    arm = np.round((untwisted - residual) / period).astype(int) % 5
    assert all(_within(count, 8000, 1 / 5) for count in np.bincount(arm)), arm


@pytest.mark.parametrize("name", ["8Gaussians", "swissroll", "", None])
def test_unknown_name(name):
    with pytest.raises(ValueError, match=re.escape(str(TOY_DENSITIES))):
        toy_density(name, 10)


@pytest.mark.parametrize("n", [0, -3, 2.5, 10.0, True, "100", None])
def test_bad_n(n):
    with pytest.raises(ValueError, match=rf"positive integer.*Received: n={n!r}"):
        toy_density("moons", n)


def test_numpy_integer_n():
    assert toy_density("rings", np.int64(5)).shape == (5, 2)


@pytest.mark.parametrize("shape", [(10, 3), (2, 1), ()])
def test_log_prob_bad_shape(shape):
    with pytest.raises(ValueError, match=re.escape(f"shape {shape}")):
        eight_gaussians_log_prob(np.zeros(shape))
