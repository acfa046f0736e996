"""The 2-D toy densities of the continuous-normalizing-flow literature, as in
FFJORD's 2-D experiments (Grathwohl et al. 2019), on roughly `[-4, 4]^2`.

- `"8gaussians"`: an equal mixture of 8 isotropic Gaussians on a circle, whose
  density is known in closed form (`eight_gaussians_log_prob`).
- `"moons"`: two interleaved noisy half circles.
- `"checkerboard"`: uniform on the 8 dark squares of a 4 x 4 board.
- `"pinwheel"`: 5 curved arms (Johnson et al. 2016).
- `"rings"`: 4 noisy concentric circles.

The constants are those of the toy data code (`lib/toy_data.py`) of FFJORD
and of residual flows (Chen et al. 2019), so the figures of those papers can
be compared directly. The differences: numpy alone (no
scikit-learn: the two moons are written out here), and every sample is drawn
independently, whereas that code spaces the moons and rings evenly in angle,
gives each ring or arm the same count and returns `5 * (n // 5)` pinwheel
points. The densities are the same.

All randomness comes from an integer `seed`: the same seed gives the same
array, in any process.
"""

from __future__ import annotations

import math

import numpy as np

# FFJORD's 8gaussians: centres on the unit circle times 4, std 0.5, and then the
# whole sample divided by 1.414 (the code's constant, not sqrt(2)).
_EIGHT_SCALE = 4.0
_EIGHT_DIVISOR = 1.414
_EIGHT_ANGLES = np.arange(8) * np.pi / 4
_EIGHT_ON_CIRCLE = np.stack([np.cos(_EIGHT_ANGLES), np.sin(_EIGHT_ANGLES)], -1)
_EIGHT_CENTRES = _EIGHT_SCALE * _EIGHT_ON_CIRCLE / _EIGHT_DIVISOR  # [8, 2]
_EIGHT_STD = 0.5 / _EIGHT_DIVISOR


def _eight_gaussians(rng, n):
    """`(4 u_k + N(0, 0.5^2 I)) / 1.414`, `u_k` on the unit circle, `k` uniform."""
    k = rng.integers(8, size=n)
    x = _EIGHT_SCALE * _EIGHT_ON_CIRCLE[k] + 0.5 * rng.standard_normal((n, 2))
    return x / _EIGHT_DIVISOR


def _moons(rng, n):
    """scikit-learn's `make_moons(noise=0.1)`, then `2 x + (-1, -0.2)`."""
    upper = rng.random(n) < 0.5
    angle = np.pi * rng.random(n)
    # Upper moon: the unit upper half circle; lower: its reflection through the
    # origin, shifted by (1, 0.5).
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    xy = np.stack([x, y], -1) + 0.1 * rng.standard_normal((n, 2))
    return 2.0 * xy + np.array([-1.0, -0.2])


def _checkerboard(rng, n):
    """Uniform on the squares of side 2 of `[-4, 4]^2` whose column and row
    indices (`floor(x / 2)`, `floor(y / 2)`) have the same parity."""
    x1 = 4.0 * rng.random(n) - 2.0
    x2 = rng.random(n) - 2.0 * rng.integers(2, size=n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], -1)


def _pinwheel(rng, n):
    """5 arms: radius `~ N(1, 0.3^2)` and tangential offset `~ N(0, 0.1^2)`,
    turned clockwise by the arm's angle plus `0.25 exp(radius)`, all times 2."""
    features = rng.standard_normal((n, 2)) * np.array([0.3, 0.1])
    features[:, 0] += 1.0
    arm = rng.integers(5, size=n)
    angle = 2 * np.pi * arm / 5 + 0.25 * np.exp(features[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    # FFJORD's einsum("ti,tij->tj", features, [[cos, -sin], [sin, cos]]).
    x = features[:, 0] * cos + features[:, 1] * sin
    y = -features[:, 0] * sin + features[:, 1] * cos
    return 2.0 * np.stack([x, y], -1)


def _rings(rng, n):
    """Radius 3, 2.25, 1.5 or 0.75 with equal probability, uniform angle, plus
    N(0, 0.08^2 I)."""
    radius = 3.0 * (1.0 - 0.25 * rng.integers(4, size=n))
    angle = 2 * np.pi * rng.random(n)
    xy = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    return xy + 0.08 * rng.standard_normal((n, 2))


_GENERATORS = {
    "8gaussians": _eight_gaussians,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "rings": _rings,
}

TOY_DENSITIES = tuple(_GENERATORS)
"""The names `toy_density` accepts, in FFJORD's spelling."""


def toy_density(name: str, n: int, seed: int = 0) -> np.ndarray:
    """Draws `n` independent samples of the 2-D toy density `name`.

    The densities (see the module docstring) are FFJORD's, on roughly
    `[-4, 4]^2`; `"checkerboard"` fills `[-4, 4]^2` exactly.
    `"8gaussians"` is the equal mixture of isotropic Gaussians with centres
    `c_k = 4 (cos(k pi / 4), sin(k pi / 4)) / 1.414`, `k = 0..7`, and std
    `0.5 / 1.414`; `eight_gaussians_log_prob` is its log density.

    Args:
        name: One of `TOY_DENSITIES`: `"8gaussians"`, `"moons"`,
            `"checkerboard"`, `"pinwheel"` or `"rings"`.
        n: Number of samples, a positive integer.
        seed: Integer seed of `np.random.default_rng`. Defaults to `0`.

    Returns:
        A float32 numpy array of shape `[n, 2]`.

    Raises:
        ValueError: If `name` is not one of `TOY_DENSITIES`, or `n` is not a
            positive integer.

    Example:

    >>> x = toy_density("8gaussians", 500, seed=1)
    >>> x.shape, x.dtype
    ((500, 2), dtype('float32'))

    References:
        Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for
        Scalable Reversible Generative Models", ICLR.
    """
    if name not in _GENERATORS:
        raise ValueError(
            f"Unknown toy density. Received: name={name!r}; expected one of "
            f"{TOY_DENSITIES}"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(
            "`n` must be a positive integer (the number of samples). "
            f"Received: n={n!r} of type {type(n).__name__}; pass e.g. n=1000"
        )
    x = _GENERATORS[name](np.random.default_rng(seed), int(n))
    return x.astype(np.float32)


def eight_gaussians_log_prob(x: np.ndarray) -> np.ndarray:
    """Evaluates the log density of `"8gaussians"` at `x`.

    The density is the equal mixture `p(x) = (1/8) sum_k N(x; c_k, s^2 I)`
    (computed as a log-sum-exp) with centres
    `c_k = 4 (cos(k pi / 4), sin(k pi / 4)) / 1.414`, `k = 0..7`, and std
    `s = 0.5 / 1.414`: FFJORD's constants, see `toy_density`.

    Its differential entropy, the least average negative log-likelihood a
    model of the data can reach, is `H = 2.83` nats (2.8319 by quadrature).
    The components overlap little (neighbouring centres are 6.1 `s` apart),
    so `H` is just under `log 8 + log(2 pi e s^2) = 2.8382`, its value if they
    did not overlap at all.

    Args:
        x: Array of shape `[..., 2]`, typically `[n, 2]`.

    Returns:
        A float64 array of shape `[...]` (`[n]` for `x` of shape `[n, 2]`).

    Raises:
        ValueError: If the last axis of `x` does not have size 2.

    Example:

    >>> x = toy_density("8gaussians", 100_000, seed=0)
    >>> entropy = -eight_gaussians_log_prob(x).mean()  # standard error 0.003
    >>> print(f"{entropy:.2f}")
    2.83
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] != 2:
        raise ValueError(
            f"`x` must have shape [..., 2] (points of the plane). "
            f"Received: x with shape {x.shape}"
        )
    squared = np.sum((x[..., None, :] - _EIGHT_CENTRES) ** 2, axis=-1)  # [..., 8]
    logits = -squared / (2 * _EIGHT_STD**2)
    top = np.max(logits, axis=-1)
    log_sum = top + np.log(np.sum(np.exp(logits - top[..., None]), axis=-1))
    return log_sum - math.log(8 * 2 * math.pi * _EIGHT_STD**2)
