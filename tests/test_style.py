"""The repository keeps its style: `ruff check` (rules E, F, I, UP, S101) and
`ruff format --check` pass on the whole tree, with pyproject.toml's settings."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# setup.cfg pins ruff in the `test` extra: formatting output changes between ruff
# versions, so another version may disagree with the committed tree.
PINNED = re.search(r"ruff==([\w.]+)", (ROOT / "setup.cfg").read_text()).group(1)
# Each check, and the command that fixes what it reports.
CHECKS = {
    "check": (["check", "."], "ruff check --fix ."),
    "format": (["format", "--check", "."], "ruff format ."),
}


def _ruff():
    """The ruff executable beside the running Python (a virtualenv's `bin/`, where
    `pip install -e ".[test]"` puts it), else the first on `PATH`."""
    beside = shutil.which("ruff", path=os.path.dirname(sys.executable))
    found = beside or shutil.which("ruff")
    if found is None:
        pytest.skip(
            f"ruff is not installed: `pip install ruff=={PINNED}` (or the `test` "
            "extra) to run the style checks"
        )
    return found


def _run(*command):
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_ruff(check):
    ruff = _ruff()
    args, fix = CHECKS[check]
    version = _run(ruff, "--version").stdout.strip()
    assert version.split()[-1] == PINNED, (
        f"{version} at {ruff}, but setup.cfg pins ruff=={PINNED}, whose formatting the "
        f"tree follows: `pip install ruff=={PINNED}`"
    )
    # --no-cache: leave no .ruff_cache in the tree; the whole run takes < 1 s.
    result = _run(ruff, *args, "--no-cache")
    assert result.returncode == 0, (
        f"`ruff {' '.join(args)}` failed in {ROOT} ({version} at {ruff}). "
        f"Run `{fix}` there, or fix by hand what it cannot.\n"
        f"{result.stdout}{result.stderr}"
    )
