"""The README's quick example runs as printed and does what its comments say."""

import contextlib
import io
import pathlib
import re

import keras

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _quick_example():
    text = README.read_text()
    section = text[text.index("## Quick example") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_example_runs():
    code = _quick_example()
    keras.utils.set_random_seed(0)
    namespace = {"__name__": "readme"}
    with contextlib.redirect_stdout(io.StringIO()):  # fit's progress bar
        exec(compile(code, str(README), "exec"), namespace)
    [promised] = re.findall(r"^ys = .*  # shape (\(.*\))$", code, re.M)
    assert str(tuple(namespace["ys"].shape)) == promised
    logs = namespace["model"].history.history
    assert len(logs["ode_nfe"]) == 2, logs
    assert min(logs["ode_nfe"] + logs["ode_backward_nfe"]) > 0, logs
