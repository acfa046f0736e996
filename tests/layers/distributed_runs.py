"""The background processes of `test_distribution.py`.

Logical devices and collective ops must be configured before TensorFlow
initialises, so the distributed runs need fresh processes; TensorFlow's
start-up makes them slow (20-60 s on two busy cores). `conftest.py` starts
them right after collection, when a distribution test is selected, so that
they run while the other tests do, and the tests only wait for them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIRRORED_SCRIPT = HERE / "mirrored_fit.py"
MULTI_WORKER_SCRIPT = HERE.parents[1] / "examples" / "multi_worker.py"
TIMEOUT = 300  # seconds for any one process, from its start

# Settings shared with the assertions of test_distribution.py.
SOLVE_RTOL = 1e-5
LEARNING_RATE = 0.1
MULTI_WORKER_STEPS = 3


class Process:
    """A Python script run in the background, its output in a log file."""

    def __init__(self, name, args, log_dir, tf_config=None):
        self.name = name
        self.log = Path(log_dir) / f"{name}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_CONFIG", None)
        if tf_config is not None:
            env["TF_CONFIG"] = json.dumps(tf_config)
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *map(str, args)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait(self):
        """Returns `None` on a clean exit, else what went wrong with the log's tail."""
        try:
            code = self.popen.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop()
            return f"{self.name} did not finish in {TIMEOUT} s:\n{self.tail()}"
        if code != 0:
            return f"{self.name} exited with {code}:\n{self.tail()}"
        return None

    def tail(self, lines=40):
        return "\n".join(self.log.read_text().splitlines()[-lines:])

    def stop(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(out_dir):
    """Starts the Mirrored script, a single-process run of the multi-worker
    example and two workers of it on 127.0.0.1; returns them by name."""
    out_dir = Path(out_dir)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    example = [
        MULTI_WORKER_SCRIPT,
        *("--steps", MULTI_WORKER_STEPS, "--global-batch-size", 8, "--hidden-units", 8),
        *("--learning-rate", LEARNING_RATE, "--rtol", SOLVE_RTOL, "--atol", 1e-6),
    ]
    processes = {
        "mirrored": Process(
            "mirrored", [MIRRORED_SCRIPT, out_dir / "mirrored.npz"], out_dir
        ),
        "single": Process(
            "single", [*example, "--out-dir", out_dir / "single"], out_dir
        ),
    }
    for index in range(2):
        task = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        processes[f"worker{index}"] = Process(
            f"worker{index}",
            [*example, "--out-dir", out_dir / "workers"],
            out_dir,
            task,
        )
    return processes
