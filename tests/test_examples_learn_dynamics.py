"""The learning-dynamics demo, run at a reduced size: it must recover the
linear spiral's matrix, write its plots and make progress on the MLP fit."""

import importlib.util
import pathlib

import numpy as np
import pytest
from test_examples_cli import assert_panels_labelled, colour_bar_labels

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "learn_dynamics.py"

# Issue 4's acceptance bar for the recovered matrix, in max norm.
MATRIX_TOLERANCE = 0.05


def _load():
    spec = importlib.util.spec_from_file_location("learn_dynamics", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def learn_dynamics():
    return _load()


def test_learn_dynamics_reduced(learn_dynamics, tmp_path, capsys):
    # Fewer, larger steps than the default run: the linear fit still converges
    # (its error is ~0.01 by step 100 at this rate), the MLP only has to learn.
    results = learn_dynamics.main(
        data_size=400,
        niters=200,
        batch_time=10,
        batch_size=16,
        learning_rate=0.05,
        hidden_units=(16,),
        seed=0,
        out_dir=str(tmp_path),
    )
    output = capsys.readouterr().out

    assert results["linear_matrix_error"] < MATRIX_TOLERANCE, output
    assert results["nonlinear_final_loss"] < 0.8 * results["nonlinear_initial_loss"], (
        output
    )
    for name in ("linear.png", "nonlinear.png"):
        path = tmp_path / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert "true A:" in output and "learned A:" in output
    assert (
        results["total_seconds"]
        >= results["linear_seconds"] + results["nonlinear_seconds"]
    )


def test_import_runs_nothing(tmp_path, monkeypatch, capsys):
    # Importing the script defines things and nothing else: no output, no files.
    monkeypatch.chdir(tmp_path)
    _load()
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == ""


def test_plot_labels_every_panel(learn_dynamics, tmp_path):
    # The figure alone, from a closed-form spiral: no training.
    t = np.linspace(0.0, 6.0, 60, dtype="float32")
    ys = 2 * np.exp(-0.1 * t)[:, None] * np.stack([np.cos(t), np.sin(t)], -1)
    field = learn_dynamics.linear_field
    fig = learn_dynamics.plot(
        tmp_path / "plot.png", "title", t, ys, ys, 1.01 * ys, field, field
    )
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_panels_labelled(fig)
    # Colour means time in the phase portrait and speed in the vector fields.
    assert colour_bar_labels(fig) == ["t (observation time)", "speed |dy/dt|"]
