"""`CNFBijector`: a `tfnode.models.CNF` as a `tfp.bijectors.Bijector` (its own
module so that `import tfnode` does not import TensorFlow Probability).

One solve gives a map and its log-determinant together; TFP's own FFJORD
bijector keeps both in the bijector cache with `BijectorCacheWithGreedyAttrs`
(a TFP internal, used the same way here), so that `log_prob` of a
`TransformedDistribution` solves once, not twice.
"""

from __future__ import annotations

import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util


class CNFBijector(tfp.bijectors.Bijector):
    """The flow of a `CNF` from its base (`t0`) to data (`t1`).

    Each of `forward`, `inverse` and their log-det-Jacobians is one solve
    (the log-determinant is the integrated trace, with the model's `trace`
    estimator). Gradients flow to the model's weights as in `CNF.log_prob`.

    Args:
        model: The `tfnode.models.CNF`.
        name: The bijector's name.
    """

    def __init__(self, model, name="cnf"):
        self._model = model
        super().__init__(
            forward_min_event_ndims=1,
            validate_args=False,
            parameters=dict(locals()),
            dtype=model.compute_dtype,
            name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse"
    )

    def _augmented_forward(self, z):
        end = self._model._flow(z, False, self._model.trace)[0]
        return end["y"], {"fldj": end["trace"], "ildj": -end["trace"]}

    def _augmented_inverse(self, x):
        end = self._model._flow(x, True, self._model.trace)[0]
        return end["y"], {"ildj": end["trace"], "fldj": -end["trace"]}

    def _forward(self, z):
        return self._augmented_forward(z)[0]

    def _inverse(self, x):
        return self._augmented_inverse(x)[0]

    def _forward_log_det_jacobian(self, z):
        return self._log_det(z, self._cache.forward_attributes(z), "fldj")

    def _inverse_log_det_jacobian(self, x):
        return self._log_det(x, self._cache.inverse_attributes(x), "ildj")

    def _log_det(self, value, cached, key):
        if key not in cached:  # no cached map call: solve (and cache) now
            solve = (
                self._augmented_forward if key == "fldj" else self._augmented_inverse
            )
            cached.update(solve(value)[1])
        return cached[key]
