"""llc.relabel: the realizable problem at any point, against exact learning coefficients."""

from itertools import pairwise

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import ground_truth as gt
from llc.hessian import dense_hessian_eigenvalues

CONTRACT = 0.15  # the project's single-run accuracy contract (tests/test_accuracy_dln.py)


def _dln_predict(params, x):
    for w in params:
        x = x @ w
    return x


def _dln_saddle(widths, rank, seed=0):
    """A rank-``rank`` minimal factorisation of a full-rank teacher's truncated SVD.

    It is a critical point of the teacher's regression loss that is not a minimum (a
    saddle of the original problem, with higher loss than the teacher).
    """
    rng = np.random.default_rng(seed)
    mats = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in pairwise(widths)]
    product = mats[0]
    for w in mats[1:]:
        product = product @ w
    u, s, vt = np.linalg.svd(product)
    low = (u[:, :rank] * s[:rank]) @ vt[:rank]
    first = np.zeros((widths[0], widths[1]))
    first[:, :rank] = (u[:, :rank] * s[:rank]) @ np.eye(rank)[:, :rank]
    chain = [first]
    for a, b in pairwise(widths[1:-1]):
        m = np.zeros((a, b))
        m[:rank, :rank] = np.eye(rank)
        chain.append(m)
    last = np.zeros((widths[-2], widths[-1]))
    last[:rank] = vt[:rank]
    chain.append(last)
    point = gt.dln_minimal_point(chain)
    check = point[0]
    for w in point[1:]:
        check = check @ w
    assert np.allclose(check, low)
    return [jnp.asarray(w, jnp.float32) for w in point], product


@pytest.mark.slow
@pytest.mark.parametrize(("widths", "rank"), [((4, 3, 3, 4), 1), ((3, 4, 3), 2)])
def test_relabelled_llc_at_a_rank_k_point_is_aoyagis_lambda(widths, rank):
    params, _ = _dln_saddle(widths, rank)
    x = jax.random.normal(jax.random.key(0), (20_000, widths[0]))
    loss_fn, data = llc.relabel(_dln_predict, params, x)
    assert float(loss_fn(params, data)) == 0.0
    lam = float(gt.dln_learning_coefficient(widths, rank)[0])
    r = llc.estimate_llc(
        jax.random.key(1),
        loss_fn,
        params,
        data,
        num_chains=8,
        **gt.dln_recipe("1K", point="minimal"),
    )
    assert "lower_loss_escape" not in r.flags
    allowed = CONTRACT * lam + 4 * r.llc_stderr
    assert abs(r.llc_mean - lam) <= allowed, (r.llc_mean, r.llc_stderr, lam, r.flags)


def test_kl_relabelling_of_a_softmax_regression_has_the_softmax_degeneracy():
    # Logits x W (p inputs, C classes): adding one vector to every class's weights leaves
    # the predictive distribution unchanged, so the Hessian rank of the relabelled KL is
    # p (C - 1) and, the model being otherwise regular, lambda = p (C - 1) / 2.
    p, classes = 3, 4
    w = jax.random.normal(jax.random.key(0), (p, classes))
    x = jax.random.normal(jax.random.key(1), (5_000, p))
    loss_fn, data = llc.relabel(lambda w, x: x @ w, w, x, divergence="kl")
    with jax.enable_x64(True):
        w64 = jnp.asarray(w, jnp.float64)
        data64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), data)
        mu = dense_hessian_eigenvalues(loss_fn, w64, data64)
    assert np.sum(mu > 1e-8 * mu.max()) == p * (classes - 1)
    lam = p * (classes - 1) / 2
    r = llc.estimate_llc(
        jax.random.key(2),
        loss_fn,
        w,
        data,
        step_size=1e-4,
        batch_size=500,
        num_chains=4,
        num_draws=2000,
        num_burnin_steps=2000,
    )
    allowed = CONTRACT * lam + 4 * r.llc_stderr
    assert abs(r.llc_mean - lam) <= allowed, (r.llc_mean, r.llc_stderr, lam)


def test_trajectory_relabels_every_checkpoint_as_relabel_does():
    widths = (3, 3, 3)
    points = [_dln_saddle(widths, k)[0] for k in (1, 2)]
    checkpoints = jax.tree.map(lambda *p: jnp.stack(p), *points)
    x = jax.random.normal(jax.random.key(0), (2_000, 3))
    settings = {"step_size": 1e-4, "batch_size": 200, "num_draws": 200, "num_burnin_steps": 100}
    traj = llc.estimate_llc_trajectory(
        jax.random.key(3),
        None,
        checkpoints,
        None,
        relabel=llc.Relabelling(_dln_predict, x),
        **settings,
    )
    np.testing.assert_allclose(traj.init_loss, 0.0, atol=1e-12)
    for t, point in enumerate(points):
        loss_fn, data = llc.relabel(_dln_predict, point, x)
        alone = llc.estimate_llc(jax.random.key(3), loss_fn, point, data, **settings)
        np.testing.assert_allclose(traj.llc_mean[t], alone.llc_mean, rtol=1e-4)


def test_bad_input_is_refused_with_the_argument_named():
    x = jnp.ones((10, 2))
    with pytest.raises(ValueError, match="divergence must be one of"):
        llc.relabel(lambda w, x: x @ w, jnp.ones(2), x, divergence="l2")
    with pytest.raises(ValueError, match="not finite on 10 of 10"):
        llc.relabel(lambda w, x: x @ w / 0.0, jnp.ones(2), x)
    with pytest.raises(TypeError, match="predict_fn must be a function"):
        llc.relabel(None, jnp.ones(2), x)
    with pytest.raises(ValueError, match="pass loss_fn=None and data=None"):
        llc.estimate_llc_trajectory(
            jax.random.key(0),
            lambda w, b: 0.0,
            jnp.ones((2, 2)),
            x,
            relabel=llc.Relabelling(lambda w, x: x @ w, x),
            step_size=1e-3,
        )
