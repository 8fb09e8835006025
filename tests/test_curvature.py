"""The curvature probe on a subset of the rows, checked against all the data.

Each case compares diagnose's answer with exact values: Rayleigh quotients bound the
smallest eigenvalue from above, the DLN origin's Hessian is known in closed form, and a
saddle built so that a subset of the rows hides it is still found.
"""

import jax
import jax.numpy as jnp
import numpy as np

import llc
from llc import ground_truth as gt
from llc.curvature import resolve_smallest


def test_a_saddle_the_subset_hides_is_found_on_all_the_data():
    # per row 0.5 a_i w0^2 + 0.25 w0^4 + 0.25 w1^4 + 0.5 w2^2 with mean(a) = -0.01 and
    # sd(a) = 1: the full Hessian is diag(-0.01, 0, 1), unconfined (nbeta 0.01 = 10.9 > 1),
    # but a 512-row subset's curvature along w0 is off by ~ 1 / sqrt(512) and often
    # positive, while it agrees with the full data along w1 (zero on every row)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(10_000)
    data = jnp.asarray((a - a.mean() - 0.01)[:, None], jnp.float32)

    def loss_fn(w, b):
        quartic = 0.25 * w[0] ** 4 + 0.25 * w[1] ** 4 + 0.5 * w[2] ** 2
        return jnp.mean(0.5 * b[:, 0] * w[0] ** 2) + quartic

    for seed in range(4):
        rep = llc.diagnose(jax.random.key(seed), loss_fn, jnp.zeros(3), data, probe_steps=0)
        assert rep.flags[:2] == ("negative_curvature", "unconfined"), (seed, rep.verdict)
        np.testing.assert_allclose(rep.certificate.rayleigh_quotient, -0.01, rtol=1e-3)


def test_a_minimum_is_decided_on_all_the_data():
    p = gt.make_dln_problem(
        [5, 4, 4, 3], seed=1, num_data=10_000, prop_rank_reduce=1.0, point="minimal"
    )
    rep = llc.diagnose(jax.random.key(0), p.loss_fn, p.params, p.data, probe_steps=0)
    assert rep.hvp_rows == 10_000 and rep.flags == () and rep.certificate is None


def test_cost_counts_a_subset_product_at_its_share_of_the_rows():
    # d = 4 = the Lanczos length: one exact probe of 4 products on 10 of 100 rows, one
    # full-data Rayleigh quotient, and one more full-data product to refine the second
    # negative direction
    mu = jnp.array([2.0, 1.0, -1.0, -0.5])
    out = resolve_smallest(
        jax.random.key(0),
        lambda w, b: 0.5 * jnp.sum(mu * w**2),
        jnp.zeros(4),
        jnp.zeros((100, 1)),
        nbeta=10.0,
        localization=1.0,
        k=2,
        num_matvecs=4,
        max_matvecs=4,
        num_probes=2,
        chunk=100,
        hvp_rows=10,
    )
    assert out.rows == 10 and out.num_matvecs == 6
    np.testing.assert_allclose(out.full_matvecs, 4 * 0.1 + 2, rtol=1e-12)
    np.testing.assert_allclose(out.spectrum.smallest, [-1.0, -0.5], rtol=1e-5)


def test_unconfined_saddle_is_proven_on_all_the_data_from_the_subset():
    # at W1 = W2 = 0 the Hessian's eigenvalues are +-(2 / N_out) sigma_i(mean x^T y)
    dln = gt.make_dln_problem([5, 4, 3], seed=2, num_data=5000, prop_rank_reduce=0.0)
    origin = tuple(jnp.zeros_like(w) for w in dln.params)
    x, y = (np.asarray(a, np.float64) for a in dln.data)
    sigma = np.linalg.svd(x.T @ y / len(x), compute_uv=False)
    rep = llc.diagnose(jax.random.key(0), dln.loss_fn, origin, dln.data, probe_steps=0)
    assert rep.hvp_rows == 512
    assert rep.flags[:2] == ("negative_curvature", "unconfined")
    q = rep.certificate.rayleigh_quotient
    # a Rayleigh quotient is never below the smallest eigenvalue (float32 rounding aside)
    assert -2 / 3 * sigma[0] * (1 + 1e-5) <= q < 0
    assert rep.nbeta * abs(q) >= rep.localization
    assert rep.evidence["negative_curvature"].values["mu_min"] == q
    # the refined smallest values are full-data Rayleigh-Ritz values: interlacing puts
    # the i-th at or above the i-th eigenvalue
    exact = np.sort(np.r_[np.repeat(-2 / 3 * sigma, 4), np.repeat(2 / 3 * sigma, 4), np.zeros(8)])
    k = len(rep.spectrum.smallest)
    assert np.all(rep.spectrum.smallest >= exact[:k] + 1e-5 * exact[:k])


def test_subset_that_disagrees_with_all_the_data_is_rerun_on_all_of_it():
    # linear regression: H = X^T X / n, positive definite; a 512-row subset's smallest
    # eigenvalue is off by ~ 1 / sqrt(512), far above the resolution 0.1 gamma / nbeta
    p = gt.make_regular_problem(6, seed=3, num_data=10_000)
    x = np.asarray(p.data[0], np.float64)
    exact = np.linalg.eigvalsh(x.T @ x / len(x))
    rep = llc.diagnose(jax.random.key(0), p.loss_fn, p.params, p.data, probe_steps=0)
    assert rep.hvp_rows == 10_000
    np.testing.assert_allclose(rep.spectrum.min_eigenvalue, exact[0], rtol=1e-4)
    np.testing.assert_allclose(rep.spectrum.max_eigenvalue, exact[-1], rtol=1e-4)
    assert rep.flags == ()
