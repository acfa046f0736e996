"""
Title: Training a Neural ODE on several workers
Author: tfnode contributors
Description: Train a `NeuralODELayer` on several workers with a custom training loop.
Accelerator: None

## Introduction

`tf.distribute.MultiWorkerMirroredStrategy` runs one copy of the training step
per device on every worker (process or host) and sums the gradients across all
of them with collective all-reduce, so every worker ends each step with the
same weights. A `tfnode.NeuralODELayer` works inside it like any Keras layer:
each replica solves the ODE for its share of the batch, forward and (with the
adjoint) backward, and only the gradients travel.

Keras 3.15's `model.fit` fails under this strategy even for a plain `Dense`
model (keras-team/keras#20585), so this example trains with a custom loop:
`strategy.run(step_fn, ...)` inside a `tf.function`, with the loss scaled by
the *global* batch size so that the summed gradients equal the single-process
ones.

The task: learn the time-1 flow map of the linear spiral
`dz/dt = [[-0.1, -1], [1, -0.1]] z` from pairs `(z(0), z(1))`, with a
`tfnode.MLPODEFunc`. Every worker builds the same data and the same initial
weights from `seed`, takes its slice of each global batch, and at the end
writes its initial and final weights to `out_dir/weights_worker{index}.npz`.

### Running it

Each worker reads its role from the `TF_CONFIG` environment variable. Without
it, the script trains in a single process (one worker, all local devices).
Two workers on this machine:

```
TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
            "task": {"type": "worker", "index": 0}}' python examples/multi_worker.py &
TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
            "task": {"type": "worker", "index": 1}}' python examples/multi_worker.py
```

On several GPU hosts, list every host's `address:port` in the same order in
every worker's `TF_CONFIG` and give each its own `index`; each worker then
mirrors the step over its local GPUs as well. Worker 0 is the chief. Start-up
waits until every worker has joined.

## Setup

The command line is parsed before TensorFlow is imported (which takes seconds), so
`--help` and a mistyped flag answer at once; importing this file parses nothing. Every
flag is a keyword of `main`, below.
"""

import argparse
import json
import os


def _parser():
    """The command line: one flag per keyword of `main`, with its default."""
    parser = argparse.ArgumentParser(
        description="Train a tfnode.NeuralODELayer on several workers with "
        "tf.distribute.MultiWorkerMirroredStrategy and a custom training loop. Each "
        "worker reads its role from the TF_CONFIG environment variable; without it, "
        "one process trains alone.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=5, help="training steps")
    parser.add_argument(
        "--global-batch-size",
        type=int,
        default=16,
        help="examples per step over all replicas of all workers (a multiple of "
        "their number)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=0.1, help="SGD learning rate"
    )
    parser.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=(16,),
        metavar="UNITS",
        help="hidden layer sizes of the MLP dynamics",
    )
    parser.add_argument(
        "--adjoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gradients by the adjoint method; --no-adjoint backprops through the "
        "solver",
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-5, help="relative tolerance of the solver"
    )
    parser.add_argument(
        "--atol", type=float, default=1e-6, help="absolute tolerance of the solver"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and the initial weights (the same on every worker)",
    )
    parser.add_argument(
        "--out-dir",
        default="results/multi_worker",
        help="where each worker writes weights_worker{index}.npz",
    )
    return parser


if __name__ == "__main__":
    _ARGS = _parser().parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF's start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfnode  # noqa: E402

"""
## Data

Pairs `(z(0), z(1))` of the linear spiral, from its closed-form flow map
`exp(A) = e^-0.1 [[cos 1, -sin 1], [sin 1, cos 1]]`: no solver is involved in
making the targets. The same seed gives every worker the same data.
"""


def make_data(num_examples, seed):
    """Returns `(z0, z1)`, float32 arrays of shape `[num_examples, 2]`."""
    rng = np.random.default_rng(seed)
    z0 = rng.normal(size=(num_examples, 2))
    c, s = np.cos(1.0), np.sin(1.0)
    flow = np.exp(-0.1) * np.array([[c, -s], [s, c]])
    z1 = z0 @ flow.T
    return z0.astype(np.float32), z1.astype(np.float32)


"""
## Model

The model is created inside `strategy.scope()`, which makes every variable a
mirrored variable (one copy per replica, kept in sync). So is the optimizer,
whose variables are built up front, outside the training step.
"""


def make_model(*, hidden_units, adjoint, rtol, atol):
    inputs = keras.Input((2,))
    func = tfnode.MLPODEFunc(hidden_units=hidden_units, name="func")
    ode = tfnode.NeuralODELayer(func, adjoint=adjoint, rtol=rtol, atol=atol, name="ode")
    return keras.Model(inputs, ode(inputs))


"""
## Training step

`strategy.run` calls `step_fn` once per replica on its slice of the batch.
`tf.nn.compute_average_loss` divides by the global batch size, and the Keras
optimizer all-reduces (sums) the gradients across replicas before applying
them, so the update equals that of one process on the whole batch.
"""


def make_train_step(strategy, model, optimizer, global_batch_size):
    @tf.function
    def train_step(z0, z1):
        def step_fn(z0, z1):
            with tf.GradientTape() as tape:
                pred = model(z0, training=True)
                per_example = tf.reduce_mean(tf.square(pred - z1), axis=-1)
                loss = tf.nn.compute_average_loss(
                    per_example, global_batch_size=global_batch_size
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        per_replica_loss = strategy.run(step_fn, args=(z0, z1))
        return strategy.reduce("SUM", per_replica_loss, axis=None)

    return train_step


def distribute_batch(strategy, z0, z1, global_batch_size):
    """Gives replica `i` (numbered across all workers) rows `[i * n, (i + 1) * n)`
    of the global batch, `n = global_batch_size / num_replicas`."""
    per_replica = global_batch_size // strategy.num_replicas_in_sync

    def value_fn(context):
        start = context.replica_id_in_sync_group * per_replica
        return (
            tf.constant(z0[start : start + per_replica]),
            tf.constant(z1[start : start + per_replica]),
        )

    values = strategy.experimental_distribute_values_from_function(value_fn)
    return values[0], values[1]


"""
## Main
"""


def main(
    *,
    steps=5,
    global_batch_size=16,
    learning_rate=0.1,
    hidden_units=(16,),
    adjoint=True,
    rtol=1e-5,
    atol=1e-6,
    seed=0,
    out_dir="results/multi_worker",
):
    """Trains for `steps` steps; returns the path of this worker's weights file."""
    # The strategy reads TF_CONFIG and must exist before any other TF op.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    index = int(task.get("index", 0))
    print(f"worker {index}: {strategy.num_replicas_in_sync} replica(s) in sync")
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"`global_batch_size` must be a multiple of the number of replicas "
            f"({strategy.num_replicas_in_sync}). Received: {global_batch_size}"
        )

    keras.utils.set_random_seed(seed)  # the same initial weights on every worker
    z0, z1 = make_data(steps * global_batch_size, seed)
    with strategy.scope():
        model = make_model(
            hidden_units=tuple(hidden_units), adjoint=adjoint, rtol=rtol, atol=atol
        )
        optimizer = keras.optimizers.SGD(learning_rate)
        optimizer.build(model.trainable_variables)
    train_step = make_train_step(strategy, model, optimizer, global_batch_size)

    initial = {f"initial/{w.path}": np.asarray(w) for w in model.trainable_weights}
    ode = model.get_layer("ode")
    for step in range(steps):
        batch = slice(step * global_batch_size, (step + 1) * global_batch_size)
        loss = train_step(
            *distribute_batch(strategy, z0[batch], z1[batch], global_batch_size)
        )
        print(
            f"worker {index} step {step}: loss {float(loss):.6f}, "
            f"nfe {int(ode.nfe.result())}"
            + (f", backward nfe {int(ode.backward_nfe.result())}" if adjoint else "")
        )

    # Every worker holds the same weights; each writes its own copy (on
    # several hosts, each to its local disk).
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"weights_worker{index}.npz")
    final = {f"final/{w.path}": np.asarray(w) for w in model.trainable_weights}
    np.savez(path, **initial, **final)
    print(f"worker {index}: weights written to {path}")
    return path


if __name__ == "__main__":
    main(**vars(_ARGS))
