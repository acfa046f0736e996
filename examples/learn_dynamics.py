"""
Title: Learning dynamics from sampled trajectories
Author: tfnode contributors
Description: Recover a linear spiral's matrix and fit a nonlinear 2-D vector field
with Neural ODEs.
Accelerator: None

## Introduction

A Neural ODE models data as the solution of `dy/dt = f(t, y)` where `f` is a
Keras layer. This example reproduces the proof of concept of Chen et al. (2018)
as it appears in the torchdiffeq demo and in the "Neural ODEs" notebook: sample
points along the trajectory of a known ODE, forget the ODE, and recover it by
fitting `f` so that solving the ODE reproduces the samples.

1. **A linear spiral**, `dz/dt = A z` with `A = [[-0.1, -1], [1, -0.1]]`. The
   model is a linear `tfnode.ODEFunc` subclass that starts from a random
   matrix; we print the learned matrix next to the true one.
2. **A nonlinear field**, the notebook's two spirals glued together by sigmoid
   gates, fitted by a `tfnode.MLPODEFunc`.

Both fits use the same recipe: mini-batches of short random sub-spans of the
observed trajectory, each solved from its first observation with a
`tfnode.NeuralODELayer` and compared with the observations that follow.
Gradients come from the adjoint method (`adjoint=True`) or from backprop
through the solver (`adjoint=False`).

Run it with `python examples/learn_dynamics.py` (about a minute on two CPU
cores); `--help` lists the flags. Plots go to `results/learn_dynamics/`.

## Setup

The command line is parsed before TensorFlow is imported (which takes seconds), so
`--help` and a mistyped flag answer at once; importing this file parses nothing. Every
flag is a keyword of `main`, below.
"""

import argparse
import os
import time


def _parser():
    """The command line: one flag per keyword of `main`, with its default."""
    parser = argparse.ArgumentParser(
        description="Recover a linear spiral's matrix and fit a nonlinear 2-D vector "
        "field with Neural ODEs. Plots go to OUT_DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-size", type=int, default=1000, help="observations per trajectory"
    )
    parser.add_argument(
        "--niters", type=int, default=1000, help="training steps per problem"
    )
    parser.add_argument(
        "--batch-time", type=int, default=10, help="observations per sub-span"
    )
    parser.add_argument(
        "--batch-size", type=int, default=20, help="sub-spans per mini-batch"
    )
    parser.add_argument(
        "--adjoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gradients by the adjoint method; --no-adjoint backprops through the "
        "solver",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the noise, batches and weights"
    )
    parser.add_argument(
        "--out-dir", default="results/learn_dynamics", help="where the PNGs go"
    )
    parser.add_argument(
        "--noise-std",
        type=float,
        default=0.01,
        help="standard deviation of the observation noise",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.01,
        help="initial Adam learning rate, decayed by cosine to 5%% of it",
    )
    parser.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=(32, 32),
        metavar="UNITS",
        help="hidden layer sizes of the nonlinear problem's MLP dynamics",
    )
    parser.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the training step with XLA; --no-jit-compile: a plain "
        "tf.function",
    )
    return parser


if __name__ == "__main__":
    _ARGS = _parser().parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import tfnode  # noqa: E402

"""
## The true dynamics

Two autonomous fields on the plane, written as plain functions of `(t, y)`
with `y` of shape `[B, 2]`: that is all `tfnode.odeint` needs to simulate them.
Both come from the notebook (its `SpiralFunctionExample` and `TestODEF`);
the linear one starts from `[2, 0]` as in the torchdiffeq demo.
"""

TRUE_A = [[-0.1, -1.0], [1.0, -0.1]]  # the linear spiral, dz/dt = A z
# a stable spiral, dominant where y.x0 > 0 (left) ...
GATE_A = [[-0.1, -0.5], [0.5, -0.1]]
# ... glued to an unstable one on the right
GATE_B = [[0.2, 1.0], [-1.0, 0.2]]
GATE_X0 = [-1.0, 0.0]


def linear_field(t, y):
    """`dy/dt = A y`, for each row of `y`."""
    return tf.linalg.matvec(tf.constant(TRUE_A, y.dtype), y)  # [B, 2]


def gated_field(t, y):
    """`dy/dt = s(y.x0) A (y - x0) + s(-y.x0) B (y + x0)`, `s` the sigmoid."""
    x0 = tf.constant(GATE_X0, y.dtype)
    gate = tf.sigmoid(tf.reduce_sum(y * x0, axis=-1, keepdims=True))  # [B, 1]
    a = tf.linalg.matvec(tf.constant(GATE_A, y.dtype), y - x0)
    b = tf.linalg.matvec(tf.constant(GATE_B, y.dtype), y + x0)
    return gate * a + (1.0 - gate) * b  # s(-u) = 1 - s(u)


def observe(field, y0, t_max, data_size, noise_std, rng):
    """Solves `field` from `y0` on `data_size` times in `[0, t_max]`; adds noise.

    Returns `(t, ys, observations)` as numpy arrays `[N]`, `[N, 2]`, `[N, 2]`.
    """
    t = np.linspace(0.0, t_max, data_size, dtype="float32")
    # In a tf.function the solver's loop runs as one graph; eagerly, each of
    # its hundreds of steps would be a round trip through Python.
    solve = tf.function(
        lambda: tfnode.odeint(field, tf.constant([y0]), t, rtol=1e-7, atol=1e-9)
    )
    ys = solve()[:, 0].numpy()  # [N, 1, 2] -> [N, 2]
    observations = ys + noise_std * rng.standard_normal(ys.shape).astype("float32")
    return t, ys, observations


"""
## A linear dynamics layer

Any Keras layer whose `call(t, y)` returns `dy/dt` can be the dynamics. A
subclass of `tfnode.ODEFunc` creates its weights in `build(self, t_shape,
y_shape)`, where Keras passes the shapes of both arguments. Here `t` is
ignored (the field is autonomous) and the weight is the matrix itself, so the
learned `A` reads as the maths does. As in the notebook it starts from a random
matrix, `N(0, 0.5^2)` entries.
"""


@keras.saving.register_keras_serializable(package="examples")
class LinearODEFunc(tfnode.ODEFunc):
    """`dy/dt = A y` with a learned square matrix `A`."""

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.5)
        )

    def build(self, t_shape, y_shape):
        features = y_shape[-1]
        self.A = self.add_weight(
            shape=(features, features), initializer=self.initializer, name="A"
        )

    def call(self, t, y):
        return tf.linalg.matvec(self.A, y)  # [B, D]

    def get_config(self):
        config = {"initializer": keras.initializers.serialize(self.initializer)}
        return {**super().get_config(), **config}


"""
## Mini-batches of random sub-spans

Fitting the whole trajectory at once is slow and ill-conditioned (a small
error in the field shifts everything after it). Instead each step draws
`batch_size` sub-spans of `batch_time` consecutive observations, starting at
random indices. Each sub-span is solved from its first observation over its
own times: `t` has shape `[batch_size, batch_time]`, a time grid per sample,
which `NeuralODELayer` accepts directly.
"""


def sample_subspans(t, observations, batch_time, batch_size, rng):
    """Returns `y0 [B, 2]`, `t [B, T]` and the targets `[B, T, 2]`."""
    starts = rng.integers(0, len(t) - batch_time + 1, size=batch_size)
    index = starts[:, None] + np.arange(batch_time)  # [B, T]
    return observations[starts], t[index], observations[index]


def evenly_spaced_subspans(t, observations, batch_time, num=64):
    """A fixed evaluation set: `num` sub-spans spread over the whole trajectory."""
    starts = np.linspace(0, len(t) - batch_time, num).astype(int)
    index = starts[:, None] + np.arange(batch_time)
    return observations[starts], t[index], observations[index]


"""
## Training

A custom training loop: the step (solve, mean absolute error, gradient, Adam
update) is one `tf.function`. With `jit_compile=True` XLA compiles the whole
step, adaptive solver loops included; on a CPU that makes a step 10-20x
faster than in a plain `tf.function`, which more than pays for the seconds the
compilation takes. `training=True` makes the layer record its solver
statistics (`ode.nfe`, `ode.backward_nfe`), printed with the loss.
"""


def fit(
    ode,
    t,
    observations,
    *,
    niters,
    batch_time,
    batch_size,
    learning_rate,
    seed,
    jit_compile,
    log_every,
    describe=None,
):
    """Fits `ode` to sub-spans of `observations`; returns the loss per step."""
    rng = np.random.default_rng(seed)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, niters, alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)

    @tf.function(jit_compile=jit_compile)
    def train_step(y0, times, targets):
        with tf.GradientTape() as tape:
            predictions = ode(y0, t=times, training=True)  # [B, T, 2]
            loss = tf.reduce_mean(tf.abs(predictions - targets))
        variables = ode.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    losses = []
    start = time.perf_counter()
    for step in range(1, niters + 1):
        loss = train_step(
            *sample_subspans(t, observations, batch_time, batch_size, rng)
        )
        losses.append(float(loss))
        if step == 1:
            print(
                "  step 1 (tracing + compilation) took "
                f"{time.perf_counter() - start:.1f} s"
            )
        if step % log_every == 0 or step == niters:
            message = (
                f"  step {step:5d}/{niters}  loss {np.mean(losses[-log_every:]):.5f}"
                f"  nfe {int(ode.nfe.result()):3d}"
            )
            if ode.backward_nfe is not None:
                message += f"  backward nfe {int(ode.backward_nfe.result()):4d}"
            if describe is not None:
                message += f"  {describe()}"
            print(f"{message}  ({time.perf_counter() - start:.1f} s)")
    return losses


def mean_abs_loss(ode, y0, times, targets):
    """The training loss on a fixed set of sub-spans (no statistics recorded)."""
    return float(tf.reduce_mean(tf.abs(ode(y0, t=times) - targets)))


def predict(ode, y0, t):
    """The learned trajectory from `y0` over all of `t`: `[N, 2]`."""
    return tf.function(ode)(tf.constant([y0]), t=tf.constant(t))[0].numpy()


def make_ode(func, adjoint):
    # The default solver, dopri5 at rtol=1e-3, atol=1e-6, errs far less than the
    # observation noise over a sub-span; tighter tolerances change no digit of A.
    return tfnode.NeuralODELayer(func, adjoint=adjoint, return_sequences=True)


"""
## Plots

For each problem, one PNG of four panels: the coordinates against time and the
phase portrait (observations as dots, coloured by time in the portrait; the
learned model's trajectory from the same initial state as a line), then the
true and the learned vector fields as streamlines under the true trajectory,
coloured by speed on the true field's scale (one colour bar for both).
"""


def plot(path, title, t, observations, ys, learned, true_field, learned_field):
    """Draws the four panels into the PNG `path`; returns the figure."""
    fig = Figure(figsize=(12, 10), layout="constrained")  # no pyplot: no display
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    for i, name in enumerate(("x", "y")):
        ax.plot(
            t, observations[:, i], ".", ms=2, color=f"C{i}", label=f"{name} observed"
        )
        ax.plot(
            t,
            learned[:, i],
            "-",
            lw=1.2,
            color="k" if i == 0 else "0.45",
            label=f"{name} learned",
        )
    ax.set(xlabel="t", ylabel="x, y", title="Coordinates against time")
    ax.legend(fontsize=8, ncol=2)

    ax = axes[0, 1]
    points = ax.scatter(
        observations[:, 0],
        observations[:, 1],
        c=t,
        s=3,
        cmap="plasma",
        label="observed",
    )
    ax.plot(learned[:, 0], learned[:, 1], "k-", lw=1, label="learned")
    ax.plot(*ys[0], "k*", ms=10, label="initial state")
    ax.set(xlabel="x", ylabel="y", title="Phase portrait", aspect="equal")
    ax.legend(fontsize=8)
    fig.colorbar(points, ax=ax, label="t (observation time)")

    pad = 0.3
    lo, hi = observations.min(0) - pad, observations.max(0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 25), np.linspace(lo[1], hi[1], 25))
    grid = tf.constant(np.stack([gx.ravel(), gy.ravel()], -1), tf.float32)  # [625, 2]
    fields = [
        np.asarray(f(tf.constant(0.0), grid)).reshape(*gx.shape, 2)  # [25, 25, 2]
        for f in (true_field, learned_field)
    ]
    speeds = [np.hypot(v[..., 0], v[..., 1]) for v in fields]  # [25, 25] each
    norm = Normalize(0.0, speeds[0].max())
    for ax, v, speed, name in zip(axes[1], fields, speeds, ("True", "Learned")):
        streams = ax.streamplot(
            gx,
            gy,
            v[..., 0],
            v[..., 1],
            color=speed,
            norm=norm,
            cmap="viridis",
            density=1.1,
            linewidth=0.8,
        )
        ax.plot(
            ys[:, 0], ys[:, 1], color="C3", lw=0.8, alpha=0.7, label="true trajectory"
        )
        ax.set(xlabel="x", ylabel="y", title=f"{name} vector field", aspect="equal")
        ax.legend(fontsize=8, loc="upper right")
    fig.colorbar(
        streams.lines,
        ax=axes[1],
        label="speed |dy/dt|",
        # Learned speeds above the true field's maximum share its top colour.
        extend="max" if speeds[1].max() > norm.vmax else "neither",
    )
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return fig


"""
## Putting it together
"""


def main(
    *,
    data_size=1000,
    niters=1000,
    batch_time=10,
    batch_size=20,
    adjoint=True,
    seed=0,
    out_dir="results/learn_dynamics",
    noise_std=0.01,
    learning_rate=0.01,
    hidden_units=(32, 32),
    jit_compile=True,
):
    """Fits both problems; prints and returns the measured numbers.

    Returns:
        A dict: `linear_matrix` (learned `A`), `linear_matrix_error` (max-norm
        error of `A`), `linear_trajectory_error` and
        `nonlinear_trajectory_error` (mean absolute error of the learned
        trajectory from the true initial state, against the noise-free
        trajectory), `nonlinear_trajectory_max_error`, `nonlinear_initial_loss`
        and `nonlinear_final_loss` (mean absolute error on a fixed set of
        sub-spans), the timings `linear_seconds`, `nonlinear_seconds`,
        `total_seconds`, and `plots` (paths of the PNGs).
    """
    total_start = time.perf_counter()
    keras.utils.set_random_seed(seed)  # the random initial weights
    rng = np.random.default_rng(seed)  # noise and mini-batches
    os.makedirs(out_dir, exist_ok=True)
    log_every = max(1, niters // 10)
    options = dict(
        niters=niters,
        batch_time=batch_time,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        jit_compile=jit_compile,
        log_every=log_every,
    )
    results = {}

    # 1. Recovering the matrix of a linear spiral.
    print(
        f"[1/2] Linear spiral dz/dt = A z: {data_size} observations on [0, 25], "
        f"noise std {noise_std}"
    )
    y0 = [2.0, 0.0]
    t, ys, obs = observe(linear_field, y0, 25.0, data_size, noise_std, rng)
    func = LinearODEFunc()
    ode = make_ode(func, adjoint)
    true_a = np.array(TRUE_A)

    def matrix_error():
        return np.abs(func.A.numpy() - true_a).max()

    ode(tf.constant([y0]), t=tf.constant(t[:2]))  # builds A
    print(f"  initial max|A - A_true| = {matrix_error():.4f}")
    start = time.perf_counter()
    fit(
        ode, t, obs, **options, describe=lambda: f"max|A - A_true| {matrix_error():.4f}"
    )
    results["linear_seconds"] = time.perf_counter() - start
    learned = predict(ode, y0, t)
    results["linear_matrix"] = func.A.numpy().tolist()
    results["linear_matrix_error"] = float(matrix_error())
    results["linear_trajectory_error"] = float(np.abs(learned - ys).mean())
    with np.printoptions(precision=4, suppress=True, floatmode="fixed"):
        print("  true A:             learned A:")
        for true_row, row in zip(true_a, func.A.numpy()):
            print(f"    {true_row}    {row}")
    print(
        f"  max-norm error of A: {results['linear_matrix_error']:.4f}; "
        f"mean |trajectory error| {results['linear_trajectory_error']:.4f}; "
        f"{results['linear_seconds']:.1f} s"
    )
    linear_png = os.path.join(out_dir, "linear.png")
    plot(
        linear_png,
        f"Linear spiral: max |A - A_true| = {results['linear_matrix_error']:.4f}; "
        "mean |learned - true trajectory| = "
        f"{results['linear_trajectory_error']:.4f}",
        t,
        obs,
        ys,
        learned,
        linear_field,
        func,
    )

    # 2. A nonlinear field, fitted by an MLP.
    print(
        f"\n[2/2] Gated spirals (nonlinear): {data_size} observations on [0, 31.45], "
        f"MLP {tuple(hidden_units)}"
    )
    y0 = [0.6, 0.3]
    t, ys, obs = observe(gated_field, y0, 6.29 * 5, data_size, noise_std, rng)
    func = tfnode.MLPODEFunc(
        hidden_units=hidden_units, activation="tanh", time_dependent=False
    )
    ode = make_ode(func, adjoint)
    evaluation = evenly_spaced_subspans(t, obs, batch_time)
    results["nonlinear_initial_loss"] = mean_abs_loss(ode, *evaluation)
    print(f"  initial loss {results['nonlinear_initial_loss']:.5f}")
    start = time.perf_counter()
    fit(ode, t, obs, **options)
    results["nonlinear_seconds"] = time.perf_counter() - start
    results["nonlinear_final_loss"] = mean_abs_loss(ode, *evaluation)
    learned = predict(ode, y0, t)
    results["nonlinear_trajectory_error"] = float(np.abs(learned - ys).mean())
    results["nonlinear_trajectory_max_error"] = float(np.abs(learned - ys).max())
    print(
        f"  loss {results['nonlinear_initial_loss']:.5f} -> "
        f"{results['nonlinear_final_loss']:.5f}; whole trajectory from y0: "
        f"mean |error| {results['nonlinear_trajectory_error']:.4f}, max "
        f"{results['nonlinear_trajectory_max_error']:.4f}; "
        f"{results['nonlinear_seconds']:.1f} s"
    )
    nonlinear_png = os.path.join(out_dir, "nonlinear.png")
    plot(
        nonlinear_png,
        "Gated spirals, MLP dynamics: mean |learned - true trajectory| = "
        f"{results['nonlinear_trajectory_error']:.4f}",
        t,
        obs,
        ys,
        learned,
        gated_field,
        func,
    )

    results["plots"] = [linear_png, nonlinear_png]
    results["total_seconds"] = time.perf_counter() - total_start
    print(
        f"\nWrote {', '.join(results['plots'])}; total {results['total_seconds']:.1f} s"
    )
    return results


"""
## Command line

`_parser` (at the top) maps every flag onto a keyword of `main`. Observation
noise is what limits the nonlinear fit: longer sub-spans average it out
(`--batch-time 20` brings the mean trajectory error from about 0.08 to 0.03),
and without noise a larger MLP trained longer gets to about 0.01:
`python examples/learn_dynamics.py --noise-std 0 --niters 3000 --hidden-units 64 64`.
"""

if __name__ == "__main__":
    main(**vars(_ARGS))
