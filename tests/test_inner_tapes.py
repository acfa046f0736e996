"""Dynamics that open a `tf.GradientTape` of their own (a Hamiltonian network's
`dH/dq`, a CNF's trace) under every gradient mode: the adjoint's forward solve
stops outer tapes from recording, and must not stop the dynamics' own.

Float64; a Hamiltonian MLP on 3 samples of a 2-D phase space.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import in_mode

import tfnode

TIGHT = dict(rtol=1e-10, atol=1e-10)


@keras.saving.register_keras_serializable(package="tests")
class Hamiltonian(tfnode.ODEFunc):
    """`dq/dt = dH/dp`, `dp/dt = -dH/dq` for a learned `H(q, p)`."""

    def build(self, t_shape, y_shape):
        self.hidden = keras.layers.Dense(16, activation="tanh", dtype=self.dtype)
        self.energy = keras.layers.Dense(1, dtype=self.dtype)
        self.hidden.build((None, y_shape[-1]))
        self.energy.build((None, 16))

    def call(self, t, y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            h = tf.reduce_sum(self.energy(self.hidden(y)))
        dh_dq, dh_dp = tf.split(tape.gradient(h, y), 2, -1)
        return tf.concat([dh_dp, -dh_dq], -1)


@pytest.fixture(scope="module")
def problem():
    keras.utils.set_random_seed(0)
    func = Hamiltonian(dtype="float64")
    y0 = tf.constant(np.random.default_rng(0).normal(size=(3, 2)))
    func(tf.constant(0.0, tf.float64), y0)
    return func, y0, tf.constant([0.0, 0.5, 1.0], tf.float64)


def _loss_and_grads(solver, func, y0, t, **options):
    with tf.GradientTape() as tape:
        tape.watch(y0)
        ys = solver(func, y0, t, **TIGHT, **options)
        loss = _loss(ys)
    variables = func.trainable_variables[:-1]  # H's output bias moves no state
    return loss, tape.gradient(loss, [y0, *variables])


def _loss(ys):
    return tf.reduce_sum(ys[-1] ** 2) + tf.reduce_sum(ys[1] * [1.0, -2.0])


@pytest.fixture(scope="module")
def reference(problem):
    """Plain backprop through the eager solve (TensorFlow's own gradient)."""
    return _loss_and_grads(tfnode.odeint, *problem)


def _check(result, reference):
    loss, grads = result
    assert all(g is not None for g in grads)
    # XLA rounds differently (measured 3e-12); any gap is the solver's 1e-10.
    np.testing.assert_allclose(loss, reference[0], rtol=1e-9)
    # Adjoint or checkpointed backprop vs plain backprop, all at 1e-10:
    # measured within 2e-9 of each other.
    for a, b in zip(grads, reference[1]):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_hamiltonian_adjoint_matches_backprop(problem, reference, mode):
    _check(in_mode(_loss_and_grads, mode)(tfnode.odeint_adjoint, *problem), reference)


def test_hamiltonian_checkpointed_backprop_matches_backprop(problem, reference):
    # The checkpointed sweep (XLA's default) runs its forward solve untaped too.
    run = in_mode(_loss_and_grads, "graph")
    _check(run(tfnode.odeint, *problem, checkpoints=4), reference)


def test_hamiltonian_gradient_matches_finite_differences(problem, reference):
    func, y0, t = problem
    # dL/dy0 against central differences of the forward solve. Step 1e-4:
    # truncation ~1e-8 |L'''| / 6, and the solver's error (1e-10, not smooth
    # in y0: steps are chosen adaptively) over the step ~1e-6.
    step, fd = 1e-4, np.zeros(y0.shape)
    for idx in np.ndindex(*y0.shape):
        bump = np.zeros(y0.shape)
        bump[idx] = step
        up = _loss(tfnode.odeint(func, y0 + bump, t, **TIGHT))
        down = _loss(tfnode.odeint(func, y0 - bump, t, **TIGHT))
        fd[idx] = (up - down) / (2 * step)
    np.testing.assert_allclose(reference[1][0], fd, rtol=0, atol=2e-6)


def test_hamiltonian_flow_conserves_energy(problem):
    func, y0, t = problem

    def energy(y):
        return func.energy(func.hidden(y))[:, 0]

    ys = tfnode.odeint_adjoint(func, y0, t, **TIGHT)
    np.testing.assert_allclose(energy(ys[-1]), energy(y0), rtol=0, atol=1e-8)


def test_outer_tapes_record_none_of_the_forward_solve(problem):
    # An eager tape keeps what it records until released: had it recorded the
    # evaluations of the adjoint's forward solve, the weights would reach them.
    func, y0, t = problem
    seen = []
    call = func.call
    func.call = lambda t, y: seen.append(call(t, y)) or seen[-1]
    try:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(y0)
            tfnode.odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-6)
    finally:
        del func.call
    assert len(seen) > 10
    for out in seen:
        assert all(g is None for g in tape.gradient(out, func.trainable_variables))
        assert tape.gradient(out, y0) is None
