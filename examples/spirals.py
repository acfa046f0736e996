"""
Title: Latent ODE on irregularly sampled spirals
Description: Train the latent ODE of Chen et al. (2018, §5) and an RNN baseline on noisy
spirals observed at irregular times; compare how well they extrapolate.
Accelerator: None

## Introduction

A latent ODE is a variational autoencoder for time series. A GRU reads the observations
`(x_i, t_i - t_(i-1))` backwards in time and outputs a Gaussian posterior over the
latent initial state `z(t0)`; an ODE solver carries `z(t0)` through every observation
time, and an MLP maps each `z(t_i)` back to data space. Because the decoder is a
continuous-time flow, the model reads irregularly spaced observations and predicts at
any time, in particular past the observed window.

The baseline keeps the encoder and the loss but decodes with a GRU fed the time gaps, as
in the paper's Table 2. Both are trained on 100-point windows thinned to 30, 50 or 100
random observations; on held-out spirals we observe 30, 50 or 100 of the first 100
points and report the RMSE of the next 100 points against the noiseless trajectory.

Run `python examples/spirals.py` (a few minutes on 2 CPU cores) or `--full` for the long
run. `--data notebook` switches from the paper's spirals to the reference notebook's
random linear spirals; `--data torchdiffeq` uses the curves of the authors' code.

## Command line

Parsed before TensorFlow is imported (which takes seconds), so `--help` and a mistyped
flag answer at once; importing this file parses nothing. Every flag is a keyword of
`main`, below.
"""

import argparse
import json
import os
import time


def _parser():
    """The command line: one flag per keyword of `main`, with its default."""
    parser = argparse.ArgumentParser(
        description="Train the latent ODE of Chen et al. (2018, section 5) and an RNN "
        "baseline on noisy spirals observed at irregular times; compare how well they "
        "extrapolate. Figures and tables go to OUT_DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        choices=("paper", "torchdiffeq", "notebook"),
        default="paper",
        help="the paper's spirals, the curves of the authors' code, or the reference "
        "notebook's random linear spirals",
    )
    parser.add_argument(
        "--num-spirals", type=int, default=1000, help="training spirals"
    )
    parser.add_argument(
        "--num-test", type=int, default=100, help="held-out spirals for the RMSE table"
    )
    # Without the flag, `main`'s default (None) applies, as the help says.
    parser.add_argument(
        "--steps",
        type=int,
        default=argparse.SUPPRESS,
        help="training steps per model (default: 1500, or 25000 with --full)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=argparse.SUPPRESS,
        help="spirals per training batch (default: 200, or 300 with --full)",
    )
    parser.add_argument(
        "--num-observations",
        type=int,
        nargs="+",
        default=(30, 50, 100),
        metavar="N",
        help="observation counts of the training batches, one drawn per batch",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.01,
        help="Adam's learning rate, decayed by cosine to 5%% of it",
    )
    parser.add_argument(
        "--global-clipnorm",
        type=float,
        default=10.0,
        help="clip each batch's gradients to this global norm; 0: no clipping",
    )
    parser.add_argument(
        "--adjoint",
        action="store_true",
        help="train the latent ODE with adjoint gradients instead of backprop "
        "through the solver",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the long run: 25000 steps, batches of 300",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data, the initial weights and the batches",
    )
    parser.add_argument(
        "--out-dir",
        default="results/spirals",
        help="where the figures, rmse.txt and results.json go",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras fit verbosity (0: silent, 1: progress bars, 2: one line per epoch)",
    )
    return parser


if __name__ == "__main__":
    _ARGS = _parser().parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tfnode.data import spirals  # noqa: E402
from tfnode.models.ode_vae import ODEVAE  # noqa: E402
from tfnode.models.rnn_baseline import RNNVAE  # noqa: E402

"""
## Setup

The observation counts of the paper's Table 2, and its numbers.
"""

OBSERVATION_COUNTS = (30, 50, 100)
# Chen et al. (2018), Table 2:
# predictive RMSE at 30/100, 50/100 and 100/100 observations.
PAPER_RMSE = {
    "latent_ode": {30: 0.1642, 50: 0.1502, 100: 0.1346},
    "rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813},
}
NAMES = {"latent_ode": "latent ODE", "rnn": "RNN"}
# Adam clips the global gradient norm of each batch to this, so that one batch with a
# huge gradient cannot swamp Adam's running moments: with tfnode's current controller
# gains and no clipping, one 25,000-step run diverged at step 24,206 (a batch loss of
# ~1e17, then NaN weights); with clipping, runs with seeds 0 and 1 finished.
GLOBAL_CLIPNORM = 10.0

"""
## Data

`paper`: the paper's Archimedean spirals with its authors' code's constants (two
reference curves, mirror images about `(-5, 0)` and `(5, 0)`, noise std 0.3), each a
200-point window: 100 points to observe, 100 to predict. `torchdiffeq`: the same, but
with the clockwise curve that code actually draws (hyperbolic: its radius runs from 0.8
to 15, hard to extrapolate). `notebook`: random stable linear spirals over `[0, 31.45]`,
noise std 0.02. Training batches take a random 100-point sub-span of each training
spiral and keep 30, 50 or 100 random points of it, so every sequence has its own times.
"""


def make_data(kind, num_spirals, num_test, seed):
    make = {
        "paper": spirals.paper_spirals,
        "torchdiffeq": lambda n, seed: spirals.paper_spirals(
            n, clockwise_curve="hyperbolic", seed=seed
        ),
        "notebook": spirals.linear_spirals,
    }[kind]
    return make(num_spirals, seed=seed), make(num_test, seed=seed + 1)


"""
## Models

The paper's sizes: a 4-d latent state, dynamics with two hidden layers of 20 units, a
25-unit GRU encoder and a 20-unit readout. The notebook's spirals vary more (every
spiral has its own dynamics), so that setting gets the notebook's larger sizes.
"""


def make_models(kind, noise_std, seed, adjoint):
    if kind != "notebook":
        sizes = dict(latent_dim=4, encoder_units=25, decoder_units=(20,))
        ode_units, rnn_units = (20, 20), 25
    else:
        sizes = dict(latent_dim=6, encoder_units=64, decoder_units=(64,))
        ode_units, rnn_units = (64, 64), 64
    return {
        "latent_ode": ODEVAE(
            2,
            hidden_units=ode_units,
            noise_std=noise_std,
            adjoint=adjoint,
            seed=seed,
            name="latent_ode",
            **sizes,
        ),
        "rnn": RNNVAE(
            2,
            hidden_units=rnn_units,
            noise_std=noise_std,
            seed=seed,
            name="rnn",
            **sizes,
        ),
    }


"""
## Evaluation: extrapolation RMSE

Each test spiral shows the model `n` random points of its first 100; the model encodes
them and predicts the next 100 points, compared with the noiseless trajectory.
"""


def extrapolation_rmse(model, test, seed):
    extrapolate = tf.function(model.extrapolate, reduce_retracing=True)
    rmse = {}
    for n in OBSERVATION_COUNTS:
        split = spirals.extrapolation_split(test, num_observations=n, seed=seed)
        pred = extrapolate(split.x_seed, split.t_seed, split.t_future).numpy()
        rmse[n] = float(np.sqrt(np.mean((pred - split.x_future) ** 2)))
    return rmse


def format_table(rmse, kind, num_test):
    lines = [
        f"Extrapolation RMSE, {num_test} test spirals ({kind} data): "
        "n of the first 100 points observed, the next 100 predicted",
        f"{'observed':>9} {'latent ODE':>11} {'RNN':>8}   | paper Table 2: "
        f"{'latent ODE':>10} {'RNN':>7}",
    ]
    for n in OBSERVATION_COUNTS:
        lines.append(
            f"{f'{n}/100':>9} {rmse['latent_ode'][n]:11.4f} {rmse['rnn'][n]:8.4f}   | "
            f"{'':15}{PAPER_RMSE['latent_ode'][n]:10.4f} {PAPER_RMSE['rnn'][n]:7.4f}"
        )
    return "\n".join(lines)


"""
## Figures

A 3x3 grid of test spirals: the observations (30 of the first 100 points, coloured by
time on one scale for all panels), the true trajectory, the latent ODE's reconstruction
(solid) and extrapolation (dashed), and the RNN's extrapolation (dotted); each panel's
title gives both models' extrapolation RMSE against the noiseless trajectory. Then the
latent interpolation: decode `(1 - a) z_cw + a z_ccw` between the posterior means of a
clockwise and a counter-clockwise spiral, coloured by time. Both functions return the
figure (no pyplot: nothing is displayed).
"""


def plot_grid(models, test, path, seed):
    split = spirals.extrapolation_split(test, num_observations=30, seed=seed)
    count = min(9, len(test.x))
    x_seed, t_seed = split.x_seed[:count], split.t_seed[:count]
    t_end = float(test.t[-1])
    # One dense grid per spiral, from its first observation to the end.
    dense = np.linspace(t_seed[:, 0], t_end, 300, axis=1).astype(np.float32)
    ode = np.asarray(models["latent_ode"].reconstruct(x_seed, t_seed, dense))
    # Both models' predictions at the future observation times, for the RMSE.
    future = {
        key: np.asarray(model.extrapolate(x_seed, t_seed, split.t_future[:count]))
        for key, model in models.items()
    }
    rmse = {
        key: np.sqrt(np.mean((pred - split.x_future[:count]) ** 2, axis=(1, 2)))
        for key, pred in future.items()
    }  # [count] each
    boundary = float(test.t[99])
    fig = Figure(figsize=(13, 12), layout="constrained")
    axes = fig.subplots(3, 3)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.axis("off")
            continue
        ax.plot(*test.x_true[i].T, color="0.6", lw=1, label="true trajectory")
        points = ax.scatter(
            *x_seed[i].T,
            c=t_seed[i],
            cmap="plasma",
            vmin=0.0,
            vmax=boundary,
            s=14,
            zorder=3,
            label="observations (30 of the first 100)",
        )
        seen = dense[i] <= boundary
        ax.plot(
            *ode[i][seen].T,
            color="tab:blue",
            lw=1.8,
            label="latent ODE reconstruction",
        )
        ax.plot(
            *ode[i][~seen].T,
            color="tab:blue",
            lw=1.8,
            ls="--",
            label="latent ODE extrapolation",
        )
        ax.plot(
            *future["rnn"][i].T,
            color="tab:red",
            lw=1.2,
            ls=":",
            label="RNN extrapolation",
        )
        direction = "clockwise" if test.clockwise[i] else "counter-clockwise"
        ax.set_title(
            f"{direction}\nnext 100 points, RMSE vs truth: "
            f"ODE {rmse['latent_ode'][i]:.2f}, RNN {rmse['rnn'][i]:.2f}",
            fontsize=9,
        )
        ax.set(xlabel="x", ylabel="y")
        ax.set_aspect("equal", adjustable="datalim")
    # The same five series in every panel: one legend for the figure.
    fig.legend(
        *axes.flat[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=5,
        fontsize=9,
    )
    fig.colorbar(points, ax=axes, label="t (time of the observation)", shrink=0.6)
    fig.suptitle(
        "Test spirals: 30 of the first 100 points observed, the next 100 predicted"
    )
    fig.savefig(path, dpi=90)
    return fig


def plot_interpolation(model, test, path):
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    first_cw = int(np.argmax(test.clockwise))
    first_ccw = int(np.argmax(~test.clockwise))
    t_seed = test.t[:100]
    z_mean, _ = model.encode(test.x[[first_cw, first_ccw], :100], t_seed)
    alpha = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
    z0 = (1 - alpha) * z_mean[0] + alpha * z_mean[1]
    t = np.linspace(0.0, float(test.t[-1]), 300, dtype=np.float32)
    paths = np.asarray(model.decode(z0, t))  # [10, 300, 2]
    norm = Normalize(0.0, float(t[-1]))
    fig = Figure(figsize=(16, 6.5), layout="constrained")
    axes = fig.subplots(2, 5)
    for a, path_i, ax in zip(alpha[:, 0], paths, axes.flat):
        # The path as segments coloured by the time at their start.
        segments = np.stack([path_i[:-1], path_i[1:]], axis=1)  # [299, 2, 2]
        lines = LineCollection(segments, array=t[:-1], cmap="viridis", norm=norm)
        ax.add_collection(lines)
        ax.plot(*path_i[0], "o", color="black", ms=4, label="t = 0")
        ax.autoscale()
        ax.set_title(f"a = {a:.2f}", fontsize=10)
        ax.set(xlabel="x", ylabel="y")
        ax.set_aspect("equal", adjustable="datalim")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center")
    fig.colorbar(lines, ax=axes, label="t (decoded time)", shrink=0.8)
    fig.suptitle(
        "Decoding (1 - a) z(clockwise) + a z(counter-clockwise), "
        "z the posterior means of two test spirals"
    )
    fig.savefig(path, dpi=90)
    return fig


"""
## Training and the whole run
"""


def main(
    *,
    data="paper",
    num_spirals=1000,
    num_test=100,
    steps=None,
    batch_size=None,
    num_observations=OBSERVATION_COUNTS,
    learning_rate=0.01,
    global_clipnorm=GLOBAL_CLIPNORM,
    adjoint=False,
    full=False,
    seed=0,
    out_dir="results/spirals",
    verbose=1,
):
    """Trains both models, writes the figures and returns the RMSE table.

    Args:
        data: `"paper"`, `"torchdiffeq"` or `"notebook"` spirals.
        num_spirals: Training spirals.
        num_test: Held-out spirals for the RMSE table.
        steps: Training steps per model. Defaults to `1500`, or `25000` with `full`.
        batch_size: Spirals per training batch. Defaults to `200`, or `300` with
            `full`.
        num_observations: Observation counts of the training batches (one drawn
            per batch from these).
        learning_rate: Adam's learning rate (decayed by cosine to 5% of it).
        global_clipnorm: Adam clips each batch's gradients to this global norm
            (`None` or 0: no clipping). Defaults to `GLOBAL_CLIPNORM` (10).
        adjoint: Whether the latent ODE trains with adjoint gradients.
        full: The long run.
        seed: Seed of the data, the initial weights and the batches.
        out_dir: Where the figures and `results.json` go.
        verbose: Keras `fit` verbosity (1: progress bars).

    Returns:
        A dict: `rmse[model][n]`, the paper's values under `paper`, and the
        training seconds per model.
    """
    steps = steps or (25000 if full else 1500)
    batch_size = batch_size or (300 if full else 200)
    os.makedirs(out_dir, exist_ok=True)
    train, test = make_data(data, num_spirals, num_test, seed)
    noise_std = spirals.NOTEBOOK_NOISE_STD if data == "notebook" else 0.3
    dataset = spirals.spiral_dataset(
        train,
        batch_size=min(batch_size, num_spirals),
        num_observations=tuple(num_observations),
        seed=seed,
    )
    keras.utils.set_random_seed(seed)
    models = make_models(data, noise_std, seed, adjoint)
    steps_per_epoch = min(steps, 100)
    rmse, seconds = {}, {}
    for key, model in models.items():
        print(
            f"\nTraining the {NAMES[key]} "
            f"({model.count_params()} weights, {steps} steps)"
        )
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, steps, alpha=0.05
        )
        optimizer = keras.optimizers.Adam(
            schedule, global_clipnorm=global_clipnorm or None
        )
        model.compile(optimizer=optimizer)
        start = time.perf_counter()
        model.fit(
            dataset,
            epochs=-(-steps // steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # the dataset draws its own random batches
            verbose=verbose,
        )
        seconds[key] = time.perf_counter() - start
        rmse[key] = extrapolation_rmse(model, test, seed)

    table = format_table(rmse, data, num_test)
    print("\n" + table)
    print(
        "Training time: "
        + ", ".join(f"{NAMES[k]} {v:.0f} s" for k, v in seconds.items())
    )
    plot_grid(models, test, os.path.join(out_dir, "extrapolation_grid.png"), seed)
    plot_interpolation(
        models["latent_ode"], test, os.path.join(out_dir, "interpolation.png")
    )
    results = {
        "rmse": rmse,
        "paper": PAPER_RMSE,
        "train_seconds": seconds,
        "data": data,
        "steps": steps,
        "batch_size": batch_size,
    }
    with open(os.path.join(out_dir, "rmse.txt"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"Figures and tables in {out_dir}/")
    return results


if __name__ == "__main__":
    main(**vars(_ARGS))
