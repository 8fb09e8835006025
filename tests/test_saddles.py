"""Saddles diagnose must never call a minimum, with answers derived by hand.

Each case is a class of the saddles issue: small negative eigenvalues in a large bulk,
tiny eigenvalues that nbeta makes decisive, confined curvature too small to matter,
higher-order saddles of deep linear networks (zero gradient and Hessian, or a PSD
Hessian, yet lower loss nearby), non-finite input, and remedies followed as returned.
"""

from itertools import pairwise

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import ground_truth as gt
from tests._utils import assert_within_stderr, dummy_data

N = 10_000
SADDLE_FLAGS = {"negative_curvature", "unconfined", "higher_order_saddle", "undecided"}


def diagonal(mu):
    mu = jnp.asarray(mu, jnp.float32)
    return lambda w, b: 0.5 * jnp.sum(mu * w**2)


def assert_not_called_a_minimum(rep):
    assert SADDLE_FLAGS & set(rep.flags), (rep.flags, rep.verdict)
    assert "local minimum" not in rep.verdict


def test_small_negative_eigenvalue_in_a_large_bulk_is_certified():
    # d = 2000, bulk in [0, 1], one eigenvalue -1e-3; nbeta = 1e4 needs gamma > 10.
    mu = np.r_[np.linspace(0.0, 1.0, 1999), -1e-3]
    rep = llc.diagnose(
        jax.random.key(0),
        diagonal(mu),
        jnp.zeros(2000),
        dummy_data(N),
        nbeta=1e4,
        k=1,
        probe_steps=0,
    )
    assert_not_called_a_minimum(rep)
    assert "unconfined" in rep.flags
    cert = rep.certificate
    assert cert is not None and cert.rayleigh_quotient < 0
    # A Rayleigh quotient lies in [mu_min, mu_max]: negative means proven.
    assert -1e-3 - 1e-6 <= cert.rayleigh_quotient <= -rep.tolerance
    assert rep.min_localization >= 1e4 * abs(cert.rayleigh_quotient) - 1e-6


def test_a_converged_tiny_eigenvalue_that_nbeta_makes_decisive():
    # mu_min = -5e-6 against mu_max = 1: nbeta = 1e6 makes nbeta |mu_min| = 5 > gamma = 1.
    mu = np.r_[np.ones(20), 0.5 * np.ones(10), -5e-6]
    rep = llc.diagnose(jax.random.key(0), diagonal(mu), jnp.zeros(31), dummy_data(N), nbeta=1e6)
    assert rep.flags[:2] == ("negative_curvature", "unconfined")
    assert rep.min_localization == pytest.approx(5.0, rel=1e-3)
    assert rep.estimate_kwargs["localization"] > 5.0


def test_confined_negative_curvature_too_small_to_matter_is_reported_not_flagged():
    # 200 eigenvalues -3e-5 beside 300 at 1, nbeta = 1e3, gamma = 1: each negative
    # direction contributes 0.5 * (-0.03) / 0.97, -3.1 in all against +150: immaterial.
    mu = np.r_[np.ones(300), -3e-5 * np.ones(200)]
    rep = llc.diagnose(
        jax.random.key(0), diagonal(mu), jnp.zeros(500), dummy_data(N), nbeta=1e3, probe_steps=0
    )
    assert rep.flags == (), rep.evidence
    exact = 0.5 * 200 * (-0.03) / 0.97
    assert rep.negative_contribution == pytest.approx(
        exact, abs=4 * rep.negative_contribution_stderr + 0.1
    )
    assert "immaterial" in rep.verdict


def _three_layer_dln(seed=0):
    return gt.make_dln_problem([4, 3, 3, 4], seed=seed, num_data=2000, prop_rank_reduce=0.0)


def test_three_layer_origin_is_a_higher_order_saddle():
    # Zero gradient and zero Hessian at the origin; the loss is cubic there.
    p = _three_layer_dln()
    origin = tuple(jnp.zeros_like(w) for w in p.params)
    rep = llc.diagnose(jax.random.key(0), p.loss_fn, origin, p.data, verify_steps=100)
    assert rep.grad_norm < 1e-6 and abs(rep.spectrum.min_eigenvalue) < 1e-6
    assert "higher_order_saddle" in rep.flags
    # the line search along the null directions or the short chains (run only when the
    # line search found nothing) reach loss below L_n(w*)
    finds = [x for x in (rep.null_search, rep.lower_loss) if x is not None and x.found]
    assert finds and min(x.loss_drop for x in finds) < -1
    assert_not_called_a_minimum(rep)
    out = llc.refine_to_minimum(
        jax.random.key(1), p.loss_fn, origin, p.data, num_steps=3000, max_saddle_steps=8
    )
    assert out.higher_order_steps >= 1 and out.distance > 0
    assert out.loss_after < 0.1 * out.loss_before
    assert out.reached_minimum, out.note


def test_rank_one_critical_point_of_a_three_layer_network_is_a_higher_order_saddle():
    # A full-rank teacher; w* its best rank-1 approximation, every layer of rank 1
    # (noise-free data, whitened inputs: a critical point). The Hessian is PSD within the
    # resolution; lower loss needs three layers to move together.
    rng = np.random.default_rng(1)
    widths, n = (4, 3, 3, 4), 4000
    x = rng.standard_normal((n, 4))
    x = x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / n)).T
    teacher = rng.standard_normal((4, 4))
    u, s, vt = np.linalg.svd(teacher)
    mats = [np.zeros((a, b)) for a, b in pairwise(widths)]
    c = s[0] ** (1 / 3)
    mats[0][:, 0], mats[1][0, 0], mats[2][0, :] = c * u[:, 0], c, c * vt[0]
    params = tuple(jnp.asarray(w, jnp.float32) for w in mats)
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(x @ teacher, jnp.float32))

    def loss_fn(w, b):
        return jnp.mean(jnp.sum((b[0] @ w[0] @ w[1] @ w[2] - b[1]) ** 2, axis=1))

    rep = llc.diagnose(jax.random.key(0), loss_fn, params, data, verify_steps=100)
    assert rep.grad_norm < 1e-4
    assert_not_called_a_minimum(rep)


def test_following_estimate_kwargs_gives_a_confined_estimate():
    mu = np.r_[np.ones(9), -2e-3]
    rep = llc.diagnose(jax.random.key(0), diagonal(mu), jnp.zeros(10), dummy_data(N))
    assert "unconfined" in rep.flags and rep.estimate_kwargs
    r = llc.estimate_llc(
        jax.random.key(1),
        diagonal(mu),
        jnp.zeros(10),
        dummy_data(N),
        step_size=1e-5,
        num_draws=2000,
        num_burnin_steps=2000,
        **rep.estimate_kwargs,
    )
    assert np.isfinite(r.llc_mean) and r.llc_mean >= 0
    assert "lower_loss_escape" not in r.flags


def test_the_remedy_at_a_higher_order_saddle_is_verified_or_refused():
    # A remedy is offered only when verified: following it gives no escape. When no
    # localization tried held the chains, estimate_kwargs is empty and the remedy says so
    # (and points to the relabelled LLC, which is defined there).
    p = _three_layer_dln()
    origin = tuple(jnp.zeros_like(w) for w in p.params)
    rep = llc.diagnose(jax.random.key(0), p.loss_fn, origin, p.data)
    assert "higher_order_saddle" in rep.flags
    if not rep.estimate_kwargs:
        assert "no localization up to" in rep.remedy and "llc.relabel" in rep.remedy
        return
    gamma = rep.estimate_kwargs["localization"]
    r = llc.estimate_llc(
        jax.random.key(1),
        p.loss_fn,
        origin,
        p.data,
        step_size=0.1 / gamma,
        batch_size=500,
        num_draws=500,
        num_burnin_steps=500,
        **rep.estimate_kwargs,
    )
    assert np.isfinite(r.llc_mean) and r.llc_mean > -0.5
    assert "lower_loss_escape" not in r.flags


def test_non_finite_input_is_refused_everywhere_with_estimate_llcs_message():
    loss_fn = diagonal(np.ones(3))
    bad = dummy_data(100).at[3].set(jnp.nan)

    def nan_loss(w, b):
        return jnp.mean(b) + jnp.sum(w**2)

    entries = [
        lambda lf, w, d: llc.diagnose(jax.random.key(0), lf, w, d),
        lambda lf, w, d: llc.hessian_spectrum(jax.random.key(0), lf, w, d),
        lambda lf, w, d: llc.refine_to_minimum(jax.random.key(0), lf, w, d),
        lambda lf, w, d: llc.estimate_llc(jax.random.key(0), lf, w, d, step_size=1e-3),
    ]
    for entry in entries:
        with pytest.raises(ValueError, match=r"full-data loss L_n\(w\*\)\) is nan"):
            entry(nan_loss, jnp.zeros(3), bad)
        with pytest.raises(ValueError, match="contains NaN or inf"):
            entry(loss_fn, jnp.array([0.0, jnp.nan, 0.0]), dummy_data(100))
        with pytest.raises(TypeError, match="does not support"):
            entry(loss_fn, jnp.zeros(3, jnp.bfloat16), dummy_data(100))
        with pytest.raises(TypeError, match="rng_key must be a single JAX PRNG key"):
            llc.diagnose(0, loss_fn, jnp.zeros(3), dummy_data(100))
    for entry in entries[:3]:
        with pytest.raises(ValueError, match="gradient of loss_fn at params"):
            entry(
                lambda w, b: jnp.sqrt(jnp.sum(w**2)) + 0 * jnp.mean(b),
                jnp.zeros(3),
                dummy_data(100),
            )


def test_a_confined_saddles_negative_estimate_is_explained_not_called_an_escape():
    # nbeta mu = -0.87 against gamma = 1: held, with E[lambda_hat] = 0.4995 - 3.32 < 0.
    nbeta = N / np.log(N)
    mu = np.array([1.0, -0.87 / nbeta])
    with pytest.warns(RuntimeWarning, match="negative_estimate"):
        r = llc.estimate_llc(
            jax.random.key(1),
            diagonal(mu),
            jnp.zeros(2),
            dummy_data(N),
            step_size=5e-4,
            num_chains=8,
            num_draws=20_000,
            num_burnin_steps=30_000,
        )
    rep = llc.diagnose(jax.random.key(0), diagonal(mu), jnp.zeros(2), dummy_data(N), result=r)
    p = nbeta * mu + 1.0
    exact = float(np.sum(0.5 * nbeta * mu / p))
    assert rep.lambda_quadratic == pytest.approx(exact, rel=1e-3)
    assert "unconfined" not in rep.flags and "confined_saddle" in rep.flags
    assert "not an escape" in str(rep.evidence["confined_saddle"])


def test_projecting_the_negative_directions_out_samples_the_complement():
    # A rotated saddle that gamma = 1 cannot confine: projecting its negative eigenvector
    # out gives exactly the quadratic LLC of the other directions.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    mu = np.array([1.0, 2.0, 0.5, 1.5, -2e-3])
    a = jnp.asarray((q * mu) @ q.T, jnp.float32)

    def loss_fn(w, b):
        return 0.5 * w @ a @ w

    rep = llc.diagnose(jax.random.key(0), loss_fn, jnp.zeros(5), dummy_data(N), k=1, probe_steps=0)
    assert "unconfined" in rep.flags
    v = rep.certificate.direction
    r = llc.estimate_llc(
        jax.random.key(3),
        loss_fn,
        jnp.zeros(5),
        dummy_data(N),
        step_size=1e-5,
        num_chains=8,
        num_draws=10_000,
        num_burnin_steps=5_000,
        held_directions=([v], [float("inf")]),
    )
    nbeta = N / np.log(N)
    exact = float(np.sum(0.5 * nbeta * mu[:4] / (nbeta * mu[:4] + 1.0)))
    assert "lower_loss_escape" not in r.flags
    assert_within_stderr(r, exact, extra=0.01)


@pytest.mark.parametrize(("probe_step", "source"), [(None, "run"), (1e-3, "probe")])
def test_a_run_that_diffused_as_far_as_the_probe_is_the_probe(probe_step, source):
    # At a minimum, diagnose(result=r) reuses r's chains for the lower-loss question when
    # they went at least as far (steps x step) as its own short chains would: by default
    # those take r's step for 1,000 steps, r took 2,000. A probe asked to step 1e-3
    # (capped at 0.5 / (nbeta mu_max + gamma) = 2.3e-4; 1,000 x 2.3e-4 > 2,000 x 5e-5)
    # is not covered, and runs.
    mu = np.array([1.0, 0.5, 2.0, 0.05])
    r = llc.estimate_llc(
        jax.random.key(1), diagonal(mu), jnp.zeros(4), dummy_data(N), step_size=5e-5
    )
    rep = llc.diagnose(
        jax.random.key(0),
        diagonal(mu),
        jnp.zeros(4),
        dummy_data(N),
        result=r,
        step_size=probe_step,
    )
    assert rep.lower_loss.source == source and not rep.lower_loss.found
    assert (rep.cost_parts["lower_loss_probe"] == 0) == (source == "run")
    assert rep.cost_in_sgld_steps == pytest.approx(sum(rep.cost_parts.values()))
    assert not SADDLE_FLAGS & set(rep.flags), rep.flags
    assert ("the run's" in rep.verdict) == (source == "run")


def test_an_escaped_run_makes_a_higher_order_saddle_without_a_probe():
    # The origin of a 3-layer linear network (zero gradient and Hessian, a cubic loss): a
    # run that escaped, longer than the probe at the same step (2,000 steps against
    # 1,000), is the probe, and diagnose reads the higher-order saddle from it.
    p = _three_layer_dln()
    origin = tuple(jnp.zeros_like(w) for w in p.params)
    with pytest.warns(RuntimeWarning, match="lower_loss_escape"):
        r = llc.estimate_llc(
            jax.random.key(1), p.loss_fn, origin, p.data, step_size=5e-4, num_chains=2
        )
    rep = llc.diagnose(jax.random.key(0), p.loss_fn, origin, p.data, result=r, verify_steps=100)
    assert "higher_order_saddle" in rep.flags
    assert rep.lower_loss.source == "run" and rep.lower_loss.found
    assert rep.lower_loss.loss_drop < -1
    assert rep.cost_parts["lower_loss_probe"] == 0
