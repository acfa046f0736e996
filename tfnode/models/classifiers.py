"""The MNIST classifiers of Chen et al. (2018), Table 1: ODE-Net, RK-Net,
ResNet and a 1-layer MLP, as Keras functional models.

ODE-Net, RK-Net and ResNet share the down-sampling stem and the head of the
paper's code (`odenet_mnist.py`) and differ only in the middle:

```
stem:   3x3 conv (64, valid)          28x28x1  -> 26x26x64
        norm, ReLU, 4x4 conv stride 2 26x26x64 -> 13x13x64
        norm, ReLU, 4x4 conv stride 2 13x13x64 -> 6x6x64
middle: ODE-Net  one ConvODEBlock, adjoint gradients, dopri5, rtol = atol = 1e-3
        RK-Net   the same block, backprop through the solver (adjoint=False)
        ResNet   6 residual blocks of the same shape (norm, ReLU, 3x3 conv) x 2
head:   norm, ReLU, global average pooling, dense 10 (logits)
```

The MLP is the paper's baseline (LeCun et al. 1998): 784-300-10 on the raw
pixels, with no stem. Putting the convolutional stem (0.13M parameters) in
front of it would make it a small CNN, not the 1-layer MLP the table compares.
The norm is group normalisation with 32 groups, as in the paper's code.
"""

from __future__ import annotations

import keras

from tfnode.layers.conv_ode import ConvODEBlock

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
FILTERS = 64
NUM_RESIDUAL_BLOCKS = 6
ODE_BLOCK_NAME = "ode_block"
"""Name of the `ConvODEBlock` in ODE-Net and RK-Net: `fit` logs its solver
counts as `ode_block_nfe` and (ODE-Net) `ode_block_backward_nfe`."""

MODELS = ("odenet", "rknet", "resnet", "mlp")
"""Names accepted by `build_classifier`, in the order of the paper's table."""

# Parameter counts of Chen et al. (2018), Table 1, for comparison.
PAPER_PARAMS = {"odenet": 0.22e6, "rknet": 0.22e6, "resnet": 0.60e6, "mlp": 0.24e6}


def _norm(name):
    return keras.layers.GroupNormalization(groups=32, name=name)


def _stem(x):
    """28x28x1 -> 6x6x64, as `downsampling_layers` of the paper's code."""
    x = keras.layers.Conv2D(FILTERS, 3, name="stem_conv1")(x)  # [B, 26, 26, 64]
    for i in (2, 3):
        x = _norm(f"stem_norm{i - 1}")(x)
        x = keras.layers.ReLU(name=f"stem_relu{i - 1}")(x)
        # PyTorch's padding=1 with a 4x4 kernel: 26 -> 13 -> 6 ("same" would give 7).
        x = keras.layers.ZeroPadding2D(1, name=f"stem_pad{i}")(x)
        x = keras.layers.Conv2D(FILTERS, 4, strides=2, name=f"stem_conv{i}")(x)
    return x  # [B, 6, 6, 64]


def _head(x):
    x = _norm("head_norm")(x)
    x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)  # [B, 64]
    return keras.layers.Dense(NUM_CLASSES, name="logits")(x)


def _residual_block(x, index):
    """`x + conv(relu(norm(conv(relu(norm(x))))))`, the paper's `ResBlock`
    (3x3 convolutions without bias)."""
    h = x
    for j in (1, 2):
        h = _norm(f"res{index}_norm{j}")(h)
        h = keras.layers.ReLU(name=f"res{index}_relu{j}")(h)
        h = keras.layers.Conv2D(
            FILTERS, 3, padding="same", use_bias=False, name=f"res{index}_conv{j}"
        )(h)
    return keras.layers.Add(name=f"res{index}_add")([x, h])


def build_odenet(
    *, tol=1e-3, adjoint=True, method="dopri5", max_num_steps=1000, name="odenet"
):
    """Builds ODE-Net: the stem, one `ConvODEBlock` on `[0, 1]`, the head.

    Args:
        tol: Relative and absolute tolerance of the solver. Defaults to
            `1e-3`, the paper's MNIST setting.
        adjoint: Whether gradients come from the adjoint method (ODE-Net,
            constant memory) or from backprop through the solver (RK-Net).
            Defaults to `True`.
        method: Solver of the block. Defaults to `"dopri5"`.
        max_num_steps: Bound on solver steps per solve. Defaults to `1000`.
        name: Model name. Defaults to `"odenet"`.

    Returns:
        An uncompiled `keras.Model` from `[B, 28, 28, 1]` images to `[B, 10]`
        logits, with about 0.21M parameters. Its block is named
        `ODE_BLOCK_NAME`, so `fit` logs `ode_block_nfe` (and, with adjoint,
        `ode_block_backward_nfe`).

    Example:

    >>> model = build_odenet()
    >>> model.count_params()
    208266
    """
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = _stem(inputs)
    x = ConvODEBlock(
        filters=FILTERS,
        rtol=tol,
        atol=tol,
        method=method,
        adjoint=adjoint,
        max_num_steps=max_num_steps,
        name=ODE_BLOCK_NAME,
    )(x)
    return keras.Model(inputs, _head(x), name=name)


def build_rknet(*, tol=1e-3, method="dopri5", max_num_steps=1000, name="rknet"):
    """Builds RK-Net: ODE-Net with gradients by backprop through the solver.

    Same architecture and parameters as `build_odenet`; memory grows with the
    number of solver steps (under XLA it is 64 checkpoints, see `tfnode.odeint`).
    Arguments as in `build_odenet`.

    Example:

    >>> build_rknet().count_params()
    208266
    """
    return build_odenet(
        tol=tol, adjoint=False, method=method, max_num_steps=max_num_steps, name=name
    )


def build_resnet(*, num_blocks=NUM_RESIDUAL_BLOCKS, name="resnet"):
    """Builds the ResNet: the stem, `num_blocks` residual blocks, the head.

    Args:
        num_blocks: Residual blocks of shape 6x6x64. Defaults to `6`, as in
            the paper.
        name: Model name. Defaults to `"resnet"`.

    Returns:
        An uncompiled `keras.Model` from `[B, 28, 28, 1]` to `[B, 10]` logits,
        with about 0.58M parameters for 6 blocks.

    Example:

    >>> build_resnet().count_params()
    576778
    """
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = _stem(inputs)
    for i in range(1, num_blocks + 1):
        x = _residual_block(x, i)
    return keras.Model(inputs, _head(x), name=name)


def build_mlp(*, hidden_units=300, name="mlp"):
    """Builds the 1-layer MLP baseline: 784 -> `hidden_units` (ReLU) -> 10.

    Args:
        hidden_units: Width of the hidden layer. Defaults to `300` (LeCun et
            al. 1998; 0.24M parameters, as in the paper's table).
        name: Model name. Defaults to `"mlp"`.

    Returns:
        An uncompiled `keras.Model` from `[B, 28, 28, 1]` to `[B, 10]` logits.

    Example:

    >>> build_mlp().count_params()
    238510
    """
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    return keras.Model(
        inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(x), name=name
    )


def build_classifier(model, *, tol=1e-3):
    """Builds one of `MODELS` by name.

    Args:
        model: `"odenet"`, `"rknet"`, `"resnet"` or `"mlp"`.
        tol: Solver tolerance of ODE-Net and RK-Net (ignored by the others).
            Defaults to `1e-3`.

    Returns:
        An uncompiled `keras.Model` giving logits.

    Raises:
        ValueError: If `model` is not one of `MODELS`.
    """
    builders = {
        "odenet": lambda: build_odenet(tol=tol),
        "rknet": lambda: build_rknet(tol=tol),
        "resnet": build_resnet,
        "mlp": build_mlp,
    }
    if model not in builders:
        raise ValueError(f"`model` must be one of {MODELS}. Received: model={model!r}")
    return builders[model]()


def parameter_counts(models=MODELS):
    """Returns `{name: number of parameters}` of freshly built `models`."""
    return {name: build_classifier(name).count_params() for name in models}


def print_parameter_counts(models=MODELS, print_fn=print):
    """Prints each model's parameter count beside the paper's (Table 1).

    Args:
        models: Names from `MODELS`. Defaults to all four.
        print_fn: Where the lines go. Defaults to `print`.

    Returns:
        `{name: number of parameters}`.

    Example:

    >>> _ = print_parameter_counts(["odenet", "mlp"])
    model    params  paper
    odenet    0.21M  0.22M
    mlp       0.24M  0.24M
    """
    counts = parameter_counts(models)
    print_fn(f"{'model':<8}{'params':>7}{'paper':>7}")
    for name, count in counts.items():
        print_fn(f"{name:<8}{count / 1e6:>6.2f}M{PAPER_PARAMS[name] / 1e6:>6.2f}M")
    return counts
