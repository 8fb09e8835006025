"""Observables from the chains against Gaussian closed forms (linear regression)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc

N, SAMPLES = 400, [3, 17, 250]


def _problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 2))
    y = x @ np.array([1.0, -0.5]) + rng.standard_normal(N)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    return x, y, w_star


def _loss(w, batch):
    return 0.5 * jnp.mean((batch[0] @ w - batch[1]) ** 2)


def _per_chain(result, fn, *args):
    """``fn(result, *args)`` on each chain alone: the estimates whose spread gives the s.e."""
    out = []
    for c in range(result.num_chains):
        alone = np.ones(result.num_chains, bool)
        alone[c] = False
        out.append(fn(result._replace(diverged=alone), *args))
    return np.array(out)


def _within(estimate, per_chain, exact, z=4.0):
    stderr = per_chain.std(axis=0, ddof=1) / np.sqrt(len(per_chain))
    err = np.abs(estimate - exact)
    assert np.all(err <= z * stderr), (estimate, exact, err / stderr)


def test_loss_kernel_and_susceptibility_match_the_gaussian_closed_forms():
    # Full-batch SGLD on least squares is ULA on a quadratic: the chain's stationary law is
    # N(w*, S) with S = P^-1 (I - eps P / 4)^-1, P = nbeta H + gamma I. For per-sample losses
    # l_i = (r_i - x_i.d)^2 / 2: Cov(l_i, l_j) = r_i r_j x_i'S x_j + (x_i'S x_j)^2 / 2, and for
    # quadratics Cov(-u'd + d'Ad/2, -v'd + d'Bd/2) = u'S v + tr(A S B S) / 2.
    x, y, w_star = _problem()
    xs, ys = x[SAMPLES], y[SAMPLES]
    xq, yq = x[:50], y[:50]
    nbeta, gamma = llc.default_nbeta(N), 1.0
    h = x.T @ x / N
    p = nbeta * h + gamma * np.eye(2)
    step = 0.05 / np.linalg.eigvalsh(p).max()
    r = llc.estimate_llc(
        jax.random.key(0),
        _loss,
        jnp.asarray(w_star, jnp.float32),
        (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
        step_size=step,
        localization=gamma,
        num_chains=16,
        num_draws=2000,
        num_burnin_steps=500,
        num_steps_bw_draws=10,
        per_sample_observables={"s": (xs, ys)},
        observables={"q": (xq, yq)},
    )
    s = np.linalg.inv(p) @ np.linalg.inv(np.eye(2) - step * p / 4)
    res = ys - xs @ w_star
    g = xs @ s @ xs.T
    kernel = np.outer(res, res) * g + 0.5 * g**2
    _within(llc.loss_kernel(r, "s"), _per_chain(r, llc.loss_kernel, "s"), kernel)
    np.testing.assert_allclose(llc.bif(r, "s"), -llc.loss_kernel(r, "s"))
    # susceptibility towards q' = the first 50 samples: Delta L = L_q' - L_n
    b = xq.T @ (yq - xq @ w_star) / len(yq)  # L_q'(w* + d) = const - b'd + d'Hq d / 2
    hq = xq.T @ xq / len(yq)
    chi = -nbeta * np.array(
        [
            (res[i] * xs[i]) @ s @ b + 0.5 * np.trace(np.outer(xs[i], xs[i]) @ s @ (hq - h) @ s)
            for i in range(len(SAMPLES))
        ]
    )
    estimate = llc.susceptibilities(r, "s", perturbation="q")
    _within(estimate, _per_chain(r, llc.susceptibilities, "s", "q"), chi)
    # the mean observable's own LLC: nbeta (E[L_q'] - L_q'(w*)) = nbeta tr(Hq S) / 2
    assert r.observables["q"].init_loss == pytest.approx(float(_loss(w_star, (xq, yq))), rel=1e-5)
    per_chain = r.observables["q"].llc_per_chain
    _within(np.array(r.observables["q"].llc), per_chain, nbeta * 0.5 * np.trace(hq @ s))


def test_observables_are_checked_and_sized_before_compiling():
    x, y, w_star = _problem()
    args = (jax.random.key(0), _loss, jnp.asarray(w_star), (jnp.asarray(x), jnp.asarray(y)))
    with pytest.raises(TypeError, match="observables must be a dict"):
        llc.estimate_llc(*args, step_size=1e-4, observables=[(x, y)])
    with pytest.raises(ValueError, match="share the names"):
        llc.estimate_llc(
            *args, step_size=1e-4, observables={"a": (x, y)}, per_sample_observables={"a": (x, y)}
        )
    with pytest.raises(ValueError, match="max_per_sample_bytes"):
        llc.estimate_llc(
            *args, step_size=1e-4, per_sample_observables={"all": (x, y)}, max_per_sample_bytes=1000
        )
    with pytest.raises(KeyError, match="no observable 'z'"):
        r = llc.estimate_llc(*args, step_size=1e-4, num_draws=20, num_burnin_steps=0)
        llc.loss_kernel(r, "z")


def test_per_sample_losses_stream_to_files_and_equal_the_in_memory_run(tmp_path):
    x, y, w_star = _problem()
    args = (jax.random.key(4), _loss, jnp.asarray(w_star), (jnp.asarray(x), jnp.asarray(y)))
    kw = dict(
        step_size=1e-4,
        batch_size=50,
        num_chains=2,
        num_draws=60,
        num_burnin_steps=10,
        per_sample_observables={"s": (x[:7], y[:7])},
        observables={"q": (x[:20], y[:20])},
    )
    held = llc.estimate_llc(*args, **kw)
    # 2 chains x 7 samples x 4 bytes = 56 bytes a draw: chunks of 10 draws fit 600 bytes
    streamed = llc.estimate_llc(*args, per_sample_path=tmp_path, max_per_sample_bytes=600, **kw)
    delta = streamed.observables["s"].delta
    assert isinstance(delta, np.memmap) and (tmp_path / "s.npy").exists()
    np.testing.assert_allclose(delta, held.observables["s"].delta, rtol=1e-6)
    np.testing.assert_allclose(streamed.loss_trace, held.loss_trace, rtol=1e-6)
    np.testing.assert_allclose(llc.loss_kernel(streamed, "s"), llc.loss_kernel(held, "s"))
