"""Saddle diagnostics against exact quadratic results and deep-linear-network theory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import ground_truth as gt
from tests._utils import assert_within_stderr, dummy_data

N = 10_000
NBETA = N / np.log(N)


def quadratic(mu, centre=None):
    mu = jnp.asarray(mu, jnp.float32)
    c = jnp.zeros_like(mu) if centre is None else jnp.asarray(centre, jnp.float32)
    return lambda w, b: 0.5 * jnp.sum(mu * (w - c) ** 2)


def exact_expectation(mu, g, gamma):
    """slt-reference 3.1 / 4.1: sum 0.5 nb mu / p - (nb g)^2 (gamma + 0.5 nb mu) / p^2."""
    mu, g = np.asarray(mu, np.float64), np.asarray(g, np.float64)
    p = NBETA * mu + gamma
    return float(
        np.sum(0.5 * NBETA * mu / p - (NBETA * g) ** 2 * (gamma + 0.5 * NBETA * mu) / p**2)
    )


def test_confined_quadratic_saddle_worked_example():
    # 9 directions mu = 1, one mu = -5e-4, gamma = 1: confined (1 > 0.543), E = 3.902.
    mu = np.r_[np.ones(9), -5e-4]
    rep = llc.diagnose(jax.random.key(0), quadratic(mu), jnp.zeros(10), dummy_data(N))
    assert rep.flags == ("negative_curvature",)
    assert rep.lambda_quadratic == pytest.approx(3.902, abs=2e-3)
    assert rep.min_localization == pytest.approx(NBETA * 5e-4, rel=1e-3)
    assert rep.negative_directions == 1
    assert "saddle" in rep.verdict


@pytest.mark.slow
def test_unconfined_saddle_gives_the_threshold_and_the_estimate_is_flagged():
    mu = np.r_[np.ones(9), -2e-3]
    rep = llc.diagnose(jax.random.key(0), quadratic(mu), jnp.zeros(10), dummy_data(N))
    assert rep.flags == ("negative_curvature", "unconfined")
    assert rep.min_localization == pytest.approx(NBETA * 2e-3, rel=1e-3)
    assert f"{rep.min_localization:.4g}" in rep.remedy
    # Above the threshold the sampler is confined and matches the exact expectation.
    gamma = 2 * rep.min_localization
    r = llc.estimate_llc(
        jax.random.key(1),
        quadratic(mu),
        jnp.zeros(10),
        dummy_data(N),
        step_size=1e-5,
        localization=gamma,
        num_chains=16,
        num_draws=20_000,
        num_burnin_steps=20_000,
    )
    assert_within_stderr(r, exact_expectation(mu, np.zeros(10), gamma), extra=0.01)
    assert llc.diagnose(
        jax.random.key(0), quadratic(mu), jnp.zeros(10), dummy_data(N), localization=gamma
    ).flags == ("negative_curvature",)


def test_gradient_bias_is_the_exact_quadratic_term():
    # w* is off the minimum of a quadratic: the gradient term is exact in closed form,
    # and the sampler agrees with the total.
    mu = np.array([1.0, 0.5, 2.0, 0.05])
    centre = np.array([0.0, 1e-2, 0.0, 0.1])  # bias about -0.3 of a total of about 2
    g = -mu * centre
    rep = llc.diagnose(jax.random.key(0), quadratic(mu, centre), jnp.zeros(4), dummy_data(N))
    expected_bias = exact_expectation(mu, g, 1.0) - exact_expectation(mu, 0 * g, 1.0)
    assert rep.gradient_bias == pytest.approx(expected_bias, rel=1e-3)
    assert "large_gradient" in rep.flags
    r = llc.estimate_llc(
        jax.random.key(2),
        quadratic(mu, centre),
        jnp.zeros(4),
        dummy_data(N),
        step_size=2e-5,
        num_chains=16,
        num_draws=20_000,
        num_burnin_steps=20_000,
    )
    assert_within_stderr(r, rep.lambda_quadratic + rep.gradient_bias, extra=0.02)


def test_minima_are_not_flagged():
    reg = gt.make_regular_problem(5, seed=0, num_data=2000)
    rep = llc.diagnose(jax.random.key(0), reg.loss_fn, reg.params, reg.data)
    assert rep.flags == () and rep.remedy == ""
    assert rep.lambda_quadratic == pytest.approx(2.5, abs=0.01)
    dln = gt.make_dln_problem([5, 4, 3], seed=0, num_data=5000)
    rep = llc.diagnose(jax.random.key(0), dln.loss_fn, dln.params, dln.data)
    assert rep.flags == (), rep.evidence


def test_random_initialisation_has_a_large_gradient():
    dln = gt.make_dln_problem([5, 4, 3], seed=0, num_data=5000)
    init = tuple(
        jax.random.normal(jax.random.key(i), w.shape) * 0.3 for i, w in enumerate(dln.params)
    )
    rep = llc.diagnose(jax.random.key(0), dln.loss_fn, init, dln.data)
    assert "large_gradient" in rep.flags


def test_dln_origin_is_a_saddle_with_the_predicted_negative_curvature():
    # At W1 = W2 = 0 the gradient vanishes and the Hessian is the bilinear form of
    # C = mean_i x_i^T y_i: eigenvalues +-(2 / N_out) sigma_i(C), each H times.
    dln = gt.make_dln_problem([5, 4, 3], seed=0, num_data=5000, prop_rank_reduce=0.0)
    origin = tuple(jnp.zeros_like(w) for w in dln.params)
    x, y = (np.asarray(a, np.float64) for a in dln.data)
    sigma = np.linalg.svd(x.T @ y / len(x), compute_uv=False)
    # all the data (hvp_rows=None): the full-data Lanczos run's extremes are exact
    rep = llc.diagnose(
        jax.random.key(0), dln.loss_fn, origin, dln.data, k=3, probe_steps=0, hvp_rows=None
    )
    assert rep.grad_norm < 1e-6
    assert rep.flags == ("negative_curvature", "unconfined")
    np.testing.assert_allclose(rep.spectrum.min_eigenvalue, -2 / 3 * sigma[0], rtol=1e-4)
    np.testing.assert_allclose(rep.spectrum.max_eigenvalue, 2 / 3 * sigma[0], rtol=1e-4)
    with pytest.warns(RuntimeWarning, match="negative_estimate"):
        r = llc.estimate_llc(
            jax.random.key(0),
            dln.loss_fn,
            origin,
            dln.data,
            step_size=1e-5,
            batch_size=500,
            num_chains=2,
            num_draws=200,
            num_burnin_steps=2000,
        )
    merged = llc.diagnose(jax.random.key(0), dln.loss_fn, origin, dln.data, result=r, probe_steps=0)
    assert "negative_estimate" in merged.flags and "unconfined" in merged.flags


def test_refine_from_the_dln_origin_reaches_a_minimum():
    import optax

    dln = gt.make_dln_problem([5, 4, 3], seed=0, num_data=2000, prop_rank_reduce=0.0)
    origin = tuple(jnp.zeros_like(w) for w in dln.params)
    out = llc.refine_to_minimum(
        jax.random.key(0), dln.loss_fn, origin, dln.data, optimizer=optax.adam(1e-2), num_steps=3000
    )
    assert out.min_eigenvalue_before < 0 and out.saddle_steps >= 1
    assert out.loss_after < 1e-4 * out.loss_before
    assert out.distance > 0 and "nearby point" in out.note
    rep = llc.diagnose(jax.random.key(1), dln.loss_fn, out.params, dln.data)
    assert "negative_curvature" not in rep.flags and "unconfined" not in rep.flags


def test_anisotropic_localizer_holds_the_negative_direction_exactly():
    # A rotated quadratic saddle that gamma = 1 cannot confine. diagnose finds the
    # negative eigenvector; holding it with c gives the exact
    # 0.5 * sum nbeta mu_i / (nbeta mu_i + gamma + c_i): the LLC of the other directions
    # plus a small, known negative term, with the saddle's index reported alongside.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    mu = np.array([1.0, 2.0, 0.5, 1.5, 1.0, -2e-3])
    a = jnp.asarray((q * mu) @ q.T, jnp.float32)

    def loss_fn(w, b):
        return 0.5 * w @ a @ w

    rep = llc.diagnose(jax.random.key(0), loss_fn, jnp.zeros(6), dummy_data(N), k=1, probe_steps=0)
    assert "unconfined" in rep.flags and rep.negative_directions == 1
    v = rep.spectrum.smallest_eigenvectors[0]
    c = 10 * rep.min_localization
    r = llc.estimate_llc(
        jax.random.key(3),
        loss_fn,
        jnp.zeros(6),
        dummy_data(N),
        step_size=1e-5,
        num_chains=16,
        num_draws=20_000,
        num_burnin_steps=20_000,
        held_directions=([v], [c]),
    )
    p = NBETA * mu + 1.0 + np.r_[np.zeros(5), c]
    exact = float(np.sum(0.5 * NBETA * mu / p))
    assert r.num_held_directions == 1 and "lower_loss_escape" not in r.flags
    assert_within_stderr(r, exact, extra=0.01)
    with pytest.raises(ValueError, match="orthonormal"):
        llc.estimate_llc(
            jax.random.key(3),
            loss_fn,
            jnp.zeros(6),
            dummy_data(N),
            step_size=1e-5,
            num_draws=10,
            held_directions=([2 * v], [c]),
        )


def test_dln_critical_point_from_a_truncated_teacher_has_the_predicted_curvature():
    # Exactly whitened inputs (x^T x / n = I) and a noise-free teacher M = U S V^T: the
    # student W1 = [u_1, 0, 0], W2 = [s_1 v_1^T; 0; 0] realises the teacher truncated to
    # its top singular direction, a critical point (Baldi & Hornik). Its unused hidden
    # units couple to the residual M - P = sum_{i>1} s_i u_i v_i^T: Hessian eigenvalues
    # +-(2 / N_out) s_i, so mu_min = -(2 / N_out) s_2 exactly.
    rng = np.random.default_rng(0)
    m_in, hidden, n_out, n = 4, 3, 3, 4000
    x = rng.standard_normal((n, m_in))
    x = x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / n)).T
    teacher = rng.standard_normal((m_in, n_out))
    u, s, vt = np.linalg.svd(teacher, full_matrices=False)
    y = x @ teacher
    w1 = np.zeros((m_in, hidden))
    w2 = np.zeros((hidden, n_out))
    w1[:, 0], w2[0, :] = u[:, 0], s[0] * vt[0]
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    params = (jnp.asarray(w1, jnp.float32), jnp.asarray(w2, jnp.float32))

    def loss_fn(p, b):
        return jnp.mean((b[0] @ p[0] @ p[1] - b[1]) ** 2)

    rep = llc.diagnose(
        jax.random.key(0), loss_fn, params, data, k=3, num_matvecs=21, probe_steps=0, hvp_rows=None
    )
    assert rep.grad_norm < 1e-4 * s[0]
    assert {"negative_curvature", "unconfined"} <= set(rep.flags)
    np.testing.assert_allclose(rep.spectrum.min_eigenvalue, -2 / n_out * s[1], rtol=1e-3)
    with jax.enable_x64(True):
        dense = llc.hessian.dense_hessian_eigenvalues(
            loss_fn,
            tuple(jnp.asarray(w, jnp.float64) for w in (w1, w2)),
            tuple(jnp.asarray(a, jnp.float64) for a in (x, y)),
        )
    np.testing.assert_allclose(dense[0], -2 / n_out * s[1], rtol=1e-6)
    # Two unused units, two excluded directions: four negative eigenvalues in all.
    assert int(np.sum(dense < -1e-6)) == 2 * (hidden - 1)
