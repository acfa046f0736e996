"""One `fit` step of a `NeuralODELayer` model (adjoint gradients) on one
device and under `tf.distribute.MirroredStrategy` on two logical CPU devices,
from the same weights on the same batch; writes both results to an `.npz`
file.

Run by `test_distribution.py` in a fresh process: logical devices can only be
configured before TensorFlow initialises its devices, which the test process
has long done. Usage: `python mirrored_fit.py OUT.npz`.
"""

from __future__ import annotations

import sys

from distributed_runs import LEARNING_RATE, SOLVE_RTOL

BATCH = 8  # global batch: 4 examples per replica


def main(out_path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

    import keras
    import numpy as np

    import tfnode

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 2)).astype("float32")
    y = rng.normal(size=(BATCH, 2)).astype("float32")

    def build():
        inputs = keras.Input((2,))
        func = tfnode.MLPODEFunc(hidden_units=(8,), output_initializer="glorot_uniform")
        ode = tfnode.NeuralODELayer(func, rtol=SOLVE_RTOL, atol=SOLVE_RTOL, name="ode")
        model = keras.Model(inputs, ode(inputs))
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
        return model

    def one_step(model):
        history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        return [np.asarray(w) for w in model.trainable_weights], history.history

    keras.utils.set_random_seed(0)
    single = build()
    initial = single.get_weights()
    single_weights, single_logs = one_step(single)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(initial)
    mirrored_weights, mirrored_logs = one_step(mirrored)

    results = {"num_replicas": np.asarray(strategy.num_replicas_in_sync)}
    for i, (w0, w1, w2) in enumerate(zip(initial, single_weights, mirrored_weights)):
        results[f"initial/{i}"], results[f"single/{i}"], results[f"mirrored/{i}"] = (
            w0,
            w1,
            w2,
        )
    for name, value in mirrored_logs.items():
        results[f"logs/{name}"] = np.asarray(value)
    # evaluate logs the forward counts too (from the replicas' test_step)
    evaluated = mirrored.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    results["evaluate/ode_nfe"] = np.asarray(evaluated["ode_nfe"])
    results["single_loss"] = np.asarray(single_logs["loss"])
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
