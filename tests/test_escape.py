"""Lower-loss escapes: detected at saddles, never at minima (slt-reference.md 4.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import ground_truth as gt
from tests._utils import dummy_data


def test_no_escape_at_a_minimum_full_batch_checks_never_go_below():
    p = gt.make_regular_problem(4, seed=0, num_data=5000)
    r = llc.estimate_llc(
        jax.random.key(0),
        p.loss_fn,
        p.params,
        p.data,
        step_size=5e-5,
        batch_size=250,
        num_chains=4,
        num_draws=2000,
        num_burnin_steps=500,
    )
    assert r.full_loss_trace.shape == (4, 10)
    np.testing.assert_array_equal(r.full_loss_steps, 500 + 200 * np.arange(1, 11) - 1)
    # L_n(w) >= L_n(w*) for every w at the least-squares optimum: exactly 0 below.
    assert (r.share_below_init == 0).all() and not r.escaped.any()
    assert (r.min_loss_drop > -1e-2).all()
    assert "lower_loss_escape" not in r.flags


def double_well(w, batch):
    # A saddle at 0 with lower minima at w1 = +-1 (loss -1/4).
    return 0.5 * (w[0] ** 2 - w[1] ** 2) + 0.25 * w[1] ** 4


def test_unconfined_saddle_escape_is_detected_with_its_step_and_direction():
    n = 10_000
    with pytest.warns(RuntimeWarning, match="lower_loss_escape"):
        r = llc.estimate_llc(
            jax.random.key(1),
            double_well,
            jnp.zeros(2),
            dummy_data(n),
            step_size=1e-4,
            batch_size=100,
            num_chains=4,
            num_draws=1000,
            num_burnin_steps=1000,
            full_loss_every=100,
            escape_direction=jnp.array([0.0, 1.0]),
        )
    assert r.escaped.all() and (r.escaped_at_step >= 0).all()
    assert (r.escaped_at_step <= r.full_loss_steps[-1]).all()
    # The chains sit in the lower minima: nbeta * (L - L*) ~ -nbeta / 4.
    np.testing.assert_allclose(r.min_loss_drop, -r.nbeta / 4, rtol=0.1)
    assert (r.share_below_init > 0.9).all()
    assert r.projection_trace.shape == (4, 1000)
    np.testing.assert_allclose(np.abs(r.projection_trace[:, -1]), 1.0, atol=0.1)
    assert {"lower_loss_escape", "negative_estimate"} <= set(r.flags)
    assert "llc.diagnose" in r.evidence["lower_loss_escape"]


def test_without_full_checks_the_minibatch_trace_decides():
    with pytest.warns(RuntimeWarning, match="lower_loss_escape"):
        r = llc.estimate_llc(
            jax.random.key(2),
            double_well,
            jnp.zeros(2),
            dummy_data(1000),
            step_size=1e-4,
            batch_size=100,
            num_chains=2,
            num_draws=1000,
            num_burnin_steps=1000,
            full_loss_every=0,
        )
    assert r.full_loss_trace.shape == (2, 0) and r.escaped.all()
    assert "minibatch trace" in r.evidence["lower_loss_escape"]


def test_escape_direction_must_match_params():
    with pytest.raises(ValueError, match="escape_direction"):
        llc.estimate_llc(
            jax.random.key(0),
            double_well,
            jnp.zeros(2),
            dummy_data(100),
            step_size=1e-4,
            escape_direction=jnp.zeros(3),
            num_draws=10,
        )
