"""The curvature probe on a subset of the rows, checked against all the data.

Each case compares diagnose's subset answer with exact values (Rayleigh quotients bound
the smallest eigenvalue from above; Aoyagi's minimal points have no negative curvature;
the DLN origin's Hessian is known in closed form) and with the full-data answer.
"""

import jax
import jax.numpy as jnp
import numpy as np

import llc
from llc import ground_truth as gt
from llc.curvature import resolve_smallest


def test_subset_answer_at_a_minimal_point_is_kept_and_matches_all_the_data():
    # realizable targets: every row's Hessian is J_i^T J_i >= 0, the minimum has no
    # negative curvature on any subset, and the symmetry directions are null on each row
    p = gt.make_dln_problem(
        [5, 4, 4, 3], seed=1, num_data=10_000, prop_rank_reduce=1.0, point="minimal"
    )
    sub = llc.diagnose(jax.random.key(0), p.loss_fn, p.params, p.data, probe_steps=0)
    full = llc.diagnose(
        jax.random.key(0), p.loss_fn, p.params, p.data, probe_steps=0, hvp_rows=None
    )
    assert sub.hvp_rows == 512 and full.hvp_rows == 10_000
    assert sub.flags == full.flags == ()
    assert sub.decided and sub.certificate is None
    assert abs(sub.spectrum.min_eigenvalue) <= sub.tolerance


def test_cost_counts_a_subset_product_at_its_share_of_the_rows():
    p = gt.make_dln_problem(
        [5, 4, 4, 3], seed=1, num_data=10_000, prop_rank_reduce=1.0, point="minimal"
    )
    out = resolve_smallest(
        jax.random.key(0),
        p.loss_fn,
        p.params,
        p.data,
        nbeta=1e3,
        localization=1.0,
        k=3,
        num_matvecs=20,
        max_matvecs=80,
        num_probes=2,
        chunk=10_000,
        hvp_rows=500,
    )
    assert out.rows == 500
    # the subset's products at 500 / 10,000 each, and one full-data Rayleigh quotient
    np.testing.assert_allclose(out.full_matvecs, (out.num_matvecs - 1) * 0.05 + 1, rtol=1e-12)


def test_unconfined_saddle_is_proven_on_all_the_data_from_the_subset():
    # at W1 = W2 = 0 the Hessian's eigenvalues are +-(2 / N_out) sigma_i(mean x^T y)
    dln = gt.make_dln_problem([5, 4, 3], seed=2, num_data=5000, prop_rank_reduce=0.0)
    origin = tuple(jnp.zeros_like(w) for w in dln.params)
    x, y = (np.asarray(a, np.float64) for a in dln.data)
    mu_min = -2 / 3 * np.linalg.svd(x.T @ y / len(x), compute_uv=False)[0]
    rep = llc.diagnose(jax.random.key(0), dln.loss_fn, origin, dln.data, probe_steps=0)
    assert rep.hvp_rows == 512
    assert rep.flags[:2] == ("negative_curvature", "unconfined")
    q = rep.certificate.rayleigh_quotient
    # a Rayleigh quotient is never below the smallest eigenvalue (float32 rounding aside)
    assert mu_min * (1 + 1e-5) <= q < 0
    assert rep.nbeta * abs(q) >= rep.localization
    assert rep.evidence["negative_curvature"].values["mu_min"] == q
    # the smallest values are the full data's Rayleigh-Ritz values (the spectrum and the
    # certificate agree), and interlacing puts the i-th at or above the i-th eigenvalue
    assert rep.spectrum.min_eigenvalue == q
    sigma = np.linalg.svd(x.T @ y / len(x), compute_uv=False)
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
