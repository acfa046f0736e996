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
        assert self.c[0] == 0, f"{self.name}: c[0] must be 0"
        assert len(self.a) == s, f"{self.name}: a needs one row per stage"
        for i, row in enumerate(self.a):
            assert len(row) == i, f"{self.name}: a[{i}] must have {i} entries"
            assert abs(sum(row) - self.c[i]) < _SUM_TOL, f"{self.name}: sum(a[{i}]) != c[{i}]"
        assert len(self.b) == s, f"{self.name}: b needs {s} entries"
        assert abs(sum(self.b) - 1) < _SUM_TOL, f"{self.name}: sum(b) != 1"
        if self.b_err is not None:
            assert len(self.b_err) == s, f"{self.name}: b_err needs {s} entries"
            assert abs(sum(self.b_err)) < _SUM_TOL, f"{self.name}: sum(b_err) != 0"
            assert self.error_order is not None, f"{self.name}: error_order missing"
        if self.b_mid is not None:
            assert len(self.b_mid) == s, f"{self.name}: b_mid needs {s} entries"
            assert abs(sum(self.b_mid) - 0.5) < _SUM_TOL, f"{self.name}: sum(b_mid) != 1/2"
        fsal = s > 1 and self.c[-1] == 1 and self.b[-1] == 0 and self.a[-1] == self.b[:-1]
        object.__setattr__(self, "num_stages", s)
        object.__setattr__(self, "fsal", fsal)
        object.__setattr__(self, "adaptive", self.b_err is not None)
