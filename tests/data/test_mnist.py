"""Tests of the MNIST pipeline, on `tfds.testing.mock_data` (no network)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfnode.data.mnist import MEAN, STD, MNISTNotFoundError, load_mnist

# Normalised pixels lie in [(0 - MEAN) / STD, (1 - MEAN) / STD];
# float32 round-off aside.
PIXEL_ATOL = 1e-5


def _collect(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def test_pipeline_shapes_dtypes_and_normalisation():
    with tfds.testing.mock_data(num_examples=10):
        ds = load_mnist("train", batch_size=4, seed=0)
        raw = tfds.load("mnist", split="train", as_supervised=True)
        raw_images = np.stack([x.numpy() for x, _ in raw])
    assert ds.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].dtype == tf.int64
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sizes == [4, 4, 2]  # last partial batch kept by default
    images, labels = _collect(ds)
    assert images.min() >= -MEAN / STD - PIXEL_ATOL
    assert images.max() <= (1 - MEAN) / STD + PIXEL_ATOL
    assert set(labels) <= set(range(10))
    # The same pixels as tfds's uint8 images, standardised (order aside: shuffled).
    expected = np.sort(((raw_images / 255.0 - MEAN) / STD).astype(np.float32).ravel())
    np.testing.assert_allclose(np.sort(images.ravel()), expected, atol=PIXEL_ATOL)


def test_take_subset_drop_remainder_and_test_split_order():
    with tfds.testing.mock_data(num_examples=12):
        ds = load_mnist("train", batch_size=4, take=7, drop_remainder=True, seed=0)
        test_a = load_mnist("test", batch_size=5, take=7)
        test_b = load_mnist("test", batch_size=5, take=7)
    assert [int(x.shape[0]) for x, _ in ds] == [4]
    images_a, labels_a = _collect(test_a)
    images_b, labels_b = _collect(test_b)
    assert images_a.shape == (7, 28, 28, 1)
    # The test split is not shuffled: two loads give the same order.
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)


def test_training_split_reshuffles_each_epoch():
    with tfds.testing.mock_data(num_examples=16):
        ds = load_mnist("train", batch_size=16, seed=1)
    first, second = (_collect(ds)[1] for _ in range(2))
    assert sorted(first) == sorted(second)
    assert not np.array_equal(first, second)


def test_stopping_an_iteration_early_loses_no_examples():
    # With a cache() in the pipeline, a second pass over mock data once gave 13 of
    # 48 examples: what the first, partial pass had read when its iterator died.
    with tfds.testing.mock_data(num_examples=64):
        ds = load_mnist("test", batch_size=8, take=48)
    next(iter(ds))
    time.sleep(1)  # let the abandoned iterator's prefetch threads finish
    assert sum(int(x.shape[0]) for x, _ in ds) == 48


def test_missing_data_offline_names_directory_and_download_option(tmp_path):
    with pytest.raises(MNISTNotFoundError, match="download=True") as info:
        load_mnist("test", data_dir=str(tmp_path), download=False)
    assert str(tmp_path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="validation"), "`split` must be one of"),
        (dict(batch_size=0), "`batch_size` must be a positive integer"),
        (dict(take=0), "`take` must be a positive integer"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist(**kwargs)
