"""Forward-solve speed of `tfnode.odeint(method="dopri5")` against
`tfp.math.ode.DormandPrince`, and against the floor set by the cost of the
function evaluations themselves.

Problem (issue 2, "Performance"): `dz/dt = MLP(z)` with two tanh hidden layers
of 64 units, state 16, batch 256, float32, fixed seeded weights, outputs at 11
times in [0, 1], dopri5 at rtol = atol = 1e-6 and 1e-3.

Everything runs in one process on the same weights, in two modes: plain
`tf.function` graphs ("graph") and `tf.function(jit_compile=True)` ("xla").

- "floor": as many bare MLP evaluations as tfnode used (its NFE), chained in a
  `tf.while_loop` in the same mode, one per iteration. No solver can be faster
  than its own evaluations: `tfnode/floor` is the solver's overhead.
- "err": max absolute error over all outputs against a float64 reference,
  `scipy.integrate.solve_ivp(method="DOP853", rtol=atol=1e-12)` on the same
  weights.

After a warm-up (which also compiles), each timed round runs, for every
(mode, tol), tfnode, TFP and the floor back to back, in an order that rotates
from round to round. Times are medians over the rounds; ratios are medians of
the per-round ratios, so that slow drifts in machine load cancel. Compare the
ratios, not the absolute times.

Run: `python benchmarks/solver_forward.py` (under a minute on 2 CPU cores).
On a busy machine, `--threads 1 --clock cpu` measures CPU time of one thread
instead, which other processes disturb much less (but which hides the cost
of synchronising TensorFlow's threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfnode

STATE, HIDDEN, BATCH, NUM_TIMES = 16, 64, 256, 11
# Targets from issue 2: tfnode at most 0.7x TFP's time,
# at most 1.3x its bare evaluations'.
TARGET_VS_TFP = 0.7
TARGET_VS_FLOOR = 1.3
MODES = {"xla": True, "graph": False}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# Evaluations per iteration of the floor's loop. One gave the lower floor under XLA
# (more per iteration was slightly slower, and much slower when other processes compete
# for the cores); in graph mode six (one dopri5 step) would be about 10% lower, as the
# executor then runs fewer loop-control ops per evaluation.
FLOOR_UNROLL = 1


def make_problem(seed=0):
    """Seeded float32 MLP weights `[(W, b), ...]`, initial states `[B, 16]` and
    times `[T]`."""
    rng = np.random.default_rng(seed)
    sizes = [STATE, HIDDEN, HIDDEN, STATE]
    weights = [
        (
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            (0.1 * rng.standard_normal(n_out)).astype(np.float32),
        )
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]
    y0 = rng.standard_normal((BATCH, STATE)).astype(np.float32)
    times = np.linspace(0.0, 1.0, NUM_TIMES, dtype=np.float32)
    return weights, y0, times


def make_mlp(weights):
    """`f(t, z) = tanh(tanh(z W1 + b1) W2 + b2) W3 + b3` on `tf.Variable` weights."""
    params = [(tf.Variable(w), tf.Variable(b)) for w, b in weights]

    def f(t, z):
        del t  # autonomous
        for i, (w, b) in enumerate(params):
            z = tf.matmul(z, w) + b
            if i < len(params) - 1:
                z = tf.tanh(z)
        return z

    return f


def reference_solution(weights, y0, times):
    """Float64 solution `[T, B, 16]` by scipy's DOP853 at rtol = atol = 1e-12."""
    from scipy.integrate import solve_ivp

    weights64 = [(w.astype(np.float64), b.astype(np.float64)) for w, b in weights]

    def rhs(_, flat):
        z = flat.reshape(BATCH, STATE)
        for i, (w, b) in enumerate(weights64):
            z = z @ w + b
            if i < len(weights64) - 1:
                z = np.tanh(z)
        return z.ravel()

    sol = solve_ivp(
        rhs,
        (float(times[0]), float(times[-1])),
        y0.astype(np.float64).ravel(),
        method="DOP853",
        t_eval=times.astype(np.float64),
        rtol=1e-12,
        atol=1e-12,
    )
    if not sol.success:
        raise RuntimeError(f"The scipy reference solve failed: {sol.message}")
    return sol.y.T.reshape(len(times), BATCH, STATE)


def make_solvers(f, times, tol, jit_compile):
    """Returns `{"tfnode": fn, "tfp": fn}`, each `fn(y0) -> (ys [T, B, 16], nfe)`."""
    t = tf.constant(times)

    @tf.function(jit_compile=jit_compile)
    def tfnode_solve(y0):
        ys, stats = tfnode.odeint(
            f, y0, t, method="dopri5", rtol=tol, atol=tol, return_stats=True
        )
        return ys, stats.nfe

    solver = tfp.math.ode.DormandPrince(rtol=tol, atol=tol)

    @tf.function(jit_compile=jit_compile)
    def tfp_solve(y0):
        results = solver.solve(f, t[0], y0, solution_times=t)
        return results.states, results.diagnostics.num_ode_fn_evaluations

    return {"tfnode": tfnode_solve, "tfp": tfp_solve}


def make_floor(f, jit_compile, unroll=FLOOR_UNROLL):
    """Returns `fn(y0, n)`: `n` chained evaluations of `f`,
    `unroll` per loop iteration."""
    if unroll < 1:
        raise ValueError(f"`unroll` must be a positive integer. Received: {unroll=}")

    @tf.function(jit_compile=jit_compile)
    def floor(y0, n):
        zero = tf.zeros([], y0.dtype)

        def evaluations(count):
            def body(i, z):
                for _ in range(count):
                    z = f(zero, z)
                return i + 1, z

            return body

        _, z = tf.while_loop(lambda i, z: i < n // unroll, evaluations(unroll), (0, y0))
        if unroll > 1:
            _, z = tf.while_loop(lambda i, z: i < n % unroll, evaluations(1), (0, z))
        return z

    return floor


def interleaved_times(fns, configs, names, repeats, timed):
    """`{(*config, name): [ms, ...]}`: `repeats` rounds, each running every
    config's functions back to back in a rotating order, so that slow drifts in
    machine load fall on all of them alike (compare per-round ratios).
    `fns[(*config, name)]` is `(fn, args)`; `timed(fn, *args)` returns ms."""
    times_ms = {(*config, name): [] for config in configs for name in names}
    for r in range(repeats):
        for c, config in enumerate(configs):
            shift = (r + c) % len(names)
            for name in names[shift:] + names[:shift]:
                fn, args = fns[(*config, name)]
                times_ms[(*config, name)].append(timed(fn, *args))
    return times_ms


def _timed(clock, fn, *args):
    start = clock()
    out = fn(*args)
    np.asarray(tf.nest.flatten(out)[0])  # the result exists
    return (clock() - start) * 1e3


def _format_table(rows):
    def star(ratio, target):
        return f"{ratio:.3f}" + ("" if ratio <= target else "*")

    header = [
        "mode",
        "tol",
        "tfnode ms",
        "tfp ms",
        f"tfnode/tfp (<={TARGET_VS_TFP})",
        "floor ms",
        f"tfnode/floor (<={TARGET_VS_FLOOR})",
        "tfnode NFE",
        "tfp NFE",
        "tfnode err",
        "tfp err",
    ]
    lines = [
        [
            r["mode"],
            f"{r['tol']:.0e}",
            f"{r['tfnode_ms']:.2f}",
            f"{r['tfp_ms']:.2f}",
            star(r["ratio_tfnode_tfp"], TARGET_VS_TFP),
            f"{r['floor_ms']:.2f}",
            star(r["ratio_tfnode_floor"], TARGET_VS_FLOOR),
            str(r["tfnode_nfe"]),
            str(r["tfp_nfe"]),
            f"{r['tfnode_err']:.1e}",
            f"{r['tfp_err']:.1e}",
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = " | ".join(f"{{:>{w}}}" for w in widths)
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join(
        [fmt.format(*header), rule] + [fmt.format(*line) for line in lines]
    )


def _set_threads(threads):
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:
        raise ValueError(
            "`threads` must be set before TensorFlow starts its runtime: call "
            "`main(threads=...)` first thing in a fresh process, or leave "
            f"threads=None. Received: {threads=}"
        ) from e


def main(
    *,
    repeats=100,
    warmup=3,
    tols=(1e-6, 1e-3),
    modes=("xla", "graph"),
    seed=0,
    clock="wall",
    threads=None,
    verbose=True,
):
    """Runs the benchmark; prints the table and returns its rows (a list of dicts).

    Args:
        repeats: timed rounds; each runs every function once.
        warmup: untimed calls of each function first (the first traces and compiles).
        tols: dopri5 tolerances, each used as both rtol and atol.
        modes: any of "xla" (`jit_compile=True`) and "graph" (plain `tf.function`).
        seed: seed of the MLP weights and initial states.
        clock: "wall" (elapsed time) or "cpu" (process CPU time; use with `threads=1`).
        threads: TensorFlow intra- and inter-op threads; None keeps TensorFlow's
            default.
        verbose: whether to print progress and the table.

    Returns:
        One dict per (mode, tol): `mode, tol, tfnode_ms, tfp_ms, ratio_tfnode_tfp,
        floor_ms, ratio_tfnode_floor, tfnode_nfe, tfp_nfe, tfnode_err, tfp_err`.
    """
    if repeats < 1 or warmup < 1:
        raise ValueError(
            f"Need repeats >= 1 and warmup >= 1. Received: {repeats=}, {warmup=}"
        )
    unknown = [m for m in modes if m not in MODES]
    if unknown or clock not in CLOCKS:
        raise ValueError(
            f"`modes` must be among {list(MODES)} and `clock` one of {list(CLOCKS)}. "
            f"Received: {modes=}, {clock=}"
        )
    if threads is not None:
        _set_threads(threads)
    weights, y0_np, times = make_problem(seed)
    f = make_mlp(weights)
    y0 = tf.constant(y0_np)
    reference = reference_solution(weights, y0_np, times)

    # Trace, compile and warm up everything; record NFE and errors.
    configs = [(mode, tol) for mode in modes for tol in tols]
    fns, nfe, err = {}, {}, {}
    for mode, tol in configs:
        for name, fn in make_solvers(f, times, tol, MODES[mode]).items():
            for _ in range(warmup):
                ys, count = fn(y0)
            fns[mode, tol, name] = (fn, (y0,))
            nfe[mode, tol, name] = int(count)
            err[mode, tol, name] = float(np.max(np.abs(ys.numpy() - reference)))
        floor = make_floor(f, MODES[mode])
        n = tf.constant(nfe[mode, tol, "tfnode"])
        for _ in range(warmup):
            floor(y0, n)
        fns[mode, tol, "floor"] = (floor, (y0, n))
        if verbose:
            print(f"compiled and warmed up: {mode}, tol={tol:.0e}", flush=True)

    # Timed rounds: per (mode, tol), the three functions back to back,
    # rotating the order.
    names = ("tfnode", "tfp", "floor")
    times_ms = interleaved_times(
        fns, configs, names, repeats, lambda fn, *args: _timed(CLOCKS[clock], fn, *args)
    )

    def paired(a, b):
        return statistics.median(x / y for x, y in zip(a, b))

    rows = []
    for mode, tol in configs:
        ms = {name: times_ms[mode, tol, name] for name in names}
        rows.append(
            dict(
                mode=mode,
                tol=tol,
                tfnode_ms=statistics.median(ms["tfnode"]),
                tfp_ms=statistics.median(ms["tfp"]),
                ratio_tfnode_tfp=paired(ms["tfnode"], ms["tfp"]),
                floor_ms=statistics.median(ms["floor"]),
                ratio_tfnode_floor=paired(ms["tfnode"], ms["floor"]),
                tfnode_nfe=nfe[mode, tol, "tfnode"],
                tfp_nfe=nfe[mode, tol, "tfp"],
                tfnode_err=err[mode, tol, "tfnode"],
                tfp_err=err[mode, tol, "tfp"],
            )
        )
    if verbose:
        print(
            f"\ndopri5 forward solve, MLP {STATE}-{HIDDEN}-{HIDDEN}-{STATE} (tanh), "
            f"batch {BATCH}, float32, {NUM_TIMES} outputs in [0, 1]; {clock} clock, "
            f"threads={threads or 'default'}. Times: medians of {repeats} interleaved "
            "rounds; ratios: medians of per-round ratios; floor: tfnode's NFE bare MLP "
            "evaluations; * = target missed."
        )
        print(_format_table(rows))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("--repeats", type=int, default=100, help="timed rounds")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed calls per function"
    )
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-6, 1e-3])
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=["xla", "graph"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="TensorFlow intra- and inter-op threads (default: TensorFlow's)",
    )
    args = parser.parse_args()
    main(
        repeats=args.repeats,
        warmup=args.warmup,
        tols=tuple(args.tols),
        modes=tuple(args.modes),
        seed=args.seed,
        clock=args.clock,
        threads=args.threads,
    )
