"""Refined (weight-restricted) LLCs against exact values, and the masks that select weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from tests._utils import assert_within_stderr, quadratic_target


def _chain_mse(params, batch):
    x, y = batch
    out = x
    for w in params:
        out = out @ w
    return jnp.mean((out - y) ** 2)


def _network(seed=0, n=2000):
    """A 4-3-3-2 linear network whose last layer has rank 1, with realisable targets."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 3)) / 2
    w2 = rng.standard_normal((3, 3)) / np.sqrt(3)
    w3 = np.outer(rng.standard_normal(3), rng.standard_normal(2)) / np.sqrt(3)  # rank 1
    x = rng.standard_normal((n, 4))
    y = x @ w1 @ w2 @ w3
    params = tuple(jnp.asarray(w, jnp.float32) for w in (w1, w2, w3))
    return params, (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)), (x, w1, w3)


def test_one_layer_of_a_deep_linear_network_matches_the_exact_ula_value():
    # With W1 and W3 held, the loss is exactly quadratic in W2 with Hessian
    # (2/e) (A Sx A^T) kron (W3 W3^T), A = W1^T, Sx the data's second moment, e = 2 outputs.
    # W3 has rank 1, so 6 of the 9 directions are flat and add nothing: lambda != d/2.
    # Full-batch SGLD on a quadratic is ULA, whose expectation is known exactly at any step.
    params, data, (x, w1, w3) = _network(n=500)
    n = x.shape[0]
    sx = x.T @ x / n
    a = w1.T @ sx @ w1
    mu = (2 / 2) * np.outer(np.linalg.eigvalsh(a), np.linalg.eigvalsh(w3 @ w3.T)).ravel()
    mu = np.clip(mu, 0, None)
    nbeta, gamma = llc.default_nbeta(n), 10.0
    step = 0.1 / (nbeta * mu.max() + gamma)
    mask = (False, True, False)
    r = llc.estimate_llc(
        jax.random.key(0),
        _chain_mse,
        params,
        data,
        weight_mask=mask,
        step_size=step,
        localization=gamma,
        num_chains=16,
        num_draws=4000,
        num_burnin_steps=4000,
    )
    exact = quadratic_target(mu, nbeta, gamma, step)
    assert r.num_params == 9 and np.sum(mu > 1e-9) == 3 and exact < 0.5 * 3  # 3 curved
    assert_within_stderr(r, exact)


def test_weights_outside_the_mask_do_not_move():
    # The loss depends on "b" only: sampling "a" alone leaves it exactly unchanged.
    loss_fn = lambda w, b: jnp.sum(w["b"] ** 2) + 0.0 * jnp.sum(b)  # noqa: E731
    params = {"a": jnp.zeros(3), "b": jnp.ones(2)}
    data = jnp.zeros((100, 1))
    kw = dict(step_size=1e-3, num_chains=2, num_draws=200, num_burnin_steps=0)
    r = llc.estimate_llc(
        jax.random.key(0), loss_fn, params, data, weight_mask={"a": True, "b": False}, **kw
    )
    assert r.llc_mean == 0.0 and r.num_params == 3 and np.all(r.loss_trace == r.init_loss)
    r = llc.estimate_llc(
        jax.random.key(0),
        loss_fn,
        params,
        data,
        weight_mask={"a": False, "b": np.array([True, False])},
        **kw,
    )
    assert r.num_params == 1 and r.llc_mean != 0.0


def test_refined_entries_equal_single_masked_calls():
    params, data, _ = _network(1, n=1000)
    masks = llc.masks.layers(params)
    masks["w2_first_row"] = (False, np.array([[True], [False], [False]]), False)
    kw = dict(step_size=2e-4, batch_size=100, num_chains=3, num_draws=300, num_burnin_steps=100)
    out = llc.estimate_refined_llc(jax.random.key(3), _chain_mse, params, data, masks=masks, **kw)
    assert list(out) == ["0", "1", "2", "w2_first_row"]
    assert [out[k].num_params for k in out] == [12, 9, 6, 3]
    for name, mask in masks.items():
        single = llc.estimate_llc(
            jax.random.key(3), _chain_mse, params, data, weight_mask=mask, **kw
        )
        np.testing.assert_allclose(out[name].loss_trace, single.loss_trace, rtol=1e-5, atol=1e-7)
        assert out[name].flags == single.flags


def test_bad_masks_are_clear_errors_before_compiling():
    params, data, _ = _network(n=50)
    call = lambda m: llc.estimate_llc(  # noqa: E731
        jax.random.key(0), _chain_mse, params, data, step_size=1e-4, weight_mask=m
    )
    with pytest.raises(ValueError, match="structure of params"):
        call((True, False))
    with pytest.raises(ValueError, match="selects no weight"):
        call((False, False, False))
    with pytest.raises(TypeError, match="boolean"):
        call((1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="does not broadcast"):
        call((np.ones(5, bool), False, False))
    with pytest.raises(ValueError, match="non-empty dict"):
        llc.estimate_refined_llc(
            jax.random.key(0), _chain_mse, params, data, masks={}, step_size=1e-4
        )


def test_attention_head_masks_partition_every_layer():
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.MultiHeadAttention(3, 12, decode=False, rngs=rngs)
            self.head = nnx.Linear(12, 2, rngs=rngs)

    params = nnx.to_pure_dict(nnx.state(Block(nnx.Rngs(0)), nnx.Param))
    masks = llc.masks.attention_heads(params, 3)
    assert sorted(masks) == ["attn/head_0", "attn/head_1", "attn/head_2", "attn/shared"]
    total = jax.tree.map(
        lambda p, *ms: sum(np.broadcast_to(m, np.shape(p)).astype(int) for m in ms),
        params,
        *masks.values(),
    )
    # every attention weight in exactly one mask, nothing else in any
    assert all(np.all(t == 1) for t in jax.tree.leaves(total["attn"]))
    assert all(np.all(t == 0) for t in jax.tree.leaves(total["head"]))
    head0 = masks["attn/head_0"]["attn"]
    assert head0["query"]["kernel"][:, 0].all() and not head0["query"]["kernel"][:, 1:].any()
    assert head0["out"]["kernel"][0].all() and not head0["out"]["kernel"][1:].any()
    with pytest.raises(ValueError, match="num_heads"):
        llc.masks.attention_heads(params, 4)
    with pytest.raises(ValueError, match="no multi-head attention"):
        llc.masks.attention_heads(params, 3, path="^decoder")
