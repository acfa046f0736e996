"""Butcher tableaux: consistency and order conditions, in pure numpy.

The order conditions are generated from rooted trees (Butcher 1963; Hairer,
Nørsett & Wanner, "Solving ODEs I", §II.2): a method has order `p` iff
`b · Φ(τ) = 1 / γ(τ)` for every rooted tree `τ` with at most `p` vertices,
where `Φ` is the vector of elementary weights and `γ` the tree's density.
"""

import functools
import itertools
import math

import numpy as np
import pytest
from helpers import HEUN_EULER

from tfnode.solvers import SOLVERS, ButcherTableau

# Coefficients are exact fractions evaluated in float64, or (Tsit5) decimals
# published to ~16 digits: residuals of a few hundred ulps are round-off, anything
# larger is a wrong digit.
ORDER_ATOL = 1e-12
# The number of rooted trees with 1, 2, ..., 5 vertices (OEIS A000081).
NUM_TREES = (1, 1, 2, 4, 9)
# Dense output: `b_mid` is the solution weights at theta = 1/2, required to order 4.
MID_THETA, MID_ORDER = 0.5, 4

TABLEAUX = sorted(SOLVERS.values(), key=lambda tableau: tableau.name)
ADAPTIVE = [tableau for tableau in TABLEAUX if tableau.adaptive]
WITH_MID = [tableau for tableau in TABLEAUX if tableau.b_mid is not None]


def _ids(tableaux):
    return [tableau.name for tableau in tableaux]


@functools.cache
def trees(order):
    """Rooted trees with `order` vertices, each a sorted tuple of its subtrees."""
    if order == 1:
        return ((),)
    found = set()
    # A tree is a root whose subtrees' orders add up to `order - 1`.
    for parts in _partitions(order - 1):
        for children in itertools.product(*(trees(k) for k in parts)):
            found.add(tuple(sorted(children)))
    return tuple(sorted(found))


def _partitions(n, largest=None):
    largest = n if largest is None else largest
    if n == 0:
        yield ()
        return
    for k in range(min(n, largest), 0, -1):
        for rest in _partitions(n - k, k):
            yield (k, *rest)


def tree_order(tree):
    return 1 + sum(tree_order(child) for child in tree)


def density(tree):
    """γ(τ) = |τ| · Π γ(child)."""
    return tree_order(tree) * math.prod(density(child) for child in tree)


def elementary_weights(tree, a):
    """Φ(τ) per stage: Π over the children of `A Φ(child)` (ones for a leaf)."""
    phi = np.ones(a.shape[0])
    for child in tree:
        phi = phi * (a @ elementary_weights(child, a))
    return phi


def matrix(tableau):
    s = tableau.num_stages
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a):
        a[i, : len(row)] = row
    return a


def residuals(weights, tableau, max_order, theta=1.0):
    """`{tree: b · Φ(τ) - θ^|τ| / γ(τ)}` for every tree up to `max_order`."""
    a = matrix(tableau)
    b = np.asarray(weights)
    return {
        tree: b @ elementary_weights(tree, a)
        - theta ** tree_order(tree) / density(tree)
        for order in range(1, max_order + 1)
        for tree in trees(order)
    }


def assert_conditions(weights, tableau, max_order, theta=1.0):
    res = residuals(weights, tableau, max_order, theta)
    bad = {tree: r for tree, r in res.items() if not abs(r) < ORDER_ATOL}
    assert not bad, f"{tableau.name}: order conditions violated (tree: residual): {bad}"


def test_tree_counts():
    """The tree generator yields the known number of trees per order,
    17 up to order 5."""
    assert tuple(len(trees(order)) for order in range(1, 6)) == NUM_TREES
    assert sum(NUM_TREES) == 17


def test_familiar_conditions_are_generated():
    """The generated conditions include the textbook ones.

    b·1=1, b·c=1/2, b·c²=1/3, b·Ac=1/6."""
    bushy_3, tall_3 = sorted(trees(3), key=lambda tree: len(tree), reverse=True)
    assert density(()) == 1 and density(((),)) == 2
    assert density(bushy_3) == 3 and density(tall_3) == 6


@pytest.mark.parametrize("tableau", TABLEAUX, ids=_ids(TABLEAUX))
def test_consistency(tableau):
    """Shapes fit, `sum(a[i]) == c[i]`, `sum(b) == 1` and `sum(b_err) == 0`."""
    s = tableau.num_stages
    assert len(tableau.c) == len(tableau.a) == len(tableau.b) == s
    assert tableau.c[0] == 0
    for i, row in enumerate(tableau.a):
        assert len(row) == i
        assert abs(sum(row) - tableau.c[i]) < ORDER_ATOL, f"row {i}"
    assert abs(sum(tableau.b) - 1) < ORDER_ATOL
    if tableau.adaptive:
        assert len(tableau.b_err) == s
        assert abs(sum(tableau.b_err)) < ORDER_ATOL


@pytest.mark.parametrize("tableau", TABLEAUX, ids=_ids(TABLEAUX))
def test_order_conditions(tableau):
    """`b` satisfies every rooted-tree condition up to `tableau.order`."""
    assert_conditions(tableau.b, tableau, tableau.order)


@pytest.mark.parametrize("tableau", TABLEAUX, ids=_ids(TABLEAUX))
def test_order_is_sharp(tableau):
    """`b` fails some condition of order `tableau.order + 1`,
    so `order` is not understated."""
    res = residuals(tableau.b, tableau, tableau.order + 1)
    worst = max(
        abs(r) for tree, r in res.items() if tree_order(tree) == tableau.order + 1
    )
    assert worst > 1e3 * ORDER_ATOL


@pytest.mark.parametrize("tableau", ADAPTIVE, ids=_ids(ADAPTIVE))
def test_embedded_order_conditions(tableau):
    """The embedded weights `b - b_err` satisfy the conditions up to `error_order`."""
    assert tableau.error_order < tableau.order
    b_hat = np.asarray(tableau.b) - np.asarray(tableau.b_err)
    assert_conditions(b_hat, tableau, tableau.error_order)


@pytest.mark.parametrize("tableau", ADAPTIVE, ids=_ids(ADAPTIVE))
def test_error_estimate_is_not_trivial(tableau):
    """`b_err` is nonzero at order `error_order + 1`:
    the estimate sees the leading error."""
    b_hat = np.asarray(tableau.b) - np.asarray(tableau.b_err)
    res = residuals(b_hat, tableau, tableau.error_order + 1)
    worst = max(
        abs(r) for tree, r in res.items() if tree_order(tree) == tableau.error_order + 1
    )
    assert worst > 1e3 * ORDER_ATOL


@pytest.mark.parametrize("tableau", ADAPTIVE, ids=_ids(ADAPTIVE))
def test_fsal(tableau):
    """Every shipped adaptive method is FSAL: its last stage is the step's solution."""
    assert tableau.fsal
    assert tableau.c[-1] == 1 and tableau.b[-1] == 0
    assert tuple(tableau.a[-1]) == tuple(tableau.b[:-1])


@pytest.mark.parametrize("tableau", WITH_MID, ids=_ids(WITH_MID))
def test_mid_step_weights(tableau):
    """`b_mid` gives the solution at theta = 1/2 to order 4: the 8 conditions
    `b_mid · Φ(τ) = θ^|τ| / γ(τ)`, i.e. sum = 1/2, ·c = 1/8, ·c² = 1/24, ·Ac = 1/48, ...
    """
    assert len(tableau.b_mid) == tableau.num_stages
    assert_conditions(tableau.b_mid, tableau, MID_ORDER, theta=MID_THETA)
    c = np.asarray(tableau.c)
    a = matrix(tableau)
    b_mid = np.asarray(tableau.b_mid)
    spelled_out = {
        "sum": (b_mid.sum(), 1 / 2),
        "b.c": (b_mid @ c, 1 / 8),
        "b.c^2": (b_mid @ c**2, 1 / 24),
        "b.Ac": (b_mid @ a @ c, 1 / 48),
        "b.c^3": (b_mid @ c**3, 1 / 64),
        "b.(c*Ac)": (b_mid @ (c * (a @ c)), 1 / 128),
        "b.Ac^2": (b_mid @ a @ c**2, 1 / 192),
        "b.AAc": (b_mid @ a @ a @ c, 1 / 384),
    }
    bad = {k: v for k, v in spelled_out.items() if not abs(v[0] - v[1]) < ORDER_ATOL}
    assert not bad, f"{tableau.name}: (value, wanted): {bad}"


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(c=(0.5, 1.0)), r"c\[0\] must be 0"),
        (dict(a=((),)), r"a needs one row per stage \(2\), received 1"),
        (dict(a=((), ())), r"a\[1\] must have 1 entries, received 0"),
        (dict(a=((), (0.5,))), r"sum\(a\[1\]\) = 0\.5 must equal c\[1\] = 1\.0"),
        (dict(b=(1.0,)), r"b needs 2 entries, received 1"),
        (dict(b=(0.5, 0.25)), r"sum\(b\) = 0\.75 must be 1"),
        (dict(b_err=(0.0,)), r"b_err needs 2 entries, received 1"),
        (
            dict(b_err=(0.1, 0.1)),
            r"sum\(b_err\) = 0\.2 must be 0 \(b_err = b - b_hat\)",
        ),
        (dict(error_order=None), r"an adaptive tableau needs error_order"),
        (dict(b_mid=(0.5,)), r"b_mid needs 2 entries, received 1"),
        (dict(b_mid=(0.5, 0.5)), r"sum\(b_mid\) = 1\.0 must be 1/2"),
    ],
    ids=[
        "c0",
        "rows",
        "row-length",
        "row-sum",
        "b-length",
        "b-sum",
        "b_err-length",
        "b_err-sum",
        "error_order",
        "b_mid-length",
        "b_mid-sum",
    ],
)
def test_malformed_tableau_raises_value_error(change, message):
    """A tableau is checked when it is made:
    a `ValueError` names it and the broken rule."""
    ButcherTableau(**HEUN_EULER)  # the unchanged tableau is valid
    with pytest.raises(ValueError, match=r"Butcher tableau 'heun_euler': " + message):
        ButcherTableau(**{**HEUN_EULER, **change})
