"""diffrax's default gradient (`RecursiveCheckpointAdjoint`) on the problem of
`backprop.py`, for context: run it in a separate environment with JAX and diffrax
(`pip install jax diffrax`; neither is a dependency of tfnode, and this script
imports no TensorFlow).

Same weights, initial states, times and loss weights as `adjoint.make_problem`
(numpy's seeded generator, drawn in the same order), dopri5 at rtol = atol = 1e-6
and 1e-3, `jax.jit`, forward + backward for `y0` and all weights. Prints the median
time of `--repeats` calls and the number of steps. Compare it with `backprop.py`'s
times only as a ratio to a tfnode time measured in the same minutes.

Run: `python benchmarks/diffrax_backprop.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

STATE, HIDDEN, BATCH, NUM_TIMES = 16, 64, 256, 11


def make_problem(seed=0):
    """`adjoint.make_problem`'s arrays, without importing TensorFlow."""
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
    loss_weights = (
        np.random.default_rng(seed + 1)
        .standard_normal((NUM_TIMES, BATCH, STATE))
        .astype(np.float32)
    )
    return weights, y0, times, loss_weights


def main(*, repeats=30, tols=(1e-6, 1e-3), seed=0):
    import diffrax
    import jax
    import jax.numpy as jnp

    weights, y0, times, loss_weights = make_problem(seed)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]

    def f(t, z, params):
        for i, (w, b) in enumerate(params):
            z = z @ w + b
            if i < len(params) - 1:
                z = jnp.tanh(z)
        return z

    rows = []
    for tol in tols:

        def loss(z0, params, tol=tol):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(f),
                diffrax.Dopri5(),
                float(times[0]),
                float(times[-1]),
                None,
                z0,
                args=params,
                saveat=diffrax.SaveAt(ts=jnp.asarray(times)),
                stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            )  # the default adjoint: RecursiveCheckpointAdjoint
            return jnp.sum(jnp.asarray(loss_weights) * sol.ys), sol.stats["num_steps"]

        grads = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
        z0 = jnp.asarray(y0)
        (_, steps) = jax.block_until_ready(grads(z0, params))
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(grads(z0, params))
            samples.append((time.perf_counter() - start) * 1e3)
        rows.append(dict(tol=tol, ms=statistics.median(samples), steps=int(steps)))
        print(f"tol={tol:.0e}: {rows[-1]['ms']:.2f} ms, {int(steps)} steps", flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed calls")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problem")
    args = parser.parse_args()
    main(repeats=args.repeats, seed=args.seed)
