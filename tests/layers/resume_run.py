"""Trains a small `NeuralODELayer` model with `keras.callbacks.BackupAndRestore`,
optionally killing its own process (SIGKILL, no clean-up) after an epoch.

`test_resume.py` runs it in-process without a kill (the reference) and as a
subprocess that is killed and then restarted. Usage:
`python resume_run.py BACKUP_DIR EPOCHS KILL_AFTER OUT.npz EPOCH_LOG`
(`KILL_AFTER` 0: no kill).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

BATCH, SAMPLES = 8, 32


def train(backup_dir, epochs, *, kill_after=0, epoch_log=None):
    """Returns the trained weights (the model's, then the optimizer's)."""
    import keras

    import tfnode

    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 2)).astype("float32")
    y = np.sin(x).sum(1, keepdims=True).astype("float32")

    inputs = keras.Input((2,))
    ode = tfnode.NeuralODELayer(tfnode.MLPODEFunc(hidden_units=(8,)), name="ode")
    model = keras.Model(inputs, keras.layers.Dense(1)(ode(inputs)))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    # Weights from a numpy generator, so every process starts alike.
    model.set_weights(
        [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.weights]
    )

    class Stop(keras.callbacks.Callback):
        """Records each finished epoch, then dies after `kill_after` of them."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch_log:
                with open(epoch_log, "a") as f:
                    f.write(f"{epoch}\n")
            if epoch + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,  # a restart replays no shuffling RNG state
        verbose=0,
        # BackupAndRestore first: the backup of an epoch is written before it ends.
        callbacks=[keras.callbacks.BackupAndRestore(backup_dir), Stop()],
    )
    return [np.asarray(v) for v in model.weights + model.optimizer.variables]


if __name__ == "__main__":
    backup_dir, epochs, kill_after, out, epoch_log = sys.argv[1:]
    weights = train(
        backup_dir, int(epochs), kill_after=int(kill_after), epoch_log=epoch_log
    )
    np.savez(out, *weights)
