"""The README's code runs as printed and does what its comments say, and its
"API at a glance" states the signatures and defaults that the code has."""

import ast
import contextlib
import functools
import inspect
import io
import pathlib
import re

import keras
import numpy as np
import pytest

import tfnode

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(heading):
    """The ```python blocks of the README's section `heading`."""
    text = README.read_text()
    section = text[text.index(f"\n{heading}\n") + 1 :]
    end = section.find("\n## ")
    section = section if end < 0 else section[:end]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _run(code):
    namespace = {"__name__": "readme"}
    with contextlib.redirect_stdout(io.StringIO()):  # fit's progress bar
        exec(compile(code, str(README), "exec"), namespace)
    return namespace


def _promised_shape(code, name):
    [promised] = re.findall(rf"^{name} = .*  # shape (\(.*\))$", code, re.M)
    return promised


def test_quick_example_runs():
    code = _python_blocks("## Quick example")[0]
    keras.utils.set_random_seed(0)
    namespace = _run(code)
    assert str(tuple(namespace["ys"].shape)) == _promised_shape(code, "ys")
    logs = namespace["model"].history.history
    assert len(logs["ode_nfe"]) == 2, logs
    assert min(logs["ode_nfe"] + logs["ode_backward_nfe"]) > 0, logs


def test_per_sample_example_prints_what_it_promises():
    [code] = _python_blocks("## Per-sample step control")
    namespace = _run(code)
    [promised] = re.findall(r"# per sample: \[([\d ]+)\]; shared: (\d+)", code)
    steps = namespace["stats"].num_steps.numpy()
    assert steps.tolist() == [int(n) for n in promised[0].split()]
    _, shared = tfnode.odeint(
        namespace["vdp"], namespace["y0"], namespace["t"], return_stats=True
    )
    assert int(shared.num_steps) == int(promised[1])


def test_cnf_example_trains_and_keeps_its_shapes():
    [code] = _python_blocks("## Density models: continuous normalizing flows")
    keras.utils.set_random_seed(0)
    namespace = _run(code)
    logs = namespace["cnf"].history.history
    assert logs["nll"][-1] < logs["nll"][0], logs
    # The loss is the NLL plus the (positive) kinetic-energy penalty.
    assert all(a > b for a, b in zip(logs["loss"], logs["nll"])), logs
    assert min(logs["nfe"] + logs["backward_nfe"]) > 0, logs
    shapes = {"log_p": (5,), "samples": (1000, 2), "path": (3, 8, 2)}
    for name, shape in shapes.items():
        assert tuple(namespace[name].shape) == shape, name


F32_ROUNDOFF = 1e-6


def test_custom_odefunc_runs_and_saves(tmp_path):
    [code] = [b for b in _python_blocks("## API at a glance") if "class " in b]
    keras.utils.set_random_seed(0)
    namespace = _run(code)
    assert str(tuple(namespace["y1"].shape)) == _promised_shape(code, "y1")
    # The registration comment's promise: a model holding it loads from .keras.
    inputs = keras.Input((2,))
    model = keras.Model(inputs, namespace["ode"](inputs))
    model.save(tmp_path / "custom.keras")
    loaded = keras.models.load_model(tmp_path / "custom.keras")
    x = np.random.default_rng(0).normal(size=(4, 2)).astype("float32")
    # The same weights and float32 operations: round-off only.
    np.testing.assert_allclose(
        loaded(x), model(x), rtol=F32_ROUNDOFF, atol=F32_ROUNDOFF
    )


def _stated_signatures():
    """`{name: ast.arguments}` of each `tfnode.name(...)` in the first block of
    "API at a glance"; `...` there stands for parameters left out."""
    block = _python_blocks("## API at a glance")[0]
    calls = re.findall(r"^tfnode\.([\w.]+)\((.*?)\)$", block, re.M | re.S)
    stated = {}
    for name, params in calls:
        elided = re.search(r"\.\.\.,?", params) is not None
        params = re.sub(r"\.\.\.,?", "", params)
        tree = ast.parse(f"def f({params}): pass")
        stated[name] = (tree.body[0].args, elided)
    return stated


@pytest.mark.parametrize(
    "name", ["odeint", "odeint_adjoint", "NeuralODELayer", "models.CNF"]
)
def test_api_at_a_glance_matches_the_code(name):
    stated, elided = _stated_signatures()[name]
    real = inspect.signature(functools.reduce(getattr, name.split("."), tfnode))
    real = real.parameters
    real = {n: p for n, p in real.items() if p.kind is not p.VAR_KEYWORD}
    positional = stated.posonlyargs + stated.args
    defaults = [None] * (len(positional) - len(stated.defaults)) + stated.defaults
    rows = [(a.arg, False, d) for a, d in zip(positional, defaults)]
    rows += [(a.arg, True, d) for a, d in zip(stated.kwonlyargs, stated.kw_defaults)]
    for param, keyword_only, default in rows:
        assert param in real, f"README states `{param}`; tfnode.{name} has {[*real]}"
        assert keyword_only == (real[param].kind is real[param].KEYWORD_ONLY), param
        if default is None:
            assert real[param].default is inspect.Parameter.empty, param
        else:
            assert ast.literal_eval(default) == real[param].default, (
                f"README: {param}={ast.unparse(default)}; "
                f"tfnode.{name}: {param}={real[param].default!r}"
            )
    order = [param for param, _, _ in rows]
    assert order == [p for p in real if p in order], "README's order differs"
    if not elided:
        assert order == [*real], f"README leaves out {set(real) - set(order)}"
