"""Training resumes after a crash: a `NeuralODELayer` model trained with
`keras.callbacks.BackupAndRestore`, killed (SIGKILL) after an epoch and
restarted, ends with the weights and optimizer state of an uninterrupted
run, and loses or repeats no epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import assert_allclose
from resume_run import BATCH, SAMPLES, train

SCRIPT = Path(__file__).resolve().parent / "resume_run.py"
EPOCHS, KILL_AFTER = 4, 2
# The resumed run repeats the uninterrupted run's float32 operations from the
# restored state: the results agree to round-off (measured: bit-equal). A lost
# or repeated epoch moves the weights by ~0.05 (Adam's step, lr 0.05, per batch).
ROUNDOFF = 1e-6


def _start(backup_dir, kill_after, out, epoch_log):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(backup_dir), str(EPOCHS), str(kill_after)]
        + [str(out), str(epoch_log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _wait(process):
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    return process.returncode, stderr[-3000:]


def test_killed_training_resumes_where_it_stopped(tmp_path):
    epoch_log = tmp_path / "epochs.txt"
    killed = _start(tmp_path / "backup", KILL_AFTER, tmp_path / "unused.npz", epoch_log)
    reference = train(str(tmp_path / "reference_backup"), EPOCHS)  # meanwhile
    code, stderr = _wait(killed)
    assert code == -9, stderr  # died by SIGKILL
    assert epoch_log.read_text().split() == [str(e) for e in range(KILL_AFTER)]

    code, stderr = _wait(
        _start(tmp_path / "backup", 0, tmp_path / "resumed.npz", epoch_log)
    )
    assert code == 0, stderr
    # every epoch ran exactly once, across the two processes
    assert epoch_log.read_text().split() == [str(e) for e in range(EPOCHS)]

    with np.load(tmp_path / "resumed.npz") as resumed_weights:
        weights = [resumed_weights[f"arr_{i}"] for i in range(len(reference))]
        assert len(resumed_weights.files) == len(reference)
    for i, (got, want) in enumerate(zip(weights, reference)):
        assert_allclose(got, want, atol=ROUNDOFF, err_msg=f"variable {i}")
    # The optimizer ran EPOCHS * SAMPLES / BATCH steps, not fewer.
    assert any(w.shape == () and int(w) == EPOCHS * SAMPLES // BATCH for w in reference)
