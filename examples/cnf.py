"""
Title: Continuous normalizing flows on 2-D toy densities
Description: Fit FFJORD-style continuous normalizing flows to the 2-D toy densities
by maximum likelihood, with and without the RNODE regularisers, and compare a CNF
with a planar normalizing flow at matching a known density (Chen et al. 2018, Fig. 4).
Accelerator: None

## Introduction

A continuous normalizing flow (CNF) carries samples `z ~ N(0, I)` at `t = 0` to data
`x` at `t = 1` along `dy/dt = f(t, y)`. By the instantaneous change of variables
(Chen et al. 2018, Theorem 1) `d log p(y(t))/dt = -tr(df/dy)`, so one solve backwards
from `x` gives both `z` and the log-density:

    log p(x) = log N(z; 0, I) - int_0^1 tr(df/dy(t, y(t))) dt.

`tfnode.models.CNF` is a Keras model whose `fit(x)` minimises the negative
log-likelihood (NLL) of the data. This script, for each toy density:

1. trains a CNF by maximum likelihood, once plain and once with the regularisers of
   Finlay et al. (2020), "How to train your neural ODE": the kinetic energy
   `int |f|^2 dt` and the Jacobian's squared Frobenius norm `int |df/dy|_F^2 dt`.
   They straighten the flow, so the solver needs fewer steps;
2. reports the held-out NLL (exact trace, dopri5 at `rtol = atol = 1e-5`), the
   function evaluations (NFE) that solver takes on the held-out data, and the
   training time;
3. draws the learned density as a heat map, samples from the model, and the
   transformation from noise to data at `t = 0, 0.25, 0.5, 0.75, 1` (the paper's
   Figure 6).

Then, as in the paper's Figure 4, it fits a planar normalizing flow (Rezende and
Mohamed 2015; K = 64 layers) and a CNF to the known density of `8gaussians` by
minimising the reverse KL divergence `KL(q || p) = E_q[log q(x) - log p(x)]`, which
needs only samples of the model with their log-density, and the target's log-density.

Run `python examples/cnf.py` (a few minutes on 2 CPU cores: `8gaussians` only, small
budget); `--datasets all` runs every density; the README gives the longer runs.

## Command line

Parsed before TensorFlow is imported (which takes seconds), so `--help` and a mistyped
flag answer at once; importing this file parses nothing. Every flag is a keyword of
`main`, below.
"""

import argparse
import functools
import json
import math
import os
import time

# `tfnode.data.TOY_DENSITIES`, spelled out so that `--help` needs no TensorFlow (the
# example's test checks that the two agree).
DATASETS = ("8gaussians", "moons", "checkerboard", "pinwheel", "rings")


def _parser():
    """The command line: one flag per keyword of `main`, with its default."""
    parser = argparse.ArgumentParser(
        description="Train continuous normalizing flows on the 2-D toy densities, "
        "with and without kinetic-energy and Jacobian regularisation; write density "
        "heat maps, samples, the noise-to-data transformation (Figure 6), a table of "
        "held-out NLL, NFE and training time, and the planar-flow comparison "
        "(Figure 4) to OUT_DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=(*DATASETS, "all"),
        default=("8gaussians",),
        metavar="NAME",
        help=f"toy densities to fit, from {', '.join(DATASETS)}; 'all' for every one",
    )
    parser.add_argument("--steps", type=int, default=500, help="training steps per CNF")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="samples per training batch"
    )
    parser.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=(64, 64, 64),
        metavar="UNITS",
        help="hidden layers of the CNF dynamics (FFJORD's concat-squash MLP)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="Adam's learning rate, decayed by cosine to 10%% of it",
    )
    parser.add_argument(
        "--trace",
        choices=("exact", "hutchinson"),
        default="exact",
        help="trace of df/dy in training: exact, or Hutchinson's estimator "
        "(evaluation always uses the exact trace)",
    )
    parser.add_argument(
        "--kinetic-energy",
        type=float,
        default=0.1,
        help="weight of the kinetic-energy regulariser in the regularised run "
        "(0 for both weights: no regularised run)",
    )
    parser.add_argument(
        "--jacobian-norm",
        type=float,
        default=0.1,
        help="weight of the Jacobian Frobenius-norm regulariser in the regularised run",
    )
    parser.add_argument(
        "--num-test",
        type=int,
        default=5000,
        help="held-out samples per data set for the NLL and NFE",
    )
    parser.add_argument(
        "--grid-size",
        type=int,
        default=100,
        help="heat maps evaluate the density on a GRID_SIZE x GRID_SIZE grid on "
        "[-4, 4]^2",
    )
    parser.add_argument(
        "--figure4",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit a planar flow and a CNF to the 8gaussians density by reverse "
        "KL (the paper's Figure 4)",
    )
    parser.add_argument(
        "--figure4-steps",
        type=int,
        default=300,
        help="reverse-KL training steps of each Figure 4 model",
    )
    parser.add_argument(
        "--figure4-learning-rate",
        type=float,
        default=1e-2,
        help="Adam's learning rate (constant) for both Figure 4 models",
    )
    parser.add_argument(
        "--planar-layers",
        type=int,
        default=64,
        help="K, the number of planar layers of the Figure 4 normalizing flow",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run every step eagerly: no graph tracing (about 20 s per model) but "
        "slower steps; for smoke tests",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data, the initial weights, the batches and the samples",
    )
    parser.add_argument(
        "--out-dir",
        default="results/cnf",
        help="where the figures, table.md and results.json go",
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
from tfnode.models import CNF  # noqa: E402

"""
## Setup

The plots cover `[-4, 4]^2`, where FFJORD draws these densities. Evaluation solves with
dopri5 at `rtol = atol = 1e-5` (FFJORD's tolerances, the CNF's defaults), whatever the
training used.
"""

EXTENT = 4.0
TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the columns of Figure 6
EVAL_TOL = 1e-5
EVAL_BATCH = 1000  # held-out points and grid points per solve
NUM_PLOT_SAMPLES = 5000
HISTOGRAM_BINS = 20  # per side, for data sets without a closed-form density
EIGHT_GAUSSIANS_ENTROPY = 2.83  # nats: the least NLL a model of 8gaussians can reach


def compiled(fn, eager, signature=None):
    """`fn` as a graph (`tf.function`), or itself with `eager`.

    AutoGraph is off: tfnode's solvers are already graph loops (`tf.while_loop`), and
    converting their source took most of the tracing time (about 10 s per function).
    """
    if eager:
        return fn
    # Wrapped in a `partial`, each graph counts apart in TensorFlow's retracing
    # statistics, which otherwise pool every function of the same source code (one
    # graph per model is intended here, not a retracing loop to warn about).
    return tf.function(
        functools.partial(fn), input_signature=signature, autograph=False
    )


"""
## Data and the known density

`tfnode.data.toy_density(name, n, seed)` draws FFJORD's toy densities. Training draws
`steps * batch_size` fresh samples, so no batch is seen twice; the held-out set comes
from another seed. `8gaussians` is the one density with a closed form: a mixture of 8
Gaussians whose entropy, 2.83 nats, is the best held-out NLL a model can reach. Figure
4's reverse-KL training differentiates it, so it is written here in TensorFlow as well
(`tfnode.data.eight_gaussians_log_prob` is numpy; the test checks they agree).
"""

EIGHT_STD = 0.5 / 1.414  # FFJORD's constants: std 0.5 and centres at radius 4,
EIGHT_RADIUS = 4.0 / 1.414  # then everything divided by 1.414


def eight_gaussians_log_prob(x):
    """`[B, 2] -> [B]`: the log-density of `8gaussians`, differentiable."""
    angles = np.arange(8) * np.pi / 4
    centres = EIGHT_RADIUS * np.stack([np.cos(angles), np.sin(angles)], -1)  # [8, 2]
    squared = tf.reduce_sum(
        tf.square(x[:, None, :] - tf.constant(centres, x.dtype)), -1
    )  # [B, 8]
    log_norm = math.log(8 * 2 * math.pi * EIGHT_STD**2)
    return tf.reduce_logsumexp(-squared / (2 * EIGHT_STD**2), -1) - log_norm


def grid(size):
    """The heat-map grid: `(x1, x2)` coordinates `[size, size]` each, and its points
    `[size * size, 2]`."""
    ticks = np.linspace(-EXTENT, EXTENT, size, dtype=np.float32)
    x1, x2 = np.meshgrid(ticks, ticks)
    return x1, x2, np.stack([x1.ravel(), x2.ravel()], -1)


def in_batches(fn, x):
    """`fn` applied to `x` in batches of `EVAL_BATCH`, concatenated (numpy)."""
    parts = [fn(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
    return np.concatenate([np.asarray(p) for p in parts])


"""
## Training by maximum likelihood

`CNF(2, ...)` defaults to FFJORD's dynamics (a concat-squash MLP, in which time gates
and shifts every hidden unit), dopri5 at `1e-5`, and adjoint gradients. Training runs
as 10 epochs of `steps // 10` batches (the data iterator carries on across epochs),
so that the callback can print each tenth's mean loss and NLL with the last batch's
forward and backward NFE. The loss is the NLL plus the weighted regularisers.

One detail saves time: Adam's slots are created before `fit`. Otherwise Keras creates
them inside the first traced step, and TensorFlow traces the whole solve, forward and
adjoint, a second time (in our runs the first step then took about twice as long).
"""


class Progress(keras.callbacks.Callback):
    """Prints each epoch's mean loss and NLL, and its last batch's NFE."""

    def __init__(self, steps_per_epoch):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(
            f"  steps {epoch * self.steps_per_epoch + 1:5d}-"
            f"{(epoch + 1) * self.steps_per_epoch:<5d}  loss {logs['loss']:.3f}  "
            f"nll {logs['nll']:.3f}  nfe {int(logs['nfe']):3d}  "
            f"backward nfe {int(logs.get('backward_nfe', 0)):3d}  "
            f"({time.perf_counter() - self.start:.0f} s)",
            flush=True,
        )


def train_cnf(
    x_train,
    *,
    steps,
    kinetic_energy,
    jacobian_norm,
    batch_size,
    hidden_units,
    learning_rate,
    trace,
    seed,
    eager,
):
    """Fits a CNF to batches of `x_train`, in 10 epochs of `steps // 10` steps.

    Returns:
        `(cnf, training seconds)`.
    """
    epochs = min(10, steps)
    keras.utils.set_random_seed(seed)
    cnf = CNF(
        2,
        trace=trace,
        hidden_units=hidden_units,
        kinetic_energy=kinetic_energy,
        jacobian_norm=jacobian_norm,
        seed=seed,
    )
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.1)
    cnf.compile(optimizer=keras.optimizers.Adam(schedule), run_eagerly=eager)
    cnf.build()
    cnf.optimizer.build(cnf.trainable_variables)
    start = time.perf_counter()
    cnf.fit(
        x_train,
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps // epochs,
        shuffle=False,  # fresh samples, already in random order
        verbose=0,
        callbacks=[Progress(steps // epochs)],
    )
    return cnf, time.perf_counter() - start


"""
## Evaluation

The held-out NLL comes from `cnf.log_prob(x, trace="exact")`, which for a model trained
with Hutchinson's estimator gives the exact density. The NFE is that of dopri5 at
`1e-5` carrying the held-out data to the base distribution, from
`tfnode.odeint(cnf.dynamics, x, [1, 0], return_stats=True)`; each batch of
`EVAL_BATCH` points is solved with shared steps, and we report the mean over batches.
"""


def evaluate(cnf, x_test, eager):
    """Returns `(held-out NLL, eval NFE)`."""
    spec = [tf.TensorSpec([None, 2], tf.float32)]
    log_prob = compiled(lambda x: cnf.log_prob(x, trace="exact"), eager, spec)

    def nfe(x):
        times = tf.constant(cnf.t[::-1])  # data (t = 1) to noise (t = 0)
        _, stats = tfnode.odeint(
            cnf.dynamics,
            x,
            times,
            method="dopri5",
            rtol=EVAL_TOL,
            atol=EVAL_TOL,
            return_stats=True,
        )
        return tf.reshape(stats.nfe, [1])

    nll = -float(np.mean(in_batches(log_prob, x_test)))
    nfes = in_batches(compiled(nfe, eager, spec), x_test)
    return nll, float(np.mean(nfes))


def density_at_times(cnf, points, eager):
    """The density `p_t` of the flow's state at each of `TIMES`, on `points`.

    `p_t` is the density of `y(t)` for `z ~ N(0, I)`: at `t = 0` the standard
    normal, and at `t > 0` the density of a CNF over `[0, t]` sharing `cnf`'s
    dynamics (its `log_prob` solves back from `t` to 0).

    Returns:
        `[len(TIMES), num_points]`.
    """
    densities = []
    for t in TIMES:
        if t == TIMES[0]:
            p = np.exp(-0.5 * np.sum(points**2, -1)) / (2 * np.pi)
        else:
            partial = CNF(2, cnf.dynamics, t=(TIMES[0], t), trace="exact")
            log_prob = compiled(
                partial.log_prob, eager, [tf.TensorSpec([None, 2], tf.float32)]
            )
            p = np.exp(in_batches(log_prob, points))
        densities.append(p)
    return np.stack(densities)


"""
## Figures

`{name}_density.png`: the data (the true density for `8gaussians`, a histogram of
held-out samples otherwise) and each model's learned density (`exp(log_prob)` on the
grid), above samples of each. `{name}_flow.png`: the paper's Figure 6 for each model,
the density `p_t` and the samples `y(t)` at `t = 0, 0.25, 0.5, 0.75, 1`, each sample
coloured by the angle of its base point `z`, so one can follow where the noise goes.
All heat maps of a figure share one colour scale.
"""


def _heat_map(ax, x1, x2, p, norm, title, shading="auto"):
    mesh = ax.pcolormesh(x1, x2, p, cmap="viridis", norm=norm, shading=shading)
    ax.set_facecolor(mesh.cmap(0.0))  # density 0 where a curved grid leaves gaps
    _square(ax, title)
    return mesh


def _square(ax, title):
    ax.set(xlim=(-EXTENT, EXTENT), ylim=(-EXTENT, EXTENT), xlabel="x1", ylabel="x2")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)


def _scatter(ax, x, title, **kwargs):
    kwargs = {"s": 1, "alpha": 0.5, "color": "tab:blue", **kwargs}
    points = ax.scatter(x[:, 0], x[:, 1], rasterized=True, linewidths=0, **kwargs)
    _square(ax, title)
    return points


def plot_densities(name, x_test, true_density, runs, grid_size, path):
    """Data and learned densities (top) and samples (bottom), one column each."""
    x1, x2, _ = grid(grid_size)
    if true_density is not None:
        data_p, data_title = true_density, f"{name}: true density"
    else:
        # Coarse bins, so that counting noise does not set the colour scale: of
        # 5,000 held-out points, a checkerboard bin holds about 25.
        edges = np.linspace(-EXTENT, EXTENT, HISTOGRAM_BINS + 1)
        hist, _, _ = np.histogram2d(
            x_test[:, 0], x_test[:, 1], bins=[edges, edges], density=True
        )
        # Normalised by all held-out points, some of which may fall off the grid.
        inside = np.all(np.abs(x_test) <= EXTENT, -1).mean()
        data_p, data_title = hist.T * inside, f"{name}: histogram of held-out data"
        x1, x2 = np.meshgrid(edges, edges)
    maps = [run["density"][-1].reshape(grid_size, grid_size) for run in runs]
    norm = Normalize(0.0, max(float(np.max(m)) for m in [data_p, *maps]))
    fig = Figure(figsize=(4 * (len(runs) + 1), 8.4), layout="constrained")
    axes = fig.subplots(2, len(runs) + 1, squeeze=False)
    mesh = _heat_map(axes[0, 0], x1, x2, data_p, norm, data_title)
    _scatter(axes[1, 0], x_test[:NUM_PLOT_SAMPLES], f"{name}: held-out samples")
    gx1, gx2, _ = grid(grid_size)
    for column, run in enumerate(runs, start=1):
        _heat_map(
            axes[0, column],
            gx1,
            gx2,
            maps[column - 1],
            norm,
            f"CNF, {run['title']}: learned density\nheld-out NLL {run['nll']:.3f} nats",
        )
        _scatter(
            axes[1, column],
            run["samples"],
            f"CNF, {run['title']}: samples",
            color="tab:red",
        )
    fig.colorbar(mesh, ax=axes[0], label="density p(x)", shrink=0.8)
    fig.suptitle(f"{name}: data and learned densities (top), samples (bottom)")
    fig.savefig(path, dpi=80)
    return fig


def plot_flow(name, runs, grid_size, path):
    """Figure 6: the density `p_t` (a row per model) above the samples `y(t)` (a row
    per model) at each of `TIMES`."""
    x1, x2, _ = grid(grid_size)
    norm = Normalize(0.0, max(float(np.max(run["density"])) for run in runs))
    fig = Figure(figsize=(3.2 * len(TIMES), 3.3 * 2 * len(runs)), layout="constrained")
    axes = fig.subplots(2 * len(runs), len(TIMES), squeeze=False)
    density_axes, sample_axes = axes[: len(runs)], axes[len(runs) :]
    for run, density_row, sample_row in zip(runs, density_axes, sample_axes):
        z = run["flow"][0]  # [N, 2]: the base samples
        angle = np.arctan2(z[:, 1], z[:, 0])
        for column, t in enumerate(TIMES):
            p = run["density"][column].reshape(grid_size, grid_size)
            title = f"{run['title']}, t = {t:g}"
            mesh = _heat_map(density_row[column], x1, x2, p, norm, title)
            points = _scatter(
                sample_row[column],
                run["flow"][column],
                title,
                c=angle,
                cmap="hsv",
                vmin=-np.pi,
                vmax=np.pi,
                color=None,
                alpha=0.6,
            )
    fig.colorbar(mesh, ax=density_axes, label="density p_t(x)", shrink=0.8)
    fig.colorbar(
        points, ax=sample_axes, label="angle of the base sample z (rad)", shrink=0.8
    )
    fig.suptitle(
        f"{name}: from noise (t = 0) to data (t = 1), as in Chen et al. (2018), Fig. 6."
        "\nTop: the density p_t of the flow's state. Bottom: samples y(t), coloured "
        "by the angle of their base point z = y(0)."
    )
    fig.savefig(path, dpi=70)
    return fig


"""
## Figure 4: a planar flow and a CNF matched to a known density

A planar flow (Rezende and Mohamed 2015) stacks `K` maps
`z -> z + u h(w^T z + b)`, `h = tanh`, each with log-determinant
`log |1 + u^T h'(w^T z + b) w|`. A map is invertible when `w^T u >= -1`; the
parameterisation `u_hat = u + (m(w^T u) - w^T u) w / |w|^2`, `m(a) = -1 + softplus(a)`,
makes `w^T u_hat = m(w^T u) > -1` for any `u`. The flow's density is known only at its
own samples (there is no closed-form inverse), which is all reverse-KL training needs:
`sample_and_log_prob` mirrors the CNF's method of the same name.
"""


@keras.saving.register_keras_serializable(package="examples")
class PlanarFlow(keras.Model):
    """`K` planar layers on `R^dim` over a standard normal base."""

    def __init__(self, dim=2, num_layers=64, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_layers, self.seed = dim, num_layers, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Pyro's `PlanarFlow` initialisation: every weight uniform on +-1/sqrt(dim),
        # each drawn apart (a seed generator, not one int seed for all three).
        scale = 1.0 / math.sqrt(dim)
        init = keras.initializers.RandomUniform(
            -scale, scale, seed=keras.random.SeedGenerator(seed)
        )
        self.u = self.add_weight(shape=(num_layers, dim), initializer=init, name="u")
        self.w = self.add_weight(shape=(num_layers, dim), initializer=init, name="w")
        self.b = self.add_weight(shape=(num_layers,), initializer=init, name="b")

    def u_hat(self):
        """`u` made invertible: `w_k^T u_hat_k > -1` for every layer. `[K, dim]`."""
        wu = tf.reduce_sum(self.w * self.u, -1, keepdims=True)  # [K, 1]
        squared = tf.reduce_sum(tf.square(self.w), -1, keepdims=True)
        return self.u + (tf.nn.softplus(wu) - 1.0 - wu) * self.w / squared

    def call(self, z):
        """`z [B, dim] -> (x [B, dim], log |det dx/dz| [B])`."""
        u_hat = self.u_hat()
        log_det = tf.zeros(tf.shape(z)[:1], z.dtype)
        for k in range(self.num_layers):
            h = tf.tanh(tf.linalg.matvec(z, self.w[k]) + self.b[k])  # [B]
            w_u = tf.reduce_sum(self.w[k] * u_hat[k])
            log_det += tf.math.log(tf.abs(1.0 + (1.0 - tf.square(h)) * w_u))
            z = z + h[:, None] * u_hat[k]
        return z, log_det

    def sample_and_log_prob(self, num_samples, seed=None):
        """`(x [num_samples, dim], log q(x) [num_samples])` from one draw of `z`."""
        z = keras.random.normal(
            (num_samples, self.dim), seed=self.seed_generator if seed is None else seed
        )
        x, log_det = self(z)
        log_base = -0.5 * tf.reduce_sum(tf.square(z), -1) - math.log(2 * math.pi)
        return x, log_base - log_det

    def get_config(self):
        config = {"dim": self.dim, "num_layers": self.num_layers, "seed": self.seed}
        return {**super().get_config(), **config}


"""
Both models train the same way: draw a batch with its log-density, and descend the
Monte Carlo estimate of `KL(q || p)`. The CNF's gradient comes from the adjoint method
through `sample_and_log_prob`'s one solve. Adam's learning rate is constant and the
same for both, 1e-2 by default: at 2e-3 the planar flow mostly collapsed onto a single
mode. Reverse KL is mode-seeking: a model that cannot spread its mass over all eight
modes drops some rather than covering the gaps.
"""


def fit_reverse_kl(model, log_p, *, steps, batch_size, learning_rate, eager, name):
    """Minimises `E_q[log q - log p]`; returns the training seconds."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)

    def step():
        with tf.GradientTape() as tape:
            x, log_q = model.sample_and_log_prob(batch_size)
            loss = tf.reduce_mean(log_q - log_p(x))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    step = compiled(step, eager)
    every = max(1, steps // 5)
    start = time.perf_counter()
    for i in range(1, steps + 1):
        loss = step()
        if i == 1 or i % every == 0 or i == steps:
            print(
                f"  {name} step {i:5d}/{steps}  KL estimate {float(loss):.3f}  "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return time.perf_counter() - start


def kl_estimate(model, log_p, num_samples, seed, eager):
    """`KL(q || p)` from `num_samples` fresh samples of `model`, and the samples."""
    draw = compiled(lambda: model.sample_and_log_prob(num_samples, seed=seed), eager)
    x, log_q = draw()
    return float(tf.reduce_mean(log_q - log_p(x))), np.asarray(x)


def planar_density(flow, size):
    """The planar flow's density on the image of a grid of base points:
    `(x1, x2, q)`, `[size, size]` each, for `pcolormesh`'s curved grids."""
    ticks = np.linspace(-1.3 * EXTENT, 1.3 * EXTENT, size, dtype=np.float32)
    z1, z2 = np.meshgrid(ticks, ticks)
    z = np.stack([z1.ravel(), z2.ravel()], -1)
    x, log_det = flow(tf.constant(z))
    q = np.exp(-0.5 * np.sum(z**2, -1) - np.log(2 * np.pi) - np.asarray(log_det))
    x = np.asarray(x)
    return x[:, 0].reshape(size, size), x[:, 1].reshape(size, size), q.reshape(size, -1)


def run_figure4(
    *,
    steps,
    batch_size,
    hidden_units,
    learning_rate,
    planar_layers,
    grid_size,
    seed,
    eager,
):
    """Fits a planar flow and a CNF to `8gaussians` by reverse KL; returns a dict of
    KL estimates, training seconds and what `plot_figure4` draws."""
    log_p = eight_gaussians_log_prob
    flow = PlanarFlow(2, planar_layers, seed=seed, name="planar_flow")
    flow_seconds = fit_reverse_kl(
        flow,
        log_p,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        eager=eager,
        name=f"planar flow (K = {planar_layers})",
    )
    keras.utils.set_random_seed(seed)
    cnf = CNF(2, trace="exact", hidden_units=hidden_units, seed=seed)
    cnf.build()
    cnf_seconds = fit_reverse_kl(
        cnf,
        log_p,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        eager=eager,
        name="CNF",
    )
    n = NUM_PLOT_SAMPLES
    flow_kl, flow_x = kl_estimate(flow, log_p, n, seed + 2, eager)
    cnf_kl, cnf_x = kl_estimate(cnf, log_p, n, seed + 2, eager)
    _, _, points = grid(grid_size)
    cnf_log_q = compiled(
        lambda x: cnf.log_prob(x, trace="exact"),
        eager,
        [tf.TensorSpec([None, 2], tf.float32)],
    )
    return {
        "kl": {"planar": flow_kl, "cnf": cnf_kl},
        "train_seconds": {"planar": flow_seconds, "cnf": cnf_seconds},
        "planar_layers": planar_layers,
        "target_density": np.exp(tfnode.data.eight_gaussians_log_prob(points)),
        "target_samples": tfnode.data.toy_density("8gaussians", n, seed=seed + 3),
        "planar_density": planar_density(flow, grid_size),
        "planar_samples": flow_x,
        "cnf_density": np.exp(in_batches(cnf_log_q, points)),
        "cnf_samples": cnf_x,
    }


def plot_figure4(result, grid_size, path):
    """Target, planar flow and CNF: densities (top) and samples (bottom).

    Each heat map is scaled to its own maximum: a model that drops modes piles its
    mass on the others, and on the target's scale would show only saturated blobs.
    """
    x1, x2, _ = grid(grid_size)
    shape = (grid_size, grid_size)
    kl = result["kl"]
    k = result["planar_layers"]
    densities = [  # (grid and density, panel title, shading)
        (
            (x1, x2, result["target_density"].reshape(shape)),
            "target: 8gaussians density",
            "auto",
        ),
        (
            result["planar_density"],  # on a curved grid: Gouraud shading takes it
            f"planar flow, K = {k}: density\nKL(q || p) = {kl['planar']:.3f} nats",
            "gouraud",
        ),
        (
            (x1, x2, result["cnf_density"].reshape(shape)),
            f"CNF: density\nKL(q || p) = {kl['cnf']:.3f} nats",
            "auto",
        ),
    ]
    fig = Figure(figsize=(12, 8.4), layout="constrained")
    axes = fig.subplots(2, 3)
    for ax, ((g1, g2, p), title, shading) in zip(axes[0], densities):
        norm = Normalize(0.0, 1.0)
        mesh = _heat_map(ax, g1, g2, p / np.max(p), norm, title, shading)
    _scatter(axes[1, 0], result["target_samples"], "target: samples")
    _scatter(
        axes[1, 1],
        result["planar_samples"],
        f"planar flow, K = {k}: samples",
        color="tab:red",
    )
    _scatter(axes[1, 2], result["cnf_samples"], "CNF: samples", color="tab:red")
    fig.colorbar(mesh, ax=axes[0], label="density / the panel's maximum", shrink=0.8)
    fig.suptitle(
        "Fitting a known density by reverse KL, as in Chen et al. (2018), Fig. 4"
    )
    fig.savefig(path, dpi=80)
    return fig


"""
## The table and the whole run
"""


def format_table(rows):
    lines = [
        "| data set | regularised | held-out NLL (nats) | eval NFE | train time |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['label']} | {row['nll']:.3f} | "
            f"{row['nfe']:.0f} | {row['train_seconds']:.0f} s |"
        )
    notes = [
        "",
        "NLL: exact trace, dopri5 at rtol = atol = 1e-5. Eval NFE: dopri5 at 1e-5 "
        f"from data to noise, mean over batches of {EVAL_BATCH} held-out points.",
    ]
    if any(row["dataset"] == "8gaussians" for row in rows):
        notes.append(
            f"The entropy of 8gaussians, the least NLL possible, is "
            f"{EIGHT_GAUSSIANS_ENTROPY} nats."
        )
    return "\n".join(lines + notes)


def main(
    *,
    datasets=("8gaussians",),
    steps=500,
    batch_size=256,
    hidden_units=(64, 64, 64),
    learning_rate=2e-3,
    trace="exact",
    kinetic_energy=0.1,
    jacobian_norm=0.1,
    num_test=5000,
    grid_size=100,
    figure4=True,
    figure4_steps=300,
    figure4_learning_rate=1e-2,
    planar_layers=64,
    eager=False,
    seed=0,
    out_dir="results/cnf",
):
    """Trains the CNFs, writes the figures and the table; returns the results.

    Args:
        datasets: Names from `tfnode.data.TOY_DENSITIES`, or `("all",)`.
        steps: Training steps per CNF.
        batch_size: Samples per training batch (and per Figure 4 batch).
        hidden_units: Hidden layers of the CNF dynamics.
        learning_rate: Adam's learning rate, decayed by cosine to 10% of it.
        trace: `"exact"` or `"hutchinson"`, the trace used in training.
        kinetic_energy: Weight of the kinetic-energy regulariser in the regularised
            run.
        jacobian_norm: Weight of the Jacobian-norm regulariser in the regularised
            run. With both weights 0 there is no regularised run.
        num_test: Held-out samples per data set.
        grid_size: Points per side of the heat maps' grid.
        figure4: Whether to run the reverse-KL comparison (Figure 4).
        figure4_steps: Training steps of each Figure 4 model.
        figure4_learning_rate: Adam's learning rate (constant) in Figure 4.
        planar_layers: `K`, the planar flow's number of layers.
        eager: Whether to run every step eagerly (no tracing; for smoke tests).
        seed: Seed of the data, the weights, the batches and the samples.
        out_dir: Where the figures, `table.md` and `results.json` go.

    Returns:
        A dict: the table's `rows`, the Figure 4 `kl` estimates and training
        seconds (if run), and the file names of the figures.
    """
    datasets = DATASETS if "all" in datasets else tuple(datasets)
    hidden_units = tuple(hidden_units)
    os.makedirs(out_dir, exist_ok=True)
    variants = [("no", 0.0, 0.0)]
    if kinetic_energy or jacobian_norm:
        weights = f"KE {kinetic_energy:g}, JF {jacobian_norm:g}"
        variants.append((weights, kinetic_energy, jacobian_norm))
    _, _, points = grid(grid_size)
    rows, figures = [], []
    for name in datasets:
        x_train = tfnode.data.toy_density(name, steps * batch_size, seed=seed)
        x_test = tfnode.data.toy_density(name, num_test, seed=seed + 1)
        runs = []
        for label, ke, jf in variants:
            print(f"\n{name}, regularised: {label} ({steps} steps)", flush=True)
            cnf, seconds = train_cnf(
                x_train,
                steps=steps,
                kinetic_energy=ke,
                jacobian_norm=jf,
                batch_size=batch_size,
                hidden_units=hidden_units,
                learning_rate=learning_rate,
                trace=trace,
                seed=seed,
                eager=eager,
            )
            nll, nfe = evaluate(cnf, x_test, eager)
            print(f"  held-out NLL {nll:.3f} nats, eval NFE {nfe:.0f}", flush=True)
            z = keras.random.normal((NUM_PLOT_SAMPLES, 2), seed=seed + 2)
            flow = compiled(lambda z, cnf=cnf: cnf.transform(z, TIMES), eager)(z)
            row = dict(
                dataset=name, label=label, nll=nll, nfe=nfe, train_seconds=seconds
            )
            rows.append(row)
            runs.append(
                {
                    **row,
                    "title": "unregularised"
                    if label == "no"
                    else f"regularised ({label})",
                    "flow": np.asarray(flow),  # [T, N, 2]; flow[-1]: the samples
                    "samples": np.asarray(flow[-1]),
                    "density": density_at_times(cnf, points, eager),  # [T, G]
                }
            )
        true_density = None
        if name == "8gaussians":
            true_density = np.exp(tfnode.data.eight_gaussians_log_prob(points))
            true_density = true_density.reshape(grid_size, grid_size)
        density_png, flow_png = f"{name}_density.png", f"{name}_flow.png"
        plot_densities(
            name,
            x_test,
            true_density,
            runs,
            grid_size,
            os.path.join(out_dir, density_png),
        )
        plot_flow(name, runs, grid_size, os.path.join(out_dir, flow_png))
        figures += [density_png, flow_png]

    results = {"rows": rows, "figures": figures}
    if figure4:
        print(f"\nFigure 4: reverse KL to 8gaussians ({figure4_steps} steps each)")
        result = run_figure4(
            steps=figure4_steps,
            batch_size=batch_size,
            hidden_units=hidden_units,
            learning_rate=figure4_learning_rate,
            planar_layers=planar_layers,
            grid_size=grid_size,
            seed=seed,
            eager=eager,
        )
        plot_figure4(result, grid_size, os.path.join(out_dir, "figure4.png"))
        figures.append("figure4.png")
        results["kl"] = result["kl"]
        results["figure4_train_seconds"] = result["train_seconds"]

    table = format_table(rows)
    print("\n" + table)
    if figure4:
        kl = results["kl"]
        print(
            f"\nFigure 4, KL(q || p) to 8gaussians from {NUM_PLOT_SAMPLES} samples: "
            f"planar flow (K = {planar_layers}) {kl['planar']:.3f} nats, "
            f"CNF {kl['cnf']:.3f} nats"
        )
        table += (
            f"\n\nFigure 4: KL(q || p) to 8gaussians, planar flow (K = "
            f"{planar_layers}) {kl['planar']:.3f} nats, CNF {kl['cnf']:.3f} nats."
        )
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"Figures and tables in {out_dir}/")
    return results


if __name__ == "__main__":
    main(**vars(_ARGS))
