"""Hessian probing against matrices of known spectrum and the dense oracle (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import ground_truth as gt
from llc.hessian import dense_hessian_eigenvalues, hessian_spectrum
from llc.lanczos import lanczos

DUMMY = np.zeros((1, 1))


def matrix_with_spectrum(eigs, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    return (q * np.asarray(eigs)) @ q.T


def quadratic(a):
    a = jnp.asarray(a)
    return lambda w, batch: 0.5 * w @ a @ w


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_outliers_and_negative_eigenvalues_near_a_bulk():
    # peers.md: d = 400, outliers 500, 200, 50, a +-0.01 bulk, and -0.5, -0.1, -0.05.
    rng = np.random.default_rng(1)
    eigs = np.concatenate([[500.0, 200.0, 50.0, -0.5, -0.1, -0.05], rng.uniform(-0.01, 0.01, 394)])
    spec = hessian_spectrum(
        jax.random.key(0),
        quadratic(matrix_with_spectrum(eigs)),
        jnp.zeros(400),
        DUMMY,
        k=3,
        num_matvecs=80,
        num_probes=2,
    )
    np.testing.assert_allclose(spec.largest, [500.0, 200.0, 50.0], rtol=1e-8)
    np.testing.assert_allclose(spec.smallest, [-0.5, -0.1, -0.05], atol=1e-6)
    assert spec.min_eigenvalue == pytest.approx(-0.5, abs=1e-8)
    # each returned value lies within its reported residual of a true eigenvalue
    for value, res in zip(
        np.r_[spec.smallest, spec.largest],
        np.r_[spec.smallest_residuals, spec.largest_residuals],
        strict=True,
    ):
        assert np.min(np.abs(eigs - value)) <= res + 1e-9
    assert spec.num_matvecs == 160
    assert spec.fraction_below(-0.02) * 400 == pytest.approx(3, abs=1.5)


def test_nearly_degenerate_and_breakdown_cases_give_true_eigenvalues_only():
    # Three distinct eigenvalues in d = 60: Krylov space of dimension 3, then breakdown.
    eigs = np.repeat([-2.0, 1.0, 1.0 + 1e-7], 20)
    a = matrix_with_spectrum(eigs, seed=2)
    tri = lanczos(
        jax.random.key(0),
        lambda v: jnp.asarray(a) @ v,
        jnp.asarray(np.random.default_rng(0).standard_normal(60)),
        12,
    )
    q = np.asarray(tri.basis)
    np.testing.assert_allclose(q @ q.T, np.eye(12), atol=1e-10)
    np.testing.assert_allclose(q @ a @ q.T, np.asarray(tri.matrix()), atol=1e-8)
    ritz = np.linalg.eigvalsh(np.asarray(tri.matrix()))
    assert np.all(np.isfinite(ritz))
    assert np.all(np.min(np.abs(ritz[:, None] - np.unique(eigs)[None, :]), axis=1) < 1e-6)


def test_trace_is_exact_for_diagonal_and_unbiased_otherwise():
    diag = np.linspace(-1.0, 3.0, 50)
    spec = hessian_spectrum(
        jax.random.key(3),
        quadratic(np.diag(diag)),
        jnp.zeros(50),
        DUMMY,
        num_matvecs=10,
        num_probes=3,
    )
    assert spec.trace == pytest.approx(diag.sum(), rel=1e-10)  # Rademacher: exact
    eigs = np.linspace(-1.0, 3.0, 50)
    spec = hessian_spectrum(
        jax.random.key(4),
        quadratic(matrix_with_spectrum(eigs, 5)),
        jnp.zeros(50),
        DUMMY,
        num_matvecs=10,
        num_probes=32,
    )
    assert abs(spec.trace - eigs.sum()) < 4 * spec.trace_stderr
    grid = np.linspace(-3, 5, 801)
    assert np.trapezoid(spec.density(grid), grid) == pytest.approx(1.0, abs=0.02)


def test_agrees_with_dense_hessian_on_a_small_network_with_negative_curvature():
    # A DLN with its first layer zeroed (not a critical point) has negative curvature.
    p = gt.make_dln_problem([4, 3, 3], seed=1, num_data=300, prop_rank_reduce=0.0)
    params = (jnp.zeros((4, 3), jnp.float64), jnp.asarray(p.params[1], jnp.float64))
    data = tuple(jnp.asarray(x, jnp.float64) for x in p.data)
    dense = dense_hessian_eigenvalues(p.loss_fn, params, data)
    spec = hessian_spectrum(
        jax.random.key(0),
        p.loss_fn,
        params,
        data,
        k=3,
        num_matvecs=21,
        eval_batch_size=128,
        eigenvectors=True,
    )
    assert dense[0] < -1e-3
    np.testing.assert_allclose(spec.smallest, dense[:3], atol=1e-8)
    np.testing.assert_allclose(spec.largest, dense[::-1][:3], rtol=1e-8)
    v = spec.smallest_eigenvectors[0]
    hv = llc.hessian.hvp(p.loss_fn, params, data)(v)
    resid = jax.tree.map(lambda a, b: a - spec.smallest[0] * b, hv, v)
    assert sum(float(jnp.sum(r**2)) for r in jax.tree.leaves(resid)) ** 0.5 < 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="num_probes must be >= 1"):
        hessian_spectrum(jax.random.key(0), quadratic(np.eye(2)), jnp.zeros(2), DUMMY, num_probes=0)


def test_a_krylov_space_of_dimension_d_gives_the_exact_spectrum_from_one_probe():
    # repeated eigenvalues (five zeros) break Lanczos down; its restarts still span R^d
    eigs = np.r_[np.zeros(5), -0.5, 1.0, 2.0, 3.0, 4.0]
    spec = hessian_spectrum(
        jax.random.key(5),
        quadratic(matrix_with_spectrum(eigs, 6)),
        jnp.zeros(10),
        DUMMY,
        num_matvecs=10,
        num_probes=4,
    )
    assert spec.num_matvecs == 10 and spec.nodes.shape == (1, 10)
    np.testing.assert_allclose(np.sort(spec.nodes[0]), np.sort(eigs), atol=1e-10)
    np.testing.assert_allclose(spec.weights, 0.1)
    assert spec.trace == pytest.approx(eigs.sum(), rel=1e-10) and spec.trace_stderr == 0.0
    assert spec.fraction_below(-0.1) == pytest.approx(0.1)
