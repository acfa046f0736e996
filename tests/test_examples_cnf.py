"""The CNF example runs end to end at a tiny size, and its own pieces (the
differentiable 8gaussians density, the planar flow) are right."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
from test_examples_cli import assert_panels_labelled, colour_bar_labels

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "cnf.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("cnf_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not train or write anything
    return module


@pytest.fixture(scope="module")
def example():
    return _load_example()


def test_import_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _load_example()
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == ""


def test_main_writes_figures_and_table(example, tmp_path, capsys, monkeypatch):
    figures = {}  # the figures main draws, by function, to check their panels

    def keeping_figure(draw):
        def wrapper(*args):
            figures[draw.__name__] = fig = draw(*args)
            return fig

        return wrapper

    for name in ("plot_densities", "plot_flow", "plot_figure4"):
        monkeypatch.setattr(example, name, keeping_figure(getattr(example, name)))
    monkeypatch.setattr(example, "NUM_PLOT_SAMPLES", 500)
    # Eagerly: tracing the adjoint's graphs would take most of a minute per model,
    # and a handful of steps is all this checks.
    results = example.main(
        steps=2,
        batch_size=32,
        hidden_units=(8,),
        num_test=64,
        grid_size=12,
        figure4_steps=2,
        planar_layers=4,
        eager=True,
        out_dir=str(tmp_path),
    )

    names = ("8gaussians_density.png", "8gaussians_flow.png", "figure4.png")
    assert results["figures"] == list(names)
    for name in names:
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
    for fig in figures.values():
        assert_panels_labelled(fig)
    assert colour_bar_labels(figures["plot_densities"]) == ["density p(x)"]
    assert colour_bar_labels(figures["plot_flow"]) == [
        "density p_t(x)",
        "angle of the base sample z (rad)",
    ]
    assert colour_bar_labels(figures["plot_figure4"]) == [
        "density / the panel's maximum"
    ]
    # Figure 6: density and samples rows for each model, a column per time.
    flow_titles = [ax.get_title() for ax in figures["plot_flow"].axes[:20]]
    assert flow_titles[:5] == [f"unregularised, t = {t:g}" for t in example.TIMES]
    assert flow_titles[5] == "regularised (KE 0.1, JF 0.1), t = 0"

    rows = results["rows"]
    assert [(r["dataset"], r["label"]) for r in rows] == [
        ("8gaussians", "no"),
        ("8gaussians", "KE 0.1, JF 0.1"),
    ]
    for row in rows:
        assert math.isfinite(row["nll"]) and row["nfe"] >= 8, row
        assert row["train_seconds"] > 0
    assert all(math.isfinite(kl) for kl in results["kl"].values())

    printed = capsys.readouterr().out
    table = (tmp_path / "table.md").read_text()
    for line in table.splitlines()[:4]:
        assert line in printed
    assert table.startswith("| data set | regularised | held-out NLL (nats) |")
    assert f"| 8gaussians | no | {rows[0]['nll']:.3f} |" in table
    assert "KL(q || p) to 8gaussians" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows


def test_density_figure_without_a_closed_form(example, tmp_path):
    # Data sets other than 8gaussians show a histogram of the held-out data.
    import tfnode

    size = 8
    x_test = tfnode.data.toy_density("checkerboard", 500, seed=0)
    run = {
        "title": "unregularised",
        "nll": 3.5,
        "density": np.full((len(example.TIMES), size * size), 1 / 64),
        "samples": x_test,
    }
    fig = example.plot_densities(
        "checkerboard", x_test, None, [run], size, tmp_path / "density.png"
    )
    assert (tmp_path / "density.png").read_bytes().startswith(b"\x89PNG")
    assert_panels_labelled(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert "checkerboard: histogram of held-out data" in titles


def test_datasets_are_tfnodes_toy_densities(example):
    import tfnode

    assert example.DATASETS == tfnode.data.TOY_DENSITIES


def test_eight_gaussians_log_prob_matches_tfnode(example):
    import tensorflow as tf

    import tfnode

    x = tfnode.data.toy_density("8gaussians", 200, seed=3)
    x = np.concatenate([x, 5 * np.random.default_rng(0).standard_normal((50, 2))])
    ours = example.eight_gaussians_log_prob(tf.constant(x, tf.float64)).numpy()
    np.testing.assert_allclose(ours, tfnode.data.eight_gaussians_log_prob(x), 1e-10)


def test_planar_flow_is_invertible_and_its_log_det_exact(example):
    import tensorflow as tf

    flow = example.PlanarFlow(2, num_layers=5, seed=1)
    # Weights that break invertibility unless `u_hat` corrects them: w^T u << -1.
    w = np.random.default_rng(0).standard_normal((5, 2)).astype("float32")
    flow.w.assign(w)
    flow.u.assign(-3 * w)
    flow.b.assign(np.linspace(-1, 1, 5, dtype="float32"))
    w_u_hat = tf.reduce_sum(flow.w * flow.u_hat(), -1).numpy()
    assert np.all(w_u_hat > -1), w_u_hat

    z = tf.constant(np.random.default_rng(1).standard_normal((6, 2)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        x, log_det = flow(z)
    jacobian = tape.batch_jacobian(x, z)  # [6, 2, 2]
    expected = np.log(np.abs(np.linalg.det(jacobian.numpy())))
    np.testing.assert_allclose(log_det.numpy(), expected, rtol=1e-4, atol=1e-5)

    samples, log_q = flow.sample_and_log_prob(4, seed=0)
    assert samples.shape == (4, 2) and log_q.shape == (4,)
