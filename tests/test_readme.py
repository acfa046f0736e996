"""The README's quick example runs as printed and prints what its comments say."""

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
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    printed = out.getvalue().splitlines()
    # The shapes that the trailing comments of the first and last `print` promise.
    promised = re.findall(r"^print\(.*\)  # (\(\d[\d, ]*\))", code, re.M)
    assert [printed[0], printed[-1]] == promised, printed
    logs = namespace["history"].history
    assert len(logs["ode_nfe"]) == 2, logs
    assert min(logs["ode_nfe"] + logs["ode_backward_nfe"]) > 0, logs
