"""Starts the distributed runs of `test_distribution.py` early.

When a test of that module is selected, its four background processes (see
`distributed_runs.py`) start right after collection and its tests move to the
end of the session: the processes then run while the other tests do, and
only what is left of them is waited for.
"""

from __future__ import annotations

import shutil
import tempfile

import distributed_runs
import pytest

RUNS = pytest.StashKey[tuple]()


def pytest_collection_modifyitems(session, config, items):
    distribution = [item for item in items if item.path.name == "test_distribution.py"]
    if not distribution or config.option.collectonly:
        return
    items[:] = [item for item in items if item not in distribution] + distribution
    out_dir = tempfile.mkdtemp(prefix="tfnode-distribution-")
    config.stash[RUNS] = (out_dir, distributed_runs.start(out_dir))


def pytest_unconfigure(config):
    out_dir, processes = config.stash.get(RUNS, (None, {}))
    for process in processes.values():
        process.stop()
    if out_dir is not None:
        shutil.rmtree(out_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def distributed(request, tmp_path_factory):
    """`(out_dir, processes)` of the distributed runs, started if not yet."""
    if RUNS not in request.config.stash:
        out_dir = tmp_path_factory.mktemp("distribution")
        request.config.stash[RUNS] = (out_dir, distributed_runs.start(out_dir))
    return request.config.stash[RUNS]
