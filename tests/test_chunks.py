"""Chunked runs: the same chains as one call, partial results on Ctrl-C, early stop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import loop


def regression():
    x = jax.random.normal(jax.random.key(0), (600, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(jax.random.key(1), (600,))
    w = jnp.linalg.lstsq(x, y)[0]
    return (lambda p, b: 0.5 * jnp.mean((b[0] @ p - b[1]) ** 2)), w, (x, y)


KW = {
    "step_size": 1e-4,
    "batch_size": 60,
    "num_chains": 3,
    "num_draws": 250,
    "num_burnin_steps": 40,
    "num_steps_bw_draws": 2,
    "full_loss_every": 20,
    "acceptance_checks": 25,
}


def test_chunked_run_equals_one_call():
    loss_fn, w, data = regression()
    one = llc.estimate_llc(jax.random.key(5), loss_fn, w, data, **KW)
    chunked = llc.estimate_llc(jax.random.key(5), loss_fn, w, data, chunk_draws=60, **KW)
    np.testing.assert_array_equal(chunked.loss_trace, one.loss_trace)
    np.testing.assert_array_equal(chunked.burnin_loss_trace, one.burnin_loss_trace)
    np.testing.assert_array_equal(chunked.full_loss_trace, one.full_loss_trace)
    np.testing.assert_array_equal(chunked.full_loss_steps, one.full_loss_steps)
    np.testing.assert_array_equal(chunked.acceptance, one.acceptance)
    assert chunked.llc_mean == one.llc_mean and chunked.flags == one.flags


@pytest.mark.slow
def test_ctrl_c_after_a_chunk_keeps_the_draws_done(monkeypatch):
    loss_fn, w, data = regression()
    real, calls = loop.run_chains, []

    def interrupted_on_the_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "run_chains", interrupted_on_the_third_chunk)
    with pytest.warns(RuntimeWarning, match="interrupted after 120 of 250"):
        r = llc.estimate_llc(jax.random.key(5), loss_fn, w, data, chunk_draws=60, **KW)
    assert r.num_draws == 120 and r.loss_trace.shape == (3, 120)
    assert "interrupted" in r.flags and np.isfinite(r.llc_mean)
    monkeypatch.setattr(loop, "run_chains", real)
    full = llc.estimate_llc(jax.random.key(5), loss_fn, w, data, **KW)
    np.testing.assert_array_equal(r.loss_trace, full.loss_trace[:, :120])


def test_stops_early_once_every_chain_diverged():
    loss_fn, w, data = regression()
    settings = {**KW, "step_size": 0.5, "nbeta": 400.0, "num_burnin_steps": 0}
    with pytest.warns(RuntimeWarning, match="stopped after 60 of 250 draws"):
        r = llc.estimate_llc(jax.random.key(5), loss_fn, w, data, chunk_draws=60, **settings)
    assert r.diverged.all() and r.num_draws == 60 and "interrupted" not in r.flags
