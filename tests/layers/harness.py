"""`run_layer_test`: the checks every tfnode layer passes, modelled on Keras'
own `keras.src.testing.TestCase.run_layer_test`.

In order: the layer is not built by `__init__`; it builds in a functional
model with the expected symbolic output shape; it has the expected weight and
parameter counts; an eager call gives the expected shape, dtype and finite
values; `get_config` round-trips (and is JSON-serialisable); a `.keras` save
and load gives the same outputs; one `fit` step runs with a finite loss and
moves every trainable weight.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf


def fresh(init_kwargs):
    """`init_kwargs` with every Keras layer in it replaced by an unbuilt copy
    (from its config), so that two instantiations share no weights."""
    return {
        key: type(value).from_config(value.get_config())
        if isinstance(value, keras.layers.Layer)
        else value
        for key, value in init_kwargs.items()
    }


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    *,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    expected_num_params=None,
    expected_output_dtype="float32",
    call_kwargs=None,
    tmp_path,
    run_training_check=True,
    seed=0,
):
    """Runs the checks above; returns `(model, history)` for further checks.

    Args:
        layer_cls: The layer class.
        init_kwargs: Its constructor arguments; layers among them (such as a
            `func`) are copied afresh for each instance (see `fresh`).
        input_shape: Shape of the test input, batch axis first.
        expected_output_shape: Shape of the output for that input.
        expected_num_trainable_weights: Number of trainable weight tensors.
        expected_num_non_trainable_weights: Number of non-trainable ones.
        expected_num_params: Total number of parameters, if given.
        expected_output_dtype: Output dtype.
        call_kwargs: Extra call arguments (e.g. `t`).
        tmp_path: A directory for the `.keras` file.
        run_training_check: Whether to run one `fit` step.
        seed: Seed of the weights and data.

    Returns:
        The functional model `Input -> layer` and the `fit` history (or
        `None` when `run_training_check=False`).
    """
    call_kwargs = call_kwargs or {}
    keras.utils.set_random_seed(seed)
    x = np.random.default_rng(seed).normal(size=input_shape).astype("float32")
    expected_output_shape = tuple(expected_output_shape)

    # Validation in __init__, building deferred to the first call.
    layer = layer_cls(**fresh(init_kwargs))
    assert not layer.built, f"{layer_cls.__name__} must build lazily, not in __init__"

    # Symbolic build in a functional model.
    inputs = keras.Input(shape=input_shape[1:])
    outputs = layer(inputs, **call_kwargs)
    symbolic = (None, *expected_output_shape[1:])
    assert tuple(outputs.shape) == symbolic, (
        f"symbolic output {outputs.shape} != {symbolic}"
    )
    assert layer.built
    computed = tuple(layer.compute_output_shape((None, *input_shape[1:])))
    if not call_kwargs:
        assert computed == symbolic, f"compute_output_shape {computed} != {symbolic}"

    # Weight counts.
    assert len(layer.trainable_weights) == expected_num_trainable_weights, (
        f"{len(layer.trainable_weights)} trainable weights: "
        f"{[w.path for w in layer.trainable_weights]}"
    )
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
        f"non-trainable weights: {[w.path for w in layer.non_trainable_weights]}"
    )
    if expected_num_params is not None:
        assert layer.count_params() == expected_num_params, (
            f"{layer.count_params()} parameters, expected {expected_num_params}"
        )

    # Eager call.
    y = layer(tf.constant(x), **call_kwargs)
    assert tuple(y.shape) == expected_output_shape, f"eager output {y.shape}"
    assert y.dtype == expected_output_dtype, f"eager output dtype {y.dtype}"
    assert np.all(np.isfinite(y)), "eager output is not finite"

    # get_config round trip, through JSON as the .keras format stores it.
    config = _json(layer.get_config())
    revived = layer_cls.from_config(config)
    assert _json(revived.get_config()) == config, "get_config does not round-trip"
    clone = keras.saving.deserialize_keras_object(
        _json(keras.saving.serialize_keras_object(layer))
    )
    assert type(clone) is layer_cls and _json(clone.get_config()) == config

    # .keras round trip: same class, same weights, same outputs.
    model = keras.Model(inputs, outputs)
    expected = model(x)
    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_layer = loaded.get_layer(layer.name)
    assert type(loaded_layer) is layer_cls
    for a, b in zip(layer.weights, loaded_layer.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    np.testing.assert_array_equal(
        np.asarray(loaded(x)), np.asarray(expected), err_msg=".keras round trip"
    )

    if not run_training_check:
        return model, None
    # One fit step moves every trainable weight and keeps the loss finite.
    before = [np.array(w) for w in layer.trainable_weights]
    target = np.random.default_rng(seed + 1).normal(size=expected_output_shape)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(
        x, target.astype("float32"), batch_size=len(x), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0]), history.history
    for w, b in zip(layer.trainable_weights, before):
        assert not np.array_equal(np.asarray(w), b), f"fit did not update {w.path}"
    return model, history


def _json(config):
    """`config` as the `.keras` format stores it (tuples become lists)."""
    return json.loads(json.dumps(config))
