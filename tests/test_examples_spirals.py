"""The spirals example runs end to end at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

from test_examples_cli import assert_panels_labelled, colour_bar_labels

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "spirals.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("spirals_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not train or write anything
    return module


def test_main_writes_figures_and_table(tmp_path, capsys, monkeypatch):
    example = _load_example()
    assert list(tmp_path.iterdir()) == []
    figures = {}  # the figures main draws, by function, to check their panels

    def keeping_figure(draw):
        def wrapper(*args):
            figures[draw.__name__] = fig = draw(*args)
            return fig

        return wrapper

    for name in ("plot_grid", "plot_interpolation"):
        monkeypatch.setattr(example, name, keeping_figure(getattr(example, name)))
    # One training observation count: one trace of each training step.
    results = example.main(
        num_spirals=20,
        num_test=9,
        steps=3,
        batch_size=10,
        num_observations=(30,),
        out_dir=str(tmp_path),
        verbose=0,
    )

    for name in ("extrapolation_grid.png", "interpolation.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
    for fig in figures.values():
        assert_panels_labelled(fig)
    assert colour_bar_labels(figures["plot_grid"]) == ["t (time of the observation)"]
    assert colour_bar_labels(figures["plot_interpolation"]) == ["t (decoded time)"]
    titles = [ax.get_title() for ax in figures["plot_grid"].axes[:9]]
    assert all("RMSE vs truth" in title for title in titles), titles
    for model in ("latent_ode", "rnn"):
        assert sorted(results["rmse"][model]) == [30, 50, 100]
        assert all(math.isfinite(x) and x > 0 for x in results["rmse"][model].values())
    assert results["paper"]["latent_ode"][30] == 0.1642

    printed = capsys.readouterr().out
    table = (tmp_path / "rmse.txt").read_text()
    assert table.strip() in printed
    for row in ("30/100", "50/100", "100/100", "0.1642", "0.3937"):
        assert row in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rmse"]["rnn"]["50"] == results["rmse"]["rnn"][50]
