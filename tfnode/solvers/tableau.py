"""`ButcherTableau`: a Runge–Kutta method as validated data."""

from __future__ import annotations

import dataclasses

# Coefficients are exact fractions or published decimals; sums may differ from
# the exact value by a few ulps (Tsit5 is published to ~16 digits).
_SUM_TOL = 1e-12


@dataclasses.dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method in Hairer–Wanner notation.

    `c[i]` is the node of stage `i` (`c[0] == 0`), `a[i]` the row of stage `i`
    (it has `i` entries, so `a[0] == ()`), `b` the solution weights and `b_err`
    the embedded error weights, **defined as `b - b_hat`**, so that the local
    error estimate of a step is `dt * sum_j b_err[j] * k[j]`.

    `b_mid`, if given, are weights for the solution at the middle of the step
    (`y(t + dt/2) ~ y + dt * sum_j b_mid[j] * k[j]`); dense output is then a
    quartic polynomial, otherwise a cubic Hermite one.

    Derived fields: `num_stages`, `fsal` (the last stage is evaluated at the
    step's solution, so it is the next step's first stage) and `adaptive`.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    b_mid: tuple[float, ...] | None = None
    num_stages: int = dataclasses.field(init=False)
    fsal: bool = dataclasses.field(init=False)
    adaptive: bool = dataclasses.field(init=False)

    def __post_init__(self):
        s = len(self.c)

        def require(ok, what):
            if not ok:
                raise ValueError(f"Butcher tableau {self.name!r}: {what}.")

        require(s > 0 and self.c[0] == 0, f"c[0] must be 0 (received c={self.c})")
        require(
            len(self.a) == s, f"a needs one row per stage ({s}), received {len(self.a)}"
        )
        for i, row in enumerate(self.a):
            require(len(row) == i, f"a[{i}] must have {i} entries, received {len(row)}")
            require(
                abs(sum(row) - self.c[i]) < _SUM_TOL,
                f"sum(a[{i}]) = {sum(row)!r} must equal c[{i}] = {self.c[i]!r}",
            )
        require(len(self.b) == s, f"b needs {s} entries, received {len(self.b)}")
        require(abs(sum(self.b) - 1) < _SUM_TOL, f"sum(b) = {sum(self.b)!r} must be 1")
        if self.b_err is not None:
            require(
                len(self.b_err) == s,
                f"b_err needs {s} entries, received {len(self.b_err)}",
            )
            require(
                abs(sum(self.b_err)) < _SUM_TOL,
                f"sum(b_err) = {sum(self.b_err)!r} must be 0 (b_err = b - b_hat)",
            )
            require(
                self.error_order is not None, "an adaptive tableau needs error_order"
            )
        if self.b_mid is not None:
            require(
                len(self.b_mid) == s,
                f"b_mid needs {s} entries, received {len(self.b_mid)}",
            )
            require(
                abs(sum(self.b_mid) - 0.5) < _SUM_TOL,
                f"sum(b_mid) = {sum(self.b_mid)!r} must be 1/2",
            )
        fsal = (
            s > 1 and self.c[-1] == 1 and self.b[-1] == 0 and self.a[-1] == self.b[:-1]
        )
        object.__setattr__(self, "num_stages", s)
        object.__setattr__(self, "fsal", fsal)
        object.__setattr__(self, "adaptive", self.b_err is not None)
