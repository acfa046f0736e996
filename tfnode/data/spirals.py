"""Noisy 2-D spirals, half clockwise and half counter-clockwise: the data set of
the latent ODE experiment (Chen et al. 2018, §5.1), in two variants, with a
`tf.data` pipeline of random sub-spans and irregular observation times.

- `linear_spirals`: the reference notebook's spirals, random stable linear
  dynamics `dx/dt = W x` from random initial states.
- `paper_spirals`: the paper's Archimedean spirals, with its authors' code's
  constants (optionally that code's hyperbolic clockwise curve).
- `spiral_dataset`: endless training batches `{"x": [B, n, 2], "t": [B, n]}`,
  a random sub-span per spiral, thinned to `n` random observations (its own
  time grid per spiral), `n` drawn per batch from `(30, 50, 100)`.
- `extrapolation_split`: observe (a random subset of) the first part of each
  spiral, predict the rest.

All randomness comes from an integer `seed`: the same seed gives the same
arrays and the same batches, in any process.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

# The reference notebook's settings.
NOTEBOOK_T_MAX = 6.29 * 5
NOTEBOOK_NUM_POINTS = 200
NOTEBOOK_NOISE_STD = 0.02


class Spirals(NamedTuple):
    """A spirals data set on one shared time grid.

    Attributes:
        t: `[T]` float32 times, shared by every spiral.
        x: `[N, T, 2]` float32 noisy observations.
        x_true: `[N, T, 2]` float32 noiseless trajectories.
        clockwise: `[N]` bool, the direction of each spiral (alternating,
            starting with clockwise, so any prefix is balanced).
    """

    t: np.ndarray
    x: np.ndarray
    x_true: np.ndarray
    clockwise: np.ndarray


class Extrapolation(NamedTuple):
    """Seed observations and the future to predict, per spiral.

    Attributes:
        x_seed: `[N, n, 2]` noisy observations at `t_seed`.
        t_seed: `[N, n]` strictly increasing observation times.
        t_future: `[N, F]` times to predict, all after `t_seed[:, -1]`.
        x_future: `[N, F, 2]` noiseless trajectory at `t_future` (the target).
    """

    x_seed: np.ndarray
    t_seed: np.ndarray
    t_future: np.ndarray
    x_future: np.ndarray


def linear_spirals(
    num_spirals: int = 1000,
    *,
    num_points: int = NOTEBOOK_NUM_POINTS,
    t_max: float = NOTEBOOK_T_MAX,
    noise_std: float = NOTEBOOK_NOISE_STD,
    seed: int = 0,
) -> Spirals:
    """Spirals of random stable linear dynamics, as in the reference notebook.

    Each spiral solves `dx/dt = W x` from `x0 ~ 2 N(0, I)` over `num_points`
    equally spaced times in `[0, t_max]` with `W = [[-0.1|a| - 0.05, |b|],
    [-|c|, -0.1|d| - 0.05]]` (`a, b, c, d ~ N(0, 1)`): clockwise. For the
    counter-clockwise half the off-diagonal entries are swapped. Gaussian
    noise of std `noise_std` is added to the observations. The solution is
    the closed-form matrix exponential (no ODE solver involved).

    Differences from the notebook: directions alternate exactly (the
    notebook's in-place swap gives an irregular but also balanced pattern),
    and the rare draws whose `W` has real eigenvalues (about 1 in 1000: no
    rotation, hence no spiral and no direction; about 8 in 1000) are drawn
    again.

    Args:
        num_spirals: Number of spirals `N`. Defaults to `1000`.
        num_points: Number of times `T`. Defaults to `200`.
        t_max: Last time. Defaults to `6.29 * 5`.
        noise_std: Observation noise std. Defaults to `0.02`.
        seed: Integer seed. Defaults to `0`.

    Returns:
        A `Spirals`.

    Example:

    >>> data = linear_spirals(10, seed=1)
    >>> data.x.shape, data.t.shape, int(data.clockwise.sum())
    ((10, 200, 2), (200,), 5)
    """
    _check_positive(num_spirals=num_spirals, num_points=num_points)
    rng = np.random.default_rng(seed)
    x0 = 2.0 * rng.standard_normal((num_spirals, 2))
    w11, w22, w12, w21 = _rotating_entries(rng, num_spirals)
    clockwise = np.arange(num_spirals) % 2 == 0
    # Clockwise needs dy/dt < 0 on the positive x axis: W21 < 0 < W12.
    upper = np.where(clockwise, w12, w21)
    lower = np.where(clockwise, w21, w12)
    t = np.linspace(0.0, t_max, num_points)
    # exp(W t) = e^(s t) [cos(w t) I + sin(w t) / w (W - s I)], s = tr(W) / 2,
    # w^2 = det(W) - s^2 > 0 (complex eigenvalues s +- i w).
    s = 0.5 * (w11 + w22)
    omega = np.sqrt(w11 * w22 - upper * lower - s**2)
    decay = np.exp(np.outer(s, t))  # [N, T]
    cos, sinc = np.cos(np.outer(omega, t)), np.sin(np.outer(omega, t)) / omega[:, None]
    x, y = x0[:, :1], x0[:, 1:]
    bx = (w11 - s)[:, None] * x + upper[:, None] * y  # (W - s I) x0
    by = lower[:, None] * x + (w22 - s)[:, None] * y
    x_true = np.stack(
        [decay * (cos * x + sinc * bx), decay * (cos * y + sinc * by)], -1
    )
    noisy = x_true + noise_std * rng.standard_normal(x_true.shape)
    return Spirals(
        t.astype(np.float32),
        noisy.astype(np.float32),
        x_true.astype(np.float32),
        clockwise,
    )


def _rotating_entries(rng, n):
    """Draws the notebook's matrix entries, redrawing those with real eigenvalues."""
    w11 = -0.1 * np.abs(rng.standard_normal(n)) - 0.05
    w22 = -0.1 * np.abs(rng.standard_normal(n)) - 0.05
    w12 = np.abs(rng.standard_normal(n))
    w21 = -np.abs(rng.standard_normal(n))
    while True:
        # discriminant >= 0: real eigenvalues
        bad = -w12 * w21 <= 0.25 * (w11 - w22) ** 2
        if not bad.any():
            return w11, w22, w12, w21
        k = int(bad.sum())
        w12[bad] = np.abs(rng.standard_normal(k))
        w21[bad] = -np.abs(rng.standard_normal(k))


def paper_spirals(
    num_spirals: int = 1000,
    *,
    num_total: int = 500,
    num_observed: int = 100,
    num_future: int = 100,
    t_max: float = 6 * math.pi,
    noise_std: float = 0.3,
    a: float = 0.0,
    b: float = 0.3,
    clockwise_curve: str = "archimedean",
    seed: int = 0,
) -> Spirals:
    """Archimedean spirals in the setting of Chen et al. (2018, §5.1).

    The paper says: 1000 2-D spirals, each starting at a different point,
    sampled at 100 equally spaced times, half clockwise and half
    counter-clockwise, with Gaussian observation noise. The remaining
    constants are those of the authors' `generate_spiral2d` in torchdiffeq's
    `examples/latent_ode.py` as its `__main__` calls it: reference curves on
    `num_total = 500` equally spaced angles `t` in `[0, 6 pi]`; the
    counter-clockwise curve is the Archimedean spiral `r = a + b t` at angle
    `t` about `(5, 0)`; `a = 0`, `b = 0.3`; noise std `0.3`. Each spiral is a
    window of a curve starting at a random index, its times re-based to start
    at 0 (the dynamics are time-invariant), as in that code.

    The clockwise curve: with `clockwise_curve="archimedean"` (default) it is
    the mirror image of the counter-clockwise one, `r = a + b t` at angle
    `pi - t` about `(-5, 0)`, so both are the Archimedean spirals that code's
    docstring describes. `"hyperbolic"` reproduces what that code actually
    computes: `r = a + 50 b / (6 pi + 1 - t)` at angle `6 pi + 1 - t` about
    `(-5, 0)`, a hyperbolic spiral whose radius grows from about 0.8 to 15,
    quickly near the end (much harder to extrapolate).

    Other differences from that code: each window holds `num_observed`
    points for the model plus the next `num_future` points (the paper reports
    RMSE on 100 points beyond those used), so start indices are uniform in
    `[num_observed, num_total - num_observed - num_future]` rather than
    `[num_observed, num_total - num_observed)`; directions alternate exactly
    instead of by coin flip; noise is added to every point of the window.

    Args:
        num_spirals: Number of spirals `N`. Defaults to `1000`.
        num_total: Points on each reference curve. Defaults to `500`.
        num_observed: Points of each window used for fitting. Defaults to `100`.
        num_future: Points after those, to extrapolate. Defaults to `100`.
        t_max: Last angle of the reference curves. Defaults to `6 pi`.
        noise_std: Observation noise std. Defaults to `0.3`.
        a, b: Spiral parameters. Default to `0.0` and `0.3`.
        clockwise_curve: `"archimedean"` or `"hyperbolic"`, see above.
            Defaults to `"archimedean"`.
        seed: Integer seed. Defaults to `0`.

    Returns:
        A `Spirals` with `T = num_observed + num_future` times from 0.

    Example:

    >>> data = paper_spirals(4)
    >>> data.x.shape, round(float(data.t[-1]), 3)
    ((4, 200, 2), 7.517)
    """
    _check_positive(
        num_spirals=num_spirals, num_total=num_total, num_observed=num_observed
    )
    window = num_observed + num_future
    last_start = num_total - window
    if last_start < num_observed:
        raise ValueError(
            "`num_total` must be at least `2 * num_observed + num_future`, "
            "so that windows can start away from the curve's beginning. "
            f"Received: num_total={num_total}, "
            f"num_observed={num_observed}, num_future={num_future}"
        )
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, t_max, num_total)
    r_cc = a + b * ts
    curve_cc = np.stack([r_cc * np.cos(ts) + 5.0, r_cc * np.sin(ts)], -1)
    if clockwise_curve == "archimedean":
        curve_cw = np.stack([-r_cc * np.cos(ts) - 5.0, r_cc * np.sin(ts)], -1)
    elif clockwise_curve == "hyperbolic":
        z_cw = t_max + 1.0 - ts
        r_cw = a + b * 50.0 / z_cw
        curve_cw = np.stack([r_cw * np.cos(z_cw) - 5.0, r_cw * np.sin(z_cw)], -1)
    else:
        raise ValueError(
            "`clockwise_curve` must be 'archimedean' or 'hyperbolic'. "
            f"Received: clockwise_curve={clockwise_curve!r}"
        )
    clockwise = np.arange(num_spirals) % 2 == 0
    starts = rng.integers(num_observed, last_start + 1, size=num_spirals)
    index = starts[:, None] + np.arange(window)  # [N, T]
    x_true = np.where(clockwise[:, None, None], curve_cw[index], curve_cc[index])
    noisy = x_true + noise_std * rng.standard_normal(x_true.shape)
    return Spirals(
        ts[:window].astype(np.float32),
        noisy.astype(np.float32),
        x_true.astype(np.float32),
        clockwise,
    )


def spiral_dataset(
    spirals: Spirals,
    *,
    batch_size: int = 100,
    span: int = 100,
    num_observations: tuple[int, ...] = (30, 50, 100),
    max_start: int | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """An endless `tf.data.Dataset` of training batches with irregular times.

    Batch `k` takes `batch_size` distinct random spirals; from each, a
    random sub-span of `span` consecutive points starting at an index in
    `[0, max_start]`; from each sub-span, `n` points chosen at random without
    replacement and kept in time order, `n` drawn once per batch from
    `num_observations`. Every spiral thus has its own time grid. Batch `k`
    depends only on `(seed, k)` (stateless random ops), so the stream is
    reproducible whatever the parallelism.

    Args:
        spirals: A `Spirals`.
        batch_size: Spirals per batch. Defaults to `100`.
        span: Length of the sub-span. Defaults to `100`.
        num_observations: Choices of `n`. Defaults to `(30, 50, 100)`.
        max_start: Last allowed start index. Defaults to `T - span`; pass `0`
            to train on the first `span` points only.
        seed: Integer seed. Defaults to `0`.

    Returns:
        A dataset of dicts `{"x": [B, n, D], "t": [B, n]}` (float32), the
        input format of `tfnode.models.ode_vae.ODEVAE.fit`. Use `take(k)` or
        `fit(..., steps_per_epoch=k)`.

    Example:

    >>> ds = spiral_dataset(linear_spirals(20), batch_size=4, num_observations=(30,))
    >>> batch = next(iter(ds))
    >>> batch["x"].shape, batch["t"].shape
    (TensorShape([4, 30, 2]), TensorShape([4, 30]))
    """
    num_spirals, num_times = spirals.x.shape[:2]
    max_start = num_times - span if max_start is None else max_start
    if not 1 <= batch_size <= num_spirals:
        raise ValueError(
            f"`batch_size` must be in [1, {num_spirals}] (the number of spirals). "
            f"Received: batch_size={batch_size}"
        )
    if not (2 <= span <= num_times and 0 <= max_start <= num_times - span):
        raise ValueError(
            f"Need 2 <= span <= T and 0 <= max_start <= T - span, with T={num_times}. "
            f"Received: span={span}, max_start={max_start}"
        )
    if not num_observations or any(not 2 <= n <= span for n in num_observations):
        raise ValueError(
            "Each of `num_observations` must be in [2, span]. Received: "
            f"num_observations={num_observations}, span={span}"
        )
    x = tf.constant(spirals.x)
    t = tf.constant(spirals.t)
    choices = tf.constant(num_observations, tf.int32)

    def make_batch(step):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), step]), 4
        )
        which = tf.math.top_k(
            tf.random.stateless_uniform([num_spirals], seeds[0]), batch_size
        ).indices  # [B] distinct spirals
        start = tf.random.stateless_uniform(
            [batch_size], seeds[1], 0, max_start + 1, tf.int32
        )
        n = choices[
            tf.random.stateless_uniform(
                [], seeds[2], 0, len(num_observations), tf.int32
            )
        ]
        keep = tf.math.top_k(
            tf.random.stateless_uniform([batch_size, span], seeds[3]), n
        ).indices
        index = start[:, None] + tf.sort(keep, axis=-1)  # [B, n], increasing per row
        xs = tf.gather(tf.gather(x, which), index, batch_dims=1)  # [B, n, D]
        return {"x": xs, "t": tf.gather(t, index)}

    return (
        tf.data.Dataset.counter()
        .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def extrapolation_split(
    spirals: Spirals,
    *,
    num_observations: int,
    num_seed: int = 100,
    seed: int = 0,
) -> Extrapolation:
    """Observe `num_observations` random points of the first `num_seed`;
    predict the noiseless trajectory at every later time.

    This is the evaluation of the paper's Table 2: `n` of 100 points observed
    (`n` in 30, 50, 100), RMSE on the 100 points beyond them.

    Args:
        spirals: A `Spirals` with more than `num_seed` times.
        num_observations: Points observed per spiral, in `[1, num_seed]`.
        num_seed: Length of the observed part. Defaults to `100`.
        seed: Integer seed of the random subsets. Defaults to `0`.

    Returns:
        An `Extrapolation` (numpy float32 arrays).

    Example:

    >>> split = extrapolation_split(linear_spirals(8), num_observations=30)
    >>> split.x_seed.shape, split.t_future.shape, split.x_future.shape
    ((8, 30, 2), (8, 100), (8, 100, 2))
    """
    num_spirals, num_times = spirals.x.shape[:2]
    if not (1 <= num_observations <= num_seed < num_times):
        raise ValueError(
            f"Need 1 <= num_observations <= num_seed < T={num_times}. Received: "
            f"num_observations={num_observations}, num_seed={num_seed}"
        )
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.argsort(rng.random((num_spirals, num_seed)), axis=1)[:, :num_observations],
        axis=1,
    )  # [N, n]
    rows = np.arange(num_spirals)[:, None]
    t_future = np.broadcast_to(
        spirals.t[num_seed:], (num_spirals, num_times - num_seed)
    )
    return Extrapolation(
        x_seed=spirals.x[rows, keep],
        t_seed=spirals.t[keep],
        t_future=np.ascontiguousarray(t_future),
        x_future=spirals.x_true[:, num_seed:],
    )


def _check_positive(**values):
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. Received: {name}={value}"
            )
