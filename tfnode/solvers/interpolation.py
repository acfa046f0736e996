"""Dense output: a polynomial in `theta = (t - t_n) / dt` over an accepted step.

Coefficients are returned lowest degree first, one list per state leaf, and
evaluated by Horner's rule with `evaluate`. `dt` is a number, a scalar tensor,
or `[B]` (per-sample steps, broadcast against each leaf's batch axis).
"""

from tfnode.solvers.time_map import broadcast_to_leaf


def _per_leaf(dt, leaf):
    rank = getattr(getattr(dt, "shape", None), "rank", 0)
    if not rank:
        return dt
    return broadcast_to_leaf(dt, leaf)


def hermite(y0, y1, f0, f1, dt):
    """Cubic Hermite interpolant through `y0, y1` with slopes `f0, f1`."""
    coeffs = []
    for a, b, fa, fb in zip(y0, y1, f0, f1):
        dt_ = _per_leaf(dt, a)
        delta = b - a
        coeffs.append(
            [a, dt_ * fa, 3 * delta - dt_ * (2 * fa + fb), -2 * delta + dt_ * (fa + fb)]
        )
    return coeffs


def quartic(y0, y1, y_mid, f0, f1, dt):
    """Quartic interpolant through `y0, y_mid, y1` with slopes `f0, f1` (the
    construction of Shampine 1986 for Dormand–Prince)."""
    coeffs = []
    for a, b, m, fa, fb in zip(y0, y1, y_mid, f0, f1):
        dt_ = _per_leaf(dt, a)
        d = dt_ * fa
        delta = b - a - d  # p(1) - p(0) - p'(0)
        gamma = dt_ * fb - d  # p'(1) - p'(0)
        mid = m - a - 0.5 * d  # p(1/2) - p(0) - p'(0) / 2
        coeffs.append(
            [
                a,
                d,
                -5 * delta + gamma + 16 * mid,
                14 * delta - 3 * gamma - 32 * mid,
                -8 * delta + 2 * gamma + 16 * mid,
            ]
        )
    return coeffs


def evaluate(coeffs, thetas):
    """Evaluates each leaf's polynomial at its `theta` (broadcastable to it)."""
    out = []
    for c, theta in zip(coeffs, thetas):
        value = c[-1]
        for coefficient in reversed(c[:-1]):
            value = coefficient + theta * value
        out.append(value)
    return out
