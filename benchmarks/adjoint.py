"""Adjoint gradients: `tfnode.odeint_adjoint` against TFP's adjoint, and memory against
backprop.

Problem (issue 3, "Benchmarks"; the same as `solver_forward.py`): `dz/dt = MLP(z)` with
two tanh hidden layers of 64 units, state 16, batch 256, float32, fixed seeded weights,
outputs at 11 times in [0, 1], dopri5 at rtol = atol = 1e-6 and 1e-3. The loss is
`sum(w * ys)` with fixed random weights `w` on every output, and every timed function
returns its gradient with respect to `y0` and all six weight tensors (a training step's
forward + backward).

Three tables:

- speed: forward + backward time of `tfnode.odeint_adjoint` (seminorm, the default) and
  of the gradient of `tfp.math.ode.DormandPrince().solve` (TFP's gradient is its
  adjoint), in `tf.function(jit_compile=True)` ("xla") and plain `tf.function`
  ("graph"), same weights, same process, interleaved rounds, medians. `rk-net` is
  `tfnode.odeint` differentiated by backprop (TensorFlow's own gradient of the
  solver's loop in graph mode; the checkpointed sweep under XLA, see
  `backprop.py`). torchdiffeq and diffrax columns appear only when those packages
  are importable.
- NFE and accuracy: forward and backward function evaluations (backward via
  `tfnode.BackwardStats`, with the seminorm and the full norm; TFP's backward ones
  counted by a counter inside the dynamics), and each gradient's error against a float64
  reference (`tfnode.odeint` backprop at rtol = atol = 1e-12 in float64 on the same
  weights), as max |g - g_ref| / max |g_ref| over the seven gradient tensors. Also with
  outputs at t0 and t1 only: every output time restarts the backward solve, so on 11
  outputs dopri5 needs at least 10 x 7 backward evaluations, and the seminorm shows on
  one long interval.
- memory: peak resident memory of one forward + backward as the horizon grows (t1 = 1,
  10, 100, outputs at t0 and t1 only), adjoint vs backprop (`tfnode.odeint`, default
  `max_num_steps`), each case in a fresh subprocess that first traces, compiles and runs
  the function on t1 = 0.01, then resets the kernel's high-water mark of resident memory
  and runs it once: "peak MB" is that high-water mark (the whole process, TensorFlow
  included), "above start MB" the part above the resident memory just before the call,
  "growth" the peak relative to the t1 = 1 case.

Run: `python benchmarks/adjoint.py` (a few minutes on 2 CPU cores; `--no-memory` skips
the subprocesses). Compare ratios, not absolute times: see `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfnode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import solver_forward  # noqa: E402  (the shared problem; benchmarks are scripts, not a package)

STATE, HIDDEN, BATCH, NUM_TIMES = 16, 64, 256, 11
# Targets from issue 3.
TARGET_VS_TFP = 0.6
TARGET_BWD_VS_FWD_NFE = 1.0
TARGET_ADJOINT_MEMORY_GROWTH = 0.10
MODES = {"xla": True, "graph": False}
REFERENCE_TOL = 1e-12


def make_problem(seed=0):
    """The problem of `solver_forward.py` (MLP weights, `y0 [B, 16]`, times `[11]`) plus
    seeded loss weights `[11, B, 16]`."""
    weights, y0, times = solver_forward.make_problem(seed)
    loss_weights = (
        np.random.default_rng(seed + 1)
        .standard_normal((NUM_TIMES, BATCH, STATE))
        .astype(np.float32)
    )
    return weights, y0, times, loss_weights


def make_mlp(weights, dtype=tf.float32, counter=None):
    """Returns `(f, variables)`: `f(t, z) = W3 tanh(W2 tanh(W1 z + b1) + b2) + b3` on
    `tf.Variable`s; with `counter` (an int variable), each evaluation adds 1 to it."""
    variables = [tf.Variable(tf.cast(a, dtype)) for pair in weights for a in pair]

    def f(t, z):
        del t  # autonomous
        if counter is not None:
            counter.assign_add(1)
        for i in range(3):
            z = tf.matmul(z, variables[2 * i]) + variables[2 * i + 1]
            if i < 2:
                z = tf.tanh(z)
        return z

    return f, variables


def make_gradient_fns(
    f, variables, times, loss_weights, tol, jit_compile, *, norm="seminorm", bstats=None
):
    """Returns `{name: fn(y0) -> (grads, forward_nfe)}`, `grads` for `[y0, *variables]`;
    "tfnode" uses `adjoint_norm=norm` and reports to `bstats`."""
    t = tf.constant(times)
    w = tf.constant(loss_weights)

    def gradient_fn(solve):
        @tf.function(jit_compile=jit_compile)
        def fn(y0):
            with tf.GradientTape() as tape:
                tape.watch(y0)
                ys, nfe = solve(y0)
                loss = tf.reduce_sum(w * ys)
            return tape.gradient(loss, [y0, *variables]), nfe

        return fn

    def adjoint(y0):
        ys, s = tfnode.odeint_adjoint(
            f,
            y0,
            t,
            params=variables,
            method="dopri5",
            rtol=tol,
            atol=tol,
            adjoint_norm=norm or "seminorm",
            backward_stats=bstats,
            return_stats=True,
        )
        return ys, s.nfe

    def tfp_solve(y0):
        results = tfp.math.ode.DormandPrince(rtol=tol, atol=tol).solve(
            f, t[0], y0, solution_times=t
        )
        return results.states, results.diagnostics.num_ode_fn_evaluations

    def rknet(y0):
        ys, s = tfnode.odeint(
            f,
            y0,
            t,
            method="dopri5",
            rtol=tol,
            atol=tol,
            return_stats=True,
        )
        return ys, s.nfe

    return {
        "tfnode": gradient_fn(adjoint),
        "tfp": gradient_fn(tfp_solve),
        "rk-net": gradient_fn(rknet),
    }


def reference_gradients(weights, y0, times, loss_weights):
    """float64 gradients for `[y0, *weights]` by backprop through
    `tfnode.odeint` at 1e-12."""
    f, variables = make_mlp(weights, tf.float64)
    t = tf.constant(times, tf.float64)
    w = tf.constant(loss_weights, tf.float64)

    @tf.function
    def grads(y0):
        with tf.GradientTape() as tape:
            tape.watch(y0)
            ys = tfnode.odeint(f, y0, t, rtol=REFERENCE_TOL, atol=REFERENCE_TOL)
            loss = tf.reduce_sum(w * ys)
        return tape.gradient(loss, [y0, *variables])

    return [g.numpy() for g in grads(tf.constant(y0, tf.float64))]


def gradient_error(grads, reference):
    """max over tensors of max |g - g_ref| / max |g_ref|."""
    return max(
        float(np.max(np.abs(np.asarray(g, np.float64) - r)) / np.max(np.abs(r)))
        for g, r in zip(grads, reference)
    )


def count_evaluations(weights, y0, times, loss_weights, tol, reference):
    """Graph mode, instrumented dynamics: NFE and gradient errors of each method."""
    counter = tf.Variable(0, trainable=False)
    f, variables = make_mlp(weights, counter=counter)
    out = {}
    for name, norm in (("seminorm", "seminorm"), ("full", "full"), ("tfp", None)):
        bstats = tfnode.BackwardStats()
        fns = make_gradient_fns(
            f, variables, times, loss_weights, tol, False, norm=norm, bstats=bstats
        )
        counter.assign(0)
        grads, forward_nfe = fns["tfnode" if norm else "tfp"](tf.constant(y0))
        backward = int(counter.numpy()) - int(forward_nfe)
        if norm is not None and backward != int(bstats.nfe):
            print(
                f"warning: BackwardStats.nfe={int(bstats.nfe)} but {backward} "
                f"evaluations were counted ({name}, tol={tol:.0e})"
            )
        out[name] = dict(
            fwd=int(forward_nfe),
            bwd=backward,
            err=gradient_error([g.numpy() for g in grads], reference),
        )
    return out


def _optional_columns():
    """Names of the optional frameworks that can be imported (none, as a rule)."""
    return [
        name for name in ("torchdiffeq", "diffrax") if importlib.util.find_spec(name)
    ]


def _torchdiffeq_fn(weights, y0, times, loss_weights, tol):
    import torch
    import torchdiffeq

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(
                torch.nn.Linear(w.shape[0], w.shape[1]) for w, _ in weights
            )
            with torch.no_grad():
                for layer, (w, b) in zip(self.layers, weights):
                    layer.weight.copy_(torch.from_numpy(w.T))
                    layer.bias.copy_(torch.from_numpy(b))

        def forward(self, t, z):
            for i, layer in enumerate(self.layers):
                z = layer(z)
                if i < len(self.layers) - 1:
                    z = torch.tanh(z)
            return z

    func = MLP()
    t = torch.from_numpy(times)
    w = torch.from_numpy(loss_weights)

    def fn():
        z0 = torch.from_numpy(y0).requires_grad_()
        ys = torchdiffeq.odeint_adjoint(
            func, z0, t, rtol=tol, atol=tol, method="dopri5"
        )
        (w * ys).sum().backward()
        return z0.grad

    return fn


def _diffrax_fn(weights, y0, times, loss_weights, tol):
    import diffrax
    import jax
    import jax.numpy as jnp

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]

    def f(t, z, params):
        for i, (w, b) in enumerate(params):
            z = z @ w + b
            if i < len(params) - 1:
                z = jnp.tanh(z)
        return z

    @jax.jit
    def grads(z0, params):
        def loss(z0, params):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(f),
                diffrax.Dopri5(),
                times[0],
                times[-1],
                None,
                z0,
                args=params,
                saveat=diffrax.SaveAt(ts=jnp.asarray(times)),
                stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
                adjoint=diffrax.BacksolveAdjoint(),
            )
            return jnp.sum(jnp.asarray(loss_weights) * sol.ys)

        return jax.grad(loss, argnums=(0, 1))(z0, params)

    z0 = jnp.asarray(y0)
    return lambda: jax.block_until_ready(grads(z0, params))


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    if isinstance(out, tuple) and out and isinstance(out[0], list):
        out = out[0]
    leaf = tf.nest.flatten(out)[0]
    np.asarray(leaf.detach() if hasattr(leaf, "detach") else leaf)  # the result exists
    return (time.perf_counter() - start) * 1e3


def _format(header, lines):
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = " | ".join(f"{{:>{w}}}" for w in widths)
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join(
        [fmt.format(*header), rule] + [fmt.format(*line) for line in lines]
    )


def _star(value, target, fmt="{:.2f}"):
    return fmt.format(value) + ("" if value <= target else "*")


def _status_kb(field):
    """A memory field of /proc/self/status (Linux), in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_case(mode, method, t1, tol, seed):
    """Runs in a fresh subprocess: resident memory (kB) around one forward + backward to
    `t1`, after a warm-up solve to t1 = 0.01 that traced and compiled the function.

    The peak is the kernel's high-water mark VmHWM, reset just before the call (writing
    5 to /proc/self/clear_refs), so the memory used while tracing and compiling does not
    hide it.
    """
    weights, y0, _, _ = make_problem(seed)
    f, variables = make_mlp(weights)

    @tf.function(jit_compile=MODES[mode])
    def fn(y0, t):
        with tf.GradientTape() as tape:
            tape.watch(y0)
            if method == "adjoint":
                ys, s = tfnode.odeint_adjoint(
                    f, y0, t, params=variables, rtol=tol, atol=tol, return_stats=True
                )
            else:
                ys, s = tfnode.odeint(f, y0, t, rtol=tol, atol=tol, return_stats=True)
            loss = tf.reduce_sum(ys[-1] ** 2)
        return tape.gradient(loss, [y0, *variables]), s.nfe

    y0 = tf.constant(y0)
    t = tf.constant([0.0, t1])
    grads, _ = fn(y0, tf.constant([0.0, 0.01]))
    np.asarray(grads[0])
    start = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    grads, nfe = fn(y0, t)
    np.asarray(grads[0])
    peak = _status_kb("VmHWM")
    return dict(
        mode=mode, method=method, t1=t1, nfe=int(nfe), start_kb=start, peak_kb=peak
    )


def _run_memory_case(mode, method, t1, tol, seed):
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location("
        f"'_adjoint_bench', {__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print('RESULT', json.dumps(mod._memory_case("
        f"{mode!r}, {method!r}, {t1!r}, {tol!r}, {seed!r})))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"memory case {mode}/{method}/t1={t1} failed:\n{proc.stderr[-3000:]}"
    )


def memory_table(*, modes, horizons, tol, seed, verbose):
    rows = []
    for mode in modes:
        for method in ("adjoint", "backprop"):
            base = None
            for t1 in horizons:
                r = _run_memory_case(mode, method, float(t1), tol, seed)
                base = base or r["peak_kb"]
                r["growth"] = r["peak_kb"] / base - 1
                rows.append(r)
                if verbose:
                    print(f"memory: {mode} {method} t1={t1:g} done", flush=True)
    return rows


def main(
    *,
    repeats=30,
    warmup=2,
    tols=(1e-6, 1e-3),
    modes=("xla", "graph"),
    horizons=(1.0, 10.0, 100.0),
    memory=True,
    seed=0,
    verbose=True,
):
    """Runs the benchmark; prints the tables and returns their rows.

    Args:
        repeats: timed rounds; each runs every configuration once.
        warmup: untimed calls of each function first (the first traces and compiles).
        tols: dopri5 tolerances, used as both rtol and atol.
        modes: any of "xla" (`jit_compile=True`) and "graph" (plain `tf.function`).
        horizons: final times t1 of the memory table (outputs at 0 and t1); the first is
            the baseline of "growth".
        memory: whether to run the memory table (one subprocess per case).
        seed: seed of the weights, initial states and loss weights.
        verbose: whether to print progress and the tables.

    Returns:
        `{"speed": [...], "nfe": [...], "memory": [...]}`, lists of dicts.
    """
    if repeats < 1 or warmup < 1:
        raise ValueError(
            f"Need repeats >= 1 and warmup >= 1. Received: {repeats=}, {warmup=}"
        )
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"Unknown mode(s) {unknown}; choose from {list(MODES)}.")
    weights, y0_np, times, loss_weights = make_problem(seed)
    f, variables = make_mlp(weights)
    y0 = tf.constant(y0_np)
    reference = reference_gradients(weights, y0_np, times, loss_weights)
    optional = _optional_columns()

    # Compile and warm up everything.
    fns = {}
    for mode in modes:
        for tol in tols:
            for name, fn in make_gradient_fns(
                f, variables, times, loss_weights, tol, MODES[mode]
            ).items():
                for _ in range(warmup):
                    fn(y0)
                fns[mode, tol, name] = (fn, (y0,))
            if verbose:
                print(f"compiled and warmed up: {mode}, tol={tol:.0e}", flush=True)
    for tol in tols:
        for name in optional:
            try:
                maker = _torchdiffeq_fn if name == "torchdiffeq" else _diffrax_fn
                fn = maker(weights, y0_np, times, loss_weights, tol)
                for _ in range(warmup):
                    fn()
                for mode in modes:  # one column, repeated in both modes' rows
                    fns[mode, tol, name] = (fn, ())
            except Exception as e:  # an optional column must not sink the benchmark
                print(f"{name}: skipped ({type(e).__name__}: {e})")
    names = (
        "tfnode",
        "tfp",
        "rk-net",
        *(n for n in optional if (modes[0], tols[0], n) in fns),
    )

    # Timed rounds, rotating the order; ratios within a round (paired) so that slow
    # drifts in machine load cancel.
    configs = [(mode, tol) for mode in modes for tol in tols]
    times_ms = solver_forward.interleaved_times(fns, configs, names, repeats, _timed)

    speed = []
    for mode, tol in configs:
        ms = {name: times_ms[mode, tol, name] for name in names}
        row = dict(mode=mode, tol=tol)
        for name in names:
            row[f"{name}_ms"] = statistics.median(ms[name])
        row["ratio_tfnode_tfp"] = statistics.median(
            a / b for a, b in zip(ms["tfnode"], ms["tfp"])
        )
        speed.append(row)

    # NFE on the full grid, and with outputs at t0 and t1 only: each output time
    # restarts the backward solve (the adjoint jumps there), so with 11 outputs dopri5
    # needs at least 10 x 7 backward evaluations whatever the forward NFE; the 2-output
    # rows show the seminorm's effect on one long interval.
    nfe = []
    for outputs, sel in ((NUM_TIMES, slice(None)), (2, [0, -1])):
        sub_times, sub_weights = times[sel], loss_weights[sel]
        sub_reference = (
            reference
            if outputs == NUM_TIMES
            else reference_gradients(weights, y0_np, sub_times, sub_weights)
        )
        for tol in tols:
            counts = count_evaluations(
                weights, y0_np, sub_times, sub_weights, tol, sub_reference
            )
            nfe.append(
                dict(
                    outputs=outputs,
                    tol=tol,
                    fwd=counts["seminorm"]["fwd"],
                    bwd_seminorm=counts["seminorm"]["bwd"],
                    bwd_full=counts["full"]["bwd"],
                    tfp_fwd=counts["tfp"]["fwd"],
                    tfp_bwd=counts["tfp"]["bwd"],
                    bwd_over_fwd=counts["seminorm"]["bwd"] / counts["seminorm"]["fwd"],
                    err_seminorm=counts["seminorm"]["err"],
                    err_full=counts["full"]["err"],
                    err_tfp=counts["tfp"]["err"],
                )
            )

    mem = (
        memory_table(
            modes=modes, horizons=horizons, tol=1e-6, seed=seed, verbose=verbose
        )
        if memory
        else []
    )

    if verbose:
        _print_tables(speed, nfe, mem, names, repeats, optional)
    return {"speed": speed, "nfe": nfe, "memory": mem}


def _print_tables(speed, nfe, mem, names, repeats, optional):
    print(
        f"\nForward + backward (gradient w.r.t. y0 and all weights), dopri5, MLP "
        f"{STATE}-{HIDDEN}-{HIDDEN}-{STATE} (tanh), batch {BATCH}, float32, "
        f"{NUM_TIMES} outputs in [0, 1]. Median of {repeats} interleaved rounds; "
        "tfnode/tfp: median of per-round ratios; * = target missed."
    )
    header = [
        "mode",
        "tol",
        *(f"{n} ms" for n in names),
        f"tfnode/tfp (<={TARGET_VS_TFP})",
    ]
    lines = [
        [
            r["mode"],
            f"{r['tol']:.0e}",
            *(f"{r[f'{n}_ms']:.1f}" for n in names),
            _star(r["ratio_tfnode_tfp"], TARGET_VS_TFP),
        ]
        for r in speed
    ]
    print(_format(header, lines))
    for name in ("torchdiffeq", "diffrax"):
        if name not in optional:
            print(f"({name} is not installed: no {name} column)")

    print(
        "\nFunction evaluations (graph mode; backward = evaluations during "
        "tape.gradient, from tfnode.BackwardStats, and counted inside the dynamics "
        f"for TFP) and gradient error vs float64 backprop at {REFERENCE_TOL:g} "
        "(max |g - g_ref| / max |g_ref|)."
    )
    header = [
        "outputs",
        "tol",
        "fwd NFE",
        "bwd NFE seminorm",
        "bwd NFE full",
        "tfp fwd NFE",
        "tfp bwd NFE",
        f"bwd/fwd seminorm (<={TARGET_BWD_VS_FWD_NFE:g})",
        "err seminorm",
        "err full",
        "err tfp",
    ]
    lines = [
        [
            str(r["outputs"]),
            f"{r['tol']:.0e}",
            str(r["fwd"]),
            str(r["bwd_seminorm"]),
            str(r["bwd_full"]),
            str(r["tfp_fwd"]),
            str(r["tfp_bwd"]),
            _star(r["bwd_over_fwd"], TARGET_BWD_VS_FWD_NFE),
            f"{r['err_seminorm']:.1e}",
            f"{r['err_full']:.1e}",
            f"{r['err_tfp']:.1e}",
        ]
        for r in nfe
    ]
    print(_format(header, lines))

    if mem:
        print(
            "\nPeak resident memory of one forward + backward, outputs at 0 and t1 "
            "only, rtol = atol = 1e-6, one fresh process per row (backprop: "
            "tfnode.odeint with the default max_num_steps=4096). growth: peak vs the "
            f"t1 = {mem[0]['t1']:g} row; target for the adjoint <= "
            f"{TARGET_ADJOINT_MEMORY_GROWTH:.0%}."
        )
        header = [
            "mode",
            "method",
            "t1",
            "fwd NFE",
            "peak MB",
            "above start MB",
            "growth",
        ]
        lines = [
            [
                r["mode"],
                r["method"],
                f"{r['t1']:g}",
                str(r["nfe"]),
                f"{r['peak_kb'] / 1e3:.0f}",
                f"{(r['peak_kb'] - r['start_kb']) / 1e3:.1f}",
                (
                    _star(r["growth"], TARGET_ADJOINT_MEMORY_GROWTH, "{:+.1%}")
                    if r["method"] == "adjoint"
                    else f"{r['growth']:+.1%}"
                ),
            ]
            for r in mem
        ]
        print(_format(header, lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-6, 1e-3])
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=["xla", "graph"]
    )
    parser.add_argument("--horizons", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(
        repeats=args.repeats,
        warmup=args.warmup,
        tols=tuple(args.tols),
        modes=tuple(args.modes),
        horizons=tuple(args.horizons),
        memory=args.memory,
        seed=args.seed,
    )
