"""MNIST as a `tf.data` pipeline: `tfds.load("mnist")`, normalised, shuffled
and batched, with a subset option for small runs."""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

MEAN = 0.1307
"""Mean pixel value of the MNIST training images (scaled to [0, 1])."""
STD = 0.3081
"""Standard deviation of the MNIST training pixels (scaled to [0, 1])."""
SPLITS = ("train", "test")
_SHUFFLE_BUFFER = 10_000


class MNISTNotFoundError(FileNotFoundError):
    """MNIST is not prepared in the data directory and downloading is off."""


def default_data_dir() -> str:
    """The directory `tfds.load` reads when `data_dir=None`: `$TFDS_DATA_DIR`,
    else `~/tensorflow_datasets`."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
        tfds.core.constants.DATA_DIR
    )


def load_mnist(
    split: str = "train",
    *,
    batch_size: int = 128,
    take: int | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Loads an MNIST split as batches of `(images, labels)`.

    Images are scaled to [0, 1] and standardised with the training set's mean
    and standard deviation (`(x - 0.1307) / 0.3081`, as in the paper's code).
    The subset (`take`) is the first `take` examples of the split, so each
    epoch reshuffles the same examples. Nothing is cached: reading MNIST again
    each epoch costs little, and `Dataset.cache()` kept a truncated copy when
    an iteration stopped early on generator-backed (mock) data.

    Args:
        split: `"train"` or `"test"`. Defaults to `"train"`.
        batch_size: Examples per batch. Defaults to `128`.
        take: Number of examples to use (a subset for small runs); `None` uses
            the whole split (60,000 or 10,000). Defaults to `None`.
        shuffle: Whether to reshuffle every epoch. Defaults to `True` for the
            training split and `False` otherwise.
        seed: Seed of the shuffle. Defaults to `None` (nondeterministic).
        data_dir: Directory of prepared tfds data. Defaults to `None`:
            `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.
        download: Whether tfds may download and prepare MNIST when it is
            missing (needs internet). Defaults to `False`, so that an offline
            machine fails at once with `MNISTNotFoundError` instead of trying
            the network.
        drop_remainder: Whether to drop the last partial batch. Defaults to
            `False`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `[B, 28, 28, 1]`
        and int64 `[B]`, prefetched.

    Raises:
        ValueError: If `split`, `batch_size` or `take` is invalid.
        MNISTNotFoundError: (a `FileNotFoundError`) If MNIST is not in
            `data_dir` and `download=False`; the message names the directory
            and how to get the data.

    Example:

    >>> with tfds.testing.mock_data(num_examples=8):  # fake pixels, no network
    ...     ds = load_mnist("test", batch_size=4)
    >>> images, labels = next(iter(ds))
    >>> images.shape, labels.shape
    (TensorShape([4, 28, 28, 1]), TensorShape([4]))
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: {batch_size!r}"
        )
    if take is not None and (
        isinstance(take, bool) or not isinstance(take, int) or take < 1
    ):
        raise ValueError(
            f"`take` must be a positive integer or None. Received: take={take!r}"
        )
    if shuffle is None:
        shuffle = split == "train"
    try:
        ds = tfds.load(
            "mnist",
            split=split if take is None else f"{split}[:{take}]",
            as_supervised=True,
            data_dir=data_dir,
            download=download,
        )
    except AssertionError as err:  # tfds's "could not find data in <dir>"
        if download:
            raise
        where = data_dir or default_data_dir()
        raise MNISTNotFoundError(
            f"MNIST is not prepared in the tfds data directory {where!r}, and "
            "`download=False`. Either pass `download=True` (needs internet: tfds "
            "downloads and prepares it there, about 20 MB), run "
            f"`tfds build mnist --data_dir={where}` on a machine with internet and "
            "copy the directory here, or point `data_dir` (or $TFDS_DATA_DIR) at a "
            f"directory holding `mnist/`. tfds said: {err}"
        ) from err
    if take is not None:
        # tfds.testing.mock_data ignores split slicing; this keeps `take` exact.
        ds = ds.take(take)
    if shuffle:
        buffer = _SHUFFLE_BUFFER if take is None else min(take, _SHUFFLE_BUFFER)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(_normalize, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _normalize(images, labels):
    images = (tf.cast(images, tf.float32) / 255.0 - MEAN) / STD  # [B, 28, 28, 1]
    return images, labels
