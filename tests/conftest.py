"""Fixtures shared by the test suite.

pytest puts this directory on `sys.path` (rootdir-style conftest without an
`__init__.py`), so test modules import `helpers` and `problems` directly.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from helpers import MODES  # noqa: E402


@pytest.fixture(params=MODES)
def mode(request):
    """Execution regime:
    "eager", "graph" (`tf.function`) or "xla" (`jit_compile=True`)."""
    return request.param
