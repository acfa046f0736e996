"""Proof that `tfnode.NeuralODELayer` trains under `tf.distribute` with the
same result as on one device.

- `MirroredStrategy` on two logical CPU devices: one `fit` step (adjoint
  gradients) gives the weights of one step on one device.
- `MultiWorkerMirroredStrategy`: `examples/multi_worker.py` run as two worker
  processes on 127.0.0.1 ends, on both workers, with the weights of the same
  script run in a single process.

Both need fresh processes (logical devices and collective ops must be set up
before TensorFlow initialises, which this process has done): see
`distributed_runs.py`, and `conftest.py`, which starts them early.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from distributed_runs import LEARNING_RATE, MULTI_WORKER_STEPS, SOLVE_RTOL
from helpers import assert_allclose

# Replicas solve their share of the batch, so the adaptive solver's error norm
# (and hence its steps) differs from the one-device solve: gradients agree to
# the solve tolerance SOLVE_RTOL, times |grad| ~ 1, times the learning rate,
# per step; plus float32 round-off of weights ~0.5 (~3e-8). Measured: 3e-8.
# A wrong reduction (a replica's gradient alone, or summed twice) moves the
# weights by O(learning rate * |grad|) ~ 1e-2. So that the comparison is not
# vacuous, every weight must move by more than NOT_VACUOUS times the tolerance.
MIRRORED_ATOL = 2 * LEARNING_RATE * SOLVE_RTOL  # one step
MULTI_WORKER_ATOL = 2 * MULTI_WORKER_STEPS * LEARNING_RATE * SOLVE_RTOL
NOT_VACUOUS = 100


def _wait(processes, *names):
    for name in names:
        failure = processes[name].wait()
        if failure:
            pytest.fail(failure)


def test_mirrored_fit_step_matches_one_device(distributed):
    out_dir, processes = distributed
    _wait(processes, "mirrored")
    results = np.load(Path(out_dir) / "mirrored.npz")
    assert int(results["num_replicas"]) == 2

    num_weights = len([key for key in results if key.startswith("initial/")])
    assert num_weights == 4
    for i in range(num_weights):
        initial, single, mirrored = (
            results[f"{which}/{i}"] for which in ("initial", "single", "mirrored")
        )
        assert np.max(np.abs(single - initial)) > NOT_VACUOUS * MIRRORED_ATOL
        assert_allclose(mirrored, single, atol=MIRRORED_ATOL, err_msg=f"weight {i}")

    assert_allclose(results["logs/loss"], results["single_loss"], rtol=1e-5)
    assert results["logs/ode_nfe"][0] > 0 and results["logs/ode_backward_nfe"][0] > 0
    assert results["evaluate/ode_nfe"] > 0


def test_multi_worker_example_matches_single_process(distributed):
    out_dir, processes = distributed
    _wait(processes, "single", "worker0", "worker1")
    assert "1 replica(s) in sync" in processes["single"].log.read_text()
    assert "2 replica(s) in sync" in processes["worker0"].log.read_text()

    single = np.load(Path(out_dir) / "single" / "weights_worker0.npz")
    workers = [
        np.load(Path(out_dir) / "workers" / f"weights_worker{i}.npz") for i in range(2)
    ]
    finals = [key for key in single if key.startswith("final/")]
    assert len(finals) == 4, list(single)
    for key in finals:
        initial = single[key.replace("final/", "initial/")]
        assert (
            np.max(np.abs(single[key] - initial)) > NOT_VACUOUS * MULTI_WORKER_ATOL
        ), key
        # Workers apply the same all-reduced gradients: identical weights.
        np.testing.assert_array_equal(workers[0][key], workers[1][key], err_msg=key)
        assert_allclose(
            workers[0][key], single[key], atol=MULTI_WORKER_ATOL, err_msg=key
        )
