"""One CNF training step: `tfnode.models.CNF` against TFP's `tfp.bijectors.FFJORD`
on the same dynamics layer.

Problem: FFJORD's toy density "8gaussians" (`tfnode.data.toy_density`), 2-D, float32.
The loss is the mean negative log-likelihood (NLL) of a batch of 512 points, and every
timed function returns it and its gradient with respect to the dynamics' weights (a
training step without the optimizer's update). The dynamics are the CNF's default,
`tfnode.layers.ConcatSquashODEFunc` with three hidden layers of 64: ONE layer object,
shared by both contenders:

- tfnode: `-mean(cnf.log_prob(x))` for `tfnode.models.CNF(2, dynamics, trace=...,
  noise="gaussian", rtol=tol, atol=tol)`, differentiated by tfnode's adjoint;
- TFP: `-mean(dist.log_prob(x))` for `dist = tfd.TransformedDistribution(N(0, I),
  tfb.FFJORD(lambda t, y: dynamics(t, y), ode_solve_fn=DormandPrince(rtol=tol,
  atol=tol).solve, trace_augmentation_fn=...))`, differentiated by TFP's adjoint;

with the same trace (`trace="exact"` against `tfb.ffjord.trace_jacobian_exact`,
`trace="hutchinson"` against `tfb.ffjord.trace_jacobian_hutchinson`; Gaussian noise
in both, one draw per solve) and the same solver and tolerance (dopri5, rtol = atol =
1e-5, FFJORD's and the CNF's default).

An untrained flow is near the identity, which dopri5 crosses in a few steps, so a
timing would then measure mostly overhead. The shared dynamics are therefore first
trained with tfnode (`--train-steps` Adam steps on fresh batches, exact trace), and
the step is timed on the trained flow.

Modes: plain `tf.function` ("graph") for both; and tfnode under
`tf.function(jit_compile=True)` ("xla") against TFP under XLA where it compiles,
else TFP in graph mode (the output says which, and why): TFP's exact trace
(`tfp.math.diag_jacobian`, a `TensorArray` of run-time size) does not compile
under XLA.

NFE: every call of the shared dynamics layer adds 1 to a counter variable (the same
op in both contenders' functions); the forward count is read inside the step right
after the loss, the backward count is the rest. Each evaluation of either augmented
system calls the layer once. (Checked while writing this script: the counts equal
tfnode's `stats.nfe` and `BackwardStats.nfe`, and TFP's forward count is its
`diagnostics.num_ode_fn_evaluations` + 1, as TFP leaves its initial evaluation out.)

Same model check: graph-mode forward solves of both on the timed batch give each
point's log-density; their mean NLLs must agree to `LOSS_TOLERANCE`. With Hutchinson's
estimator both then use the same fixed noise: tfnode through the CNF's augmented
dynamics (`cnf._augmented("hutchinson", False)`, the system `log_prob` solves), TFP
through `sample_fn`. Both are also compared with a reference: a float64 CNF on a copy
of the weights (and the same noise), solved by tfnode at rtol = atol = 1e-10. Both
control one error norm over the whole batch, so a single point can be off by far more
than the tolerance; how far differs (TFP's norm is the root mean of the fourth powers
of the scaled errors, which weighs the worst points more), and the table shows it.

Every function is traced with `autograph=False` (both libraries write their loops as
`tf.while_loop`s; tracing tfnode's step takes half as long, and no source file is
re-read mid-run). Timing as in the other benchmarks: every step is traced (and
compiled) and called `--warmup` times first; then `--repeats` rounds each run every
row's two steps back to back, in an order that rotates from round to round. Times are
medians, ratios medians of the per-round ratios (paired), NFE medians over the rounds.

Run: `python benchmarks/cnf.py` (6-10 minutes on 2 CPU cores, most of it tracing and
XLA compilation). Compare ratios, not absolute times: see `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfnode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adjoint as _adjoint  # noqa: E402  (table helpers)
import solver_forward  # noqa: E402  (interleaved rounds)

tfb, tfd = tfp.bijectors, tfp.distributions

DIM = 2
MODES = {"graph": False, "xla": True}
TFP_TRACES = {
    "exact": tfb.ffjord.trace_jacobian_exact,
    "hutchinson": tfb.ffjord.trace_jacobian_hutchinson,
}
# Both solve to rtol = atol = 1e-5 along different step sequences; on an NLL of a few
# nats, 1e-4 is a few tolerances: a larger gap would mean different models.
LOSS_TOLERANCE = 1e-4
# The reference log-densities: tfnode in float64 at this rtol = atol.
REFERENCE_TOL = 1e-10


class CountedConcatSquash(tfnode.layers.ConcatSquashODEFunc):
    """The CNF's default dynamics, adding 1 to `counter` at every call."""

    def __init__(self, counter, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "counter", counter)  # not one of the layer's weights

    def call(self, t, y):
        self.counter.assign_add(1)
        return super().call(t, y)


def make_models(*, hidden_units, tol, seed):
    """Returns `(counter, dynamics, {trace: cnf})`: one CNF per trace, all on the same
    (built) dynamics layer."""
    keras.utils.set_random_seed(seed)
    counter = tf.Variable(0, trainable=False, dtype=tf.int32)
    dynamics = CountedConcatSquash(counter, hidden_units=hidden_units, name="dynamics")
    cnfs = {}
    for trace in TFP_TRACES:
        cnfs[trace] = tfnode.models.CNF(
            DIM,
            dynamics,
            trace=trace,
            noise="gaussian",  # TFP's Hutchinson noise is tf.random.normal
            rtol=tol,
            atol=tol,
            seed=seed,
        )
        cnfs[trace].build()
        # One eager call builds the CNF's augmented dynamics (a Keras layer) here.
        # Built on its first trace instead, its building call of the dynamics would
        # stay in that graph, where the counter op would run (and count) every call.
        cnfs[trace].log_prob(tf.zeros([2, DIM]))
    return counter, dynamics, cnfs


def make_tfp_distribution(dynamics, trace, tol, sample_fn=None):
    """`N(0, I)` pushed through TFP's FFJORD on `dynamics` (base at t = 0, data at
    t = 1, as in the CNF)."""
    augmentation = TFP_TRACES[trace]
    if sample_fn is not None:
        augmentation = functools.partial(augmentation, sample_fn=sample_fn)
    ffjord = tfb.FFJORD(
        state_time_derivative_fn=lambda t, y: dynamics(t, y),
        ode_solve_fn=tfp.math.ode.DormandPrince(rtol=tol, atol=tol).solve,
        trace_augmentation_fn=augmentation,
    )
    return tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(DIM)), ffjord
    )


def make_step(log_prob, variables, counter, jit_compile):
    """`step(x) -> (loss, grads, forward NFE)`: the mean NLL and its gradient."""

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(log_prob(x))
        forward_nfe = counter.read_value()  # ordered after the forward solve
        return loss, tape.gradient(loss, variables), forward_nfe

    return step


def pretrain(step, variables, counter, *, steps, lr, batch, seed, verbose):
    """`steps` Adam steps with a tfnode `step` (exact trace) on fresh batches;
    returns a summary dict."""
    optimizer = keras.optimizers.Adam(lr)
    data = tfnode.data.toy_density("8gaussians", batch * max(steps, 1), seed=seed + 1)
    losses, nfes = [], []
    start = time.perf_counter()
    for i in range(steps):
        counter.assign(0)
        loss, grads, forward_nfe = step(tf.constant(data[i * batch : (i + 1) * batch]))
        optimizer.apply(grads, variables)
        losses.append(float(loss))
        nfes.append((int(forward_nfe), int(counter.numpy()) - int(forward_nfe)))
        if verbose and (i + 1) % 50 == 0:
            print(
                f"pretraining step {i + 1}/{steps}: loss {losses[-1]:.3f}, "
                f"NFE {nfes[-1][0]}/{nfes[-1][1]}, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return dict(
        steps=steps,
        lr=lr,
        seconds=time.perf_counter() - start,
        first=(losses[0], *nfes[0]) if steps else None,
        last=(statistics.mean(losses[-10:]), *nfes[-1]) if steps else None,
    )


def reference_cnf(dynamics, hidden_units):
    """A float64 CNF on a copy of `dynamics`' weights, solved at `REFERENCE_TOL`."""
    copy = CountedConcatSquash(
        tf.Variable(0), hidden_units=hidden_units, dtype="float64", name="reference"
    )
    copy(tf.zeros([], tf.float64), tf.zeros([1, DIM], tf.float64))
    copy.set_weights(dynamics.get_weights())
    cnf = tfnode.models.CNF(
        DIM,
        copy,
        rtol=REFERENCE_TOL,
        atol=REFERENCE_TOL,
        max_num_steps=100_000,
        dtype="float64",
    )
    cnf.build()
    return cnf


def _hutchinson_log_prob(cnf, x, noise):
    """`cnf.log_prob(x)` with the Hutchinson noise given: the same solve of the
    CNF's augmented dynamics."""
    func = cnf._augmented("hutchinson", False)
    x = tf.cast(x, cnf.compute_dtype)
    ys = tfnode.odeint_adjoint(
        func,
        func.initial_state(x, noise=noise),
        tf.constant(cnf.t[::-1], x.dtype),  # data (t1) to base (t0)
        method=cnf.method,
        rtol=cnf.rtol,
        atol=cnf.atol,
        max_num_steps=cnf.max_num_steps,
    )
    z = ys["y"][-1]
    base = -0.5 * (tf.reduce_sum(tf.square(z), -1) + DIM * np.log(2 * np.pi))
    return base + ys["trace"][-1]


def same_model_check(cnf, reference, dynamics, x, tol, seed):
    """Graph-mode forward solves: `{"tfnode", "tfp", "reference"}` -> `log p(x)`,
    `[B]`; with Hutchinson's estimator all use the same fixed Gaussian noise."""
    if cnf.trace == "exact":
        fns = dict(tfnode=cnf.log_prob, reference=reference.log_prob)
        dist = make_tfp_distribution(dynamics, "exact", tol)
    else:
        noise = tf.random.stateless_normal(x.shape, seed=[seed, 1])
        fns = dict(
            tfnode=lambda x: _hutchinson_log_prob(cnf, x, noise),
            reference=lambda x: _hutchinson_log_prob(
                reference, x, tf.cast(noise, tf.float64)
            ),
        )
        dist = make_tfp_distribution(
            dynamics,
            "hutchinson",
            tol,
            sample_fn=lambda shape, dtype, seed: tf.reshape(
                tf.cast(noise, dtype), shape
            ),
        )
    fns["tfp"] = dist.log_prob
    return {
        name: np.asarray(tf.function(fn, autograph=False)(x), np.float64)
        for name, fn in fns.items()
    }


def main(
    *,
    repeats=20,
    warmup=2,
    train_steps=200,
    lr=5e-3,
    batch=512,
    tol=1e-5,
    traces=("exact", "hutchinson"),
    modes=("graph", "xla"),
    tfp_xla=True,
    hidden_units=(64, 64, 64),
    seed=0,
    verbose=True,
):
    """Runs the benchmark; prints the tables and returns their rows.

    Args:
        repeats: Timed rounds; each runs every row's two steps once.
        warmup: Untimed calls of each step first (the first traces and compiles).
        train_steps: Adam steps training the shared dynamics before the timing.
        lr: Adam's learning rate for them.
        batch: Points per batch (training and the timed step).
        tol: dopri5's rtol and atol, for both.
        traces: Any of "exact" and "hutchinson".
        modes: Any of "graph" (plain `tf.function`) and "xla" (tfnode with
            `jit_compile=True`).
        tfp_xla: Whether the "xla" rows try TFP under XLA first.
        hidden_units: The dynamics' hidden layers.
        seed: Seed of the weights, the data and the noise.
        verbose: Whether to print progress and the tables.

    Returns:
        `{"pretraining": {...}, "speed": [...], "check": [...]}`.
    """
    if repeats < 1 or warmup < 1 or train_steps < 0:
        raise ValueError(
            "Need repeats >= 1, warmup >= 1 and train_steps >= 0. Received: "
            f"{repeats=}, {warmup=}, {train_steps=}"
        )
    for name, values, valid in (
        ("traces", traces, TFP_TRACES),
        ("modes", modes, MODES),
    ):
        unknown = [v for v in values if v not in valid]
        if unknown:
            raise ValueError(f"Unknown {name} {unknown}; choose from {list(valid)}.")
    counter, dynamics, cnfs = make_models(hidden_units=hidden_units, tol=tol, seed=seed)
    variables = dynamics.trainable_variables
    x = tf.constant(tfnode.data.toy_density("8gaussians", batch, seed=seed))

    def warm(fn):
        """Seconds of the first `warmup` calls (tracing, compiling)."""
        start = time.perf_counter()
        for _ in range(warmup):
            fn(x)
        return time.perf_counter() - start

    steps, first_call_s = {}, {}

    def tfnode_step(mode, trace):
        if (mode, trace, "tfnode") not in steps:
            fn = make_step(cnfs[trace].log_prob, variables, counter, MODES[mode])
            first_call_s[mode, trace, "tfnode"] = warm(fn)
            steps[mode, trace, "tfnode"] = fn
        return steps[mode, trace, "tfnode"]

    # Train with a step that is timed later anyway (XLA's is the faster one).
    train_mode = "xla" if "xla" in modes else "graph"
    pretraining = pretrain(
        tfnode_step(train_mode, "exact"),
        variables,
        counter,
        steps=train_steps,
        lr=lr,
        batch=batch,
        seed=seed,
        verbose=verbose,
    )
    pretraining["mode"] = train_mode

    # Trace, compile and warm up; the XLA rows use TFP under XLA where it compiles.
    tfp_fns, tfp_modes, tfp_xla_errors = {}, {}, {}
    for trace in traces:
        for mode in modes:
            tfnode_step(mode, trace)
            tfp_mode = "xla" if mode == "xla" and tfp_xla else "graph"
            if tfp_mode == "xla":
                dist = make_tfp_distribution(dynamics, trace, tol)
                fn = make_step(dist.log_prob, variables, counter, True)
                try:
                    first_call_s["xla", trace, "tfp"] = warm(fn)
                    tfp_fns["xla", trace] = fn
                except Exception as e:  # TFP's exact trace does not compile
                    message = str(e).strip().splitlines()[0]
                    tfp_xla_errors[trace] = f"{type(e).__name__}: {message}"
                    tfp_mode = "graph"
            if (tfp_mode, trace) not in tfp_fns:
                dist = make_tfp_distribution(dynamics, trace, tol)
                fn = make_step(dist.log_prob, variables, counter, False)
                first_call_s["graph", trace, "tfp"] = warm(fn)
                tfp_fns["graph", trace] = fn
            steps[mode, trace, "tfp"] = tfp_fns[tfp_mode, trace]
            tfp_modes[mode, trace] = tfp_mode
            if verbose:
                print(f"traced and warmed up: {mode}, {trace}", flush=True)

    records = {}  # (mode, trace, name) -> [(loss, forward NFE, backward NFE)]

    def runner(key):
        fn, record = steps[key], records.setdefault(key, [])

        def run():
            counter.assign(0)
            start = time.perf_counter()
            loss, _, forward_nfe = fn(x)
            loss = float(loss)  # the step has run
            ms = (time.perf_counter() - start) * 1e3
            forward_nfe = int(forward_nfe)
            record.append((loss, forward_nfe, int(counter.numpy()) - forward_nfe))
            return ms

        return run

    configs = [(mode, trace) for trace in traces for mode in modes]
    names = ["tfnode", "tfp"]
    fns = {c + (n,): (runner(c + (n,)), ()) for c in configs for n in names}
    times_ms = solver_forward.interleaved_times(
        fns, configs, names, repeats, lambda run: run()
    )

    speed = []
    for mode, trace in configs:
        ms = {n: times_ms[mode, trace, n] for n in names}
        row = dict(
            mode=mode,
            trace=trace,
            tfp_mode=tfp_modes[mode, trace],
            tfnode_ms=statistics.median(ms["tfnode"]),
            tfp_ms=statistics.median(ms["tfp"]),
            ratio=statistics.median(a / b for a, b in zip(ms["tfnode"], ms["tfp"])),
        )
        for n in names:
            loss, fwd, bwd = np.asarray(records[mode, trace, n]).T
            row[f"{n}_fwd"], row[f"{n}_bwd"] = np.median(fwd), np.median(bwd)
            row[f"{n}_loss"] = float(np.median(loss))
        speed.append(row)

    check = []
    reference = reference_cnf(dynamics, hidden_units)
    for trace in traces:
        log_p = same_model_check(cnfs[trace], reference, dynamics, x, tol, seed)
        nll = {name: -float(np.mean(v)) for name, v in log_p.items()}
        row = dict(trace=trace, gap=abs(nll["tfnode"] - nll["tfp"]))
        for name in ("tfnode", "tfp"):
            row[f"{name}_nll"] = nll[name]
            row[f"{name}_nll_err"] = abs(nll[name] - nll["reference"])
            row[f"{name}_max_err"] = float(
                np.max(np.abs(log_p[name] - log_p["reference"]))
            )
        check.append(row)

    if verbose:
        _print_tables(
            speed, check, pretraining, tfp_xla_errors, first_call_s, repeats, batch, tol
        )
    return {"pretraining": pretraining, "speed": speed, "check": check}


def _print_tables(
    speed, check, pretraining, tfp_xla_errors, first_call_s, repeats, batch, tol
):
    p = pretraining
    if p["steps"]:
        print(
            f"\nPretraining: {p['steps']} Adam steps (lr {p['lr']:g}, batch "
            f"{batch}, exact trace, tfnode {p['mode']}) in {p['seconds']:.0f} s; NLL "
            f"{p['first'][0]:.3f} -> {p['last'][0]:.3f} (mean of the last 10 steps; "
            "the density's entropy is 2.84), NFE forward/backward "
            f"{p['first'][1]}/{p['first'][2]} -> {p['last'][1]}/{p['last'][2]}."
        )
    else:
        print("\nNo pretraining: the flow is the near-identity of its initialisation.")
    for trace, error in tfp_xla_errors.items():
        print(
            f"TFP's FFJORD with the {trace} trace does not compile under XLA "
            f"({error}); its xla row times TFP in graph mode."
        )
    for r in speed:
        if r["mode"] == "xla" and r["tfp_mode"] == "xla":
            print(f"TFP's FFJORD with the {r['trace']} trace compiles under XLA.")

    print(
        f"\nOne training step (mean NLL of {batch} 8gaussians points and its gradient "
        f"for the dynamics' weights), dopri5 rtol = atol = {tol:g}, adjoint, float32, "
        f"the same {'trained ' if p['steps'] else ''}dynamics layer. "
        f"Median of {repeats} interleaved rounds; "
        "tfnode/tfp: median of per-round ratios; NFE: calls of the dynamics, "
        "forward/backward (medians)."
    )
    header = [
        "mode",
        "trace",
        "tfnode ms",
        "tfp ms",
        "tfp mode",
        "tfnode/tfp",
        "tfnode NFE",
        "tfp NFE",
    ]
    lines = [
        [
            r["mode"],
            r["trace"],
            f"{r['tfnode_ms']:.1f}",
            f"{r['tfp_ms']:.1f}",
            r["tfp_mode"],
            f"{r['ratio']:.3f}",
            f"{r['tfnode_fwd']:g}/{r['tfnode_bwd']:g}",
            f"{r['tfp_fwd']:g}/{r['tfp_bwd']:g}",
        ]
        for r in speed
    ]
    print(_adjoint._format(header, lines))

    print(
        "\nSame model: mean NLL of the timed batch from graph-mode forward solves "
        "(Hutchinson: all with the same fixed noise), and the errors of the NLL and "
        "of each point's log p(x) against tfnode in float64 at rtol = atol = "
        f"{REFERENCE_TOL:g} on the same weights. * = NLL gap above {LOSS_TOLERANCE:g}."
    )
    header = [
        "trace",
        "tfnode NLL",
        "tfp NLL",
        "|NLL gap|",
        "tfnode NLL err",
        "tfp NLL err",
        "tfnode max |log p err|",
        "tfp max |log p err|",
    ]
    lines = [
        [
            r["trace"],
            f"{r['tfnode_nll']:.6f}",
            f"{r['tfp_nll']:.6f}",
            _adjoint._star(r["gap"], LOSS_TOLERANCE, "{:.1e}"),
            f"{r['tfnode_nll_err']:.1e}",
            f"{r['tfp_nll_err']:.1e}",
            f"{r['tfnode_max_err']:.1e}",
            f"{r['tfp_max_err']:.1e}",
        ]
        for r in check
    ]
    print(_adjoint._format(header, lines))
    print(
        "\nFirst calls (tracing, XLA compilation, warm-up), s: "
        + ", ".join(
            f"{mode}/{trace}/{name} {s:.0f}"
            for (mode, trace, name), s in first_call_s.items()
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="Adam steps training the shared dynamics before timing (0: untrained)",
    )
    parser.add_argument(
        "--lr", type=float, default=5e-3, help="Adam's learning rate for them"
    )
    parser.add_argument("--batch", type=int, default=512, help="points per batch")
    parser.add_argument("--tol", type=float, default=1e-5, help="dopri5 rtol = atol")
    parser.add_argument(
        "--traces",
        nargs="+",
        choices=list(TFP_TRACES),
        default=list(TFP_TRACES),
        help="trace estimators (default: both)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=list(MODES),
        help="graph: tf.function; xla: tfnode with jit_compile=True (default: both)",
    )
    parser.add_argument(
        "--tfp-xla",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="in the xla rows, try TFP under XLA first (else TFP in graph mode)",
    )
    parser.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=[64, 64, 64],
        help="hidden layers of the dynamics",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of everything")
    args = parser.parse_args()
    main(
        repeats=args.repeats,
        warmup=args.warmup,
        train_steps=args.train_steps,
        lr=args.lr,
        batch=args.batch,
        tol=args.tol,
        traces=tuple(args.traces),
        modes=tuple(args.modes),
        tfp_xla=args.tfp_xla,
        hidden_units=tuple(args.hidden_units),
        seed=args.seed,
    )
