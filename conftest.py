"""Names every doctest in `tfnode/` may use, as Keras' own doctests do."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnode


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(tf=tf, keras=keras, np=np, tfnode=tfnode)
