"""Butcher tableaux of the shipped methods: pure data, one citation each."""

from tfnode.solvers.tableau import ButcherTableau

# Forward Euler.
EULER = ButcherTableau(name="euler", c=(0.0,), a=((),), b=(1.0,), order=1)

# Explicit midpoint rule (Runge 1895).
MIDPOINT = ButcherTableau(
    name="midpoint", c=(0.0, 1 / 2), a=((), (1 / 2,)), b=(0.0, 1.0), order=2
)

# The classical fourth-order Runge–Kutta method (Kutta 1901).
RK4 = ButcherTableau(
    name="rk4",
    c=(0.0, 1 / 2, 1 / 2, 1.0),
    a=((), (1 / 2,), (0.0, 1 / 2), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

# Bogacki & Shampine (1989), "A 3(2) pair of Runge–Kutta formulas".
BOSH3 = ButcherTableau(
    name="bosh3",
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((), (1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_err=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    order=3,
    error_order=2,
)

# Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae"; the
# mid-step weights `b_mid` for dense output are Shampine's (1986), "Some
# practical Runge–Kutta formulas", as used by MATLAB's ode45.
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_B_HAT = (
    5179 / 57600,
    0.0,
    7571 / 16695,
    393 / 640,
    -92097 / 339200,
    187 / 2100,
    1 / 40,
)
DOPRI5 = ButcherTableau(
    name="dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:-1],
    ),
    b=_DOPRI5_B,
    b_err=tuple(b - bh for b, bh in zip(_DOPRI5_B, _DOPRI5_B_HAT)),
    order=5,
    error_order=4,
    b_mid=(
        6025192743 / 30085553152 / 2,
        0.0,
        51252292925 / 65400821598 / 2,
        -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2,
        -1776094331 / 19743644256 / 2,
        11237099 / 235043384 / 2,
    ),
)

# Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first
# column simplifying assumption", Table 1; decimals at the published precision.
# `b_mid` is ours: the minimum-norm weights that meet the order-4 conditions at
# theta = 1/2 (the system has rank 6 in 7 unknowns; see tests/solvers/test_tableaux.py).
_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
TSIT5 = ButcherTableau(
    name="tsit5",
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (
            5.325864828439257,
            -11.748883564062828,
            7.4955393428898365,
            -0.09249506636175525,
        ),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ),
        _TSIT5_B[:-1],
    ),
    b=_TSIT5_B,
    b_err=(
        -0.00178001105222577714,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.45808210592918697,
        1 / 66,
    ),
    order=5,
    error_order=4,
    b_mid=(
        0.1114257489207326,
        0.01319706739074,
        0.37783998967297566,
        -0.01847177222954323,
        0.00314279907046227,
        0.01577833690799764,
        -0.00291216973336474,
    ),
)
