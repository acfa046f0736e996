"""ODE solvers: the method registry and its resolver."""

from tfnode.solvers.controller import PIController as PIController
from tfnode.solvers.tableau import ButcherTableau as ButcherTableau
from tfnode.solvers.tableaux import BOSH3, DOPRI5, EULER, MIDPOINT, RK4, TSIT5

SOLVERS: dict[str, ButcherTableau] = {
    tableau.name: tableau for tableau in (EULER, MIDPOINT, RK4, BOSH3, DOPRI5, TSIT5)
}
"""Every method by its `method=` name."""


def get(method: str | ButcherTableau) -> ButcherTableau:
    """Resolves a method name (or a `ButcherTableau`) to its tableau.

    Raises:
        ValueError: If `method` is not a known name.
    """
    if isinstance(method, ButcherTableau):
        return method
    if isinstance(method, str) and method in SOLVERS:
        return SOLVERS[method]
    raise ValueError(
        f"Unknown `method`: {method!r}. Valid methods are {sorted(SOLVERS)} "
        "(or a `tfnode.solvers.ButcherTableau`)."
    )


__all__ = ["SOLVERS", "ButcherTableau", "PIController", "get"]
