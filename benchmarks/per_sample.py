"""Per-sample step control (`per_sample_steps=True`) against the shared control.

- homogeneous: the benchmark problem of `adjoint.py` (MLP 16-64-64-16, batch 256,
  11 outputs in [0, 1], dopri5, rtol = atol = 1e-6, float32). Forward solve
  (`odeint`), adjoint gradient (`odeint_adjoint`) and backprop gradient (`odeint`),
  under XLA and in graph mode, shared vs per-sample, timed in interleaved rounds in
  one process; the ratio is the median of per-round ratios. Issue 14's target:
  per-sample <= 1.15x shared.
- heterogeneous: 256 Van der Pol oscillators, `mu` log-spaced in [0.1, 10] (in the
  state), x = 2, v = 0, 11 outputs in [0, 10], dopri5, rtol = atol = 1e-6, float64,
  under XLA. Time, per-sample NFE (the shared control's NFE is every sample's), and
  each sample's error ratio `max|y - y_ref| / (rtol * max|y_ref| + atol)` against
  scipy's DOP853 at 1e-12 (the scale of `tests/test_per_sample.py`).

Run: `python benchmarks/per_sample.py` (about 2 minutes on 2 CPU cores). Compare
ratios, not absolute times: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import tensorflow as tf

import tfnode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adjoint as _adjoint  # noqa: E402  (the shared problem and helpers)
import solver_forward  # noqa: E402

TARGET_RATIO = 1.15
KINDS = ("forward", "adjoint gradient", "backprop gradient")
VDP_BATCH, VDP_TIMES, VDP_TOL = 256, np.linspace(0.0, 10.0, 11), 1e-6


def homogeneous_table(*, repeats, seed):
    weights, y0, times, loss_weights = _adjoint.make_problem(seed)
    f, variables = _adjoint.make_mlp(weights)
    y0, t, w = tf.constant(y0), tf.constant(times), tf.constant(loss_weights)
    fns = {}
    for mode in ("xla", "graph"):
        for kind in KINDS:
            for per_sample in (False, True):
                fns[mode, kind, per_sample] = (
                    _make_fn(kind, per_sample, mode, f, variables, t, w),
                    (y0,),
                )
    for fn, args in fns.values():
        fn(*args)
        fn(*args)
    configs = [(mode, kind) for mode in ("xla", "graph") for kind in KINDS]
    ms = solver_forward.interleaved_times(
        fns, configs, [False, True], repeats, _adjoint._timed
    )
    rows = []
    for mode, kind in configs:
        shared, per_sample = ms[mode, kind, False], ms[mode, kind, True]
        rows.append(
            dict(
                mode=mode,
                kind=kind,
                shared_ms=statistics.median(shared),
                per_sample_ms=statistics.median(per_sample),
                ratio=statistics.median(a / b for a, b in zip(per_sample, shared)),
            )
        )
    return rows


def _make_fn(kind, per_sample, mode, f, variables, t, w):
    options = dict(rtol=1e-6, atol=1e-6, per_sample_steps=per_sample)

    @tf.function(jit_compile=mode == "xla")
    def fn(y0):
        if kind == "forward":
            return tfnode.odeint(f, y0, t, **options)
        with tf.GradientTape() as tape:
            tape.watch(y0)
            if kind == "adjoint gradient":
                ys = tfnode.odeint_adjoint(f, y0, t, params=variables, **options)
            else:
                ys = tfnode.odeint(f, y0, t, **options)
            loss = tf.reduce_sum(w * ys)
        return tape.gradient(loss, [y0, *variables])

    return fn


def vdp(t, y):
    xv, mu = y
    x, v = xv[:, 0], xv[:, 1]
    return tf.stack([v, mu * (1 - x**2) * v - x], 1), tf.zeros_like(mu)


def vdp_reference(mus):
    from scipy.integrate import solve_ivp

    out = []
    for mu in mus:
        solution = solve_ivp(
            lambda t, y, mu=mu: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]],
            (VDP_TIMES[0], VDP_TIMES[-1]),
            [2.0, 0.0],
            method="DOP853",
            rtol=1e-12,
            atol=1e-12,
            t_eval=VDP_TIMES,
        )
        out.append(solution.y.T)
    return np.stack(out, 1)  # [T, B, 2]


def heterogeneous_table(*, repeats):
    mus = np.logspace(-1, 1, VDP_BATCH)
    y0 = (
        tf.constant(np.stack([np.full(VDP_BATCH, 2.0), np.zeros(VDP_BATCH)], 1)),
        tf.constant(mus),
    )
    t = tf.constant(VDP_TIMES)
    fns = {}
    for per_sample in (False, True):

        @tf.function(jit_compile=True)
        def fn(y0, per_sample=per_sample):
            (xv, _), stats = tfnode.odeint(
                vdp,
                y0,
                t,
                rtol=VDP_TOL,
                atol=VDP_TOL,
                per_sample_steps=per_sample,
                return_stats=True,
            )
            return xv, stats

        fns["xla", per_sample] = (fn, (y0,))
    results = {per_sample: fn(*args) for (_, per_sample), (fn, args) in fns.items()}
    ms = solver_forward.interleaved_times(
        fns, [("xla",)], [False, True], repeats, _adjoint._timed
    )
    reference = vdp_reference(mus)
    scale = VDP_TOL * np.abs(reference).max(axis=(0, 2)) + VDP_TOL
    rows = {}
    for per_sample, (xv, stats) in results.items():
        error = np.abs(xv.numpy() - reference).max(axis=(0, 2))
        nfe = np.broadcast_to(np.asarray(stats.nfe), [VDP_BATCH])
        rows[per_sample] = dict(
            ms=statistics.median(ms["xla", per_sample]),
            nfe=nfe,
            steps=np.broadcast_to(np.asarray(stats.num_steps), [VDP_BATCH]),
            ratio=error / scale,
        )
    return rows, mus


def _quantiles(x):
    q = np.quantile(x, [0.0, 0.5, 0.9, 1.0])
    return [f"{v:.3g}" for v in q]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=20, help="Timed rounds per case (default 20)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Problem seed (default 0).")
    args = parser.parse_args(argv)

    homogeneous = homogeneous_table(repeats=args.repeats, seed=args.seed)
    lines = [
        [
            row["mode"],
            row["kind"],
            f"{row['shared_ms']:.2f}",
            f"{row['per_sample_ms']:.2f}",
            _adjoint._star(row["ratio"], TARGET_RATIO),
        ]
        for row in homogeneous
    ]
    print(
        "\nHomogeneous batch: the benchmark problem (batch 256, dopri5, 1e-6, "
        f"float32), median of {args.repeats} interleaved rounds; * marks a ratio "
        f"above the target {TARGET_RATIO}."
    )
    header = ["mode", "solve", "shared ms", "per-sample ms", "per-sample / shared"]
    print(_adjoint._format(header, lines))

    rows, mus = heterogeneous_table(repeats=args.repeats)
    print(
        f"\nHeterogeneous batch: {VDP_BATCH} Van der Pol, mu log-spaced in [0.1, 10],"
        f" t in [0, 10], dopri5, rtol = atol = {VDP_TOL:g}, float64, XLA. Quantiles "
        "over the samples (min / median / 90% / max); error ratio = max|y - y_ref| "
        "/ (rtol * max|y_ref| + atol), y_ref from scipy DOP853 at 1e-12."
    )
    header = ["control", "time ms", "NFE", "accepted steps", "error ratio", "> 10x"]
    lines = [
        [
            "per-sample" if per_sample else "shared",
            f"{row['ms']:.1f}",
            " / ".join(_quantiles(row["nfe"])),
            " / ".join(_quantiles(row["steps"])),
            " / ".join(_quantiles(row["ratio"])),
            str(int(np.sum(row["ratio"] > 10))),
        ]
        for per_sample, row in rows.items()
    ]
    print(_adjoint._format(header, lines))
    shared, per_sample = rows[False], rows[True]
    # Each evaluation of `func` runs on the whole batch (frozen samples too):
    # the batch's cost is its hardest sample's NFE; the sum is the work a
    # solver that drops finished samples would do.
    print(
        f"Evaluations of func on the batch (max NFE): shared {shared['nfe'].max()}, "
        f"per-sample {per_sample['nfe'].max()} "
        f"({shared['nfe'].max() / per_sample['nfe'].max():.2f}x fewer); summed over "
        f"samples: {shared['nfe'].sum()} vs {per_sample['nfe'].sum()} "
        f"({shared['nfe'].sum() / per_sample['nfe'].sum():.2f}x). Worst shared "
        f"sample: mu = {mus[np.argmax(shared['ratio'])]:.2f}, ratio "
        f"{shared['ratio'].max():.1f} (per-sample "
        f"{per_sample['ratio'][np.argmax(shared['ratio'])]:.1f})."
    )


if __name__ == "__main__":
    main()
