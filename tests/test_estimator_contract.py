"""Behaviour of estimate_llc beyond accuracy: compilation, determinism, errors, divergence."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import ground_truth as gt
from llc import loop
from tests._utils import assert_within_stderr, dummy_data, quadratic_target

SMALL = dict(num_chains=2, num_draws=50, num_burnin_steps=10)


@pytest.fixture(scope="module")
def problem():
    return gt.make_regular_problem(3, seed=0, num_data=1000)


def test_changing_hyperparameters_does_not_recompile(problem):
    p = problem
    run = dict(batch_size=100, **SMALL)
    llc.estimate_llc(jax.random.key(0), p.loss_fn, p.params, p.data, step_size=1e-4, **run)
    size = loop.run_chains._cache_size()
    for step, loc, nb in [(3e-4, 1.0, None), (1e-4, 10.0, 50.0), (2e-5, 0.0, 7.0)]:
        llc.estimate_llc(
            jax.random.key(1),
            p.loss_fn,
            p.params,
            p.data,
            step_size=step,
            localization=loc,
            nbeta=nb,
            **run,
        )
    assert loop.run_chains._cache_size() == size


def test_same_key_same_result_and_chains_differ(problem):
    p = problem
    kw = dict(step_size=1e-4, batch_size=50, **SMALL)
    a = llc.estimate_llc(jax.random.key(3), p.loss_fn, p.params, p.data, **kw)
    b = llc.estimate_llc(jax.random.key(3), p.loss_fn, p.params, p.data, **kw)
    c = llc.estimate_llc(jax.random.key(4), p.loss_fn, p.params, p.data, **kw)
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
    assert a.llc_mean == b.llc_mean
    assert not np.array_equal(a.loss_trace, c.loss_trace)
    assert not np.array_equal(a.loss_trace[0], a.loss_trace[1])


def test_result_fields_and_shapes(problem):
    p = problem
    r = llc.estimate_llc(
        jax.random.key(0),
        p.loss_fn,
        p.params,
        p.data,
        step_size=1e-4,
        batch_size=100,
        num_chains=3,
        num_draws=40,
        num_burnin_steps=7,
        num_steps_bw_draws=2,
    )
    assert r.loss_trace.shape == (3, 40) and r.loss_trace.dtype == np.float64
    assert r.burnin_loss_trace.shape == (3, 7)
    assert r.distance_trace.shape == (3, 40)
    assert r.llc_per_chain.shape == (3,)
    assert r.num_params == 3 and r.num_data == 1000
    assert r.nbeta == pytest.approx(1000 / np.log(1000))
    assert r.init_loss == pytest.approx(float(p.loss_fn(p.params, p.data)), rel=1e-5)
    np.testing.assert_allclose(
        r.llc_per_chain, llc.llc_from_losses(r.loss_trace, r.init_loss, r.nbeta)
    )
    assert r.llc_mean == pytest.approx(np.mean(r.llc_per_chain))
    assert "LLC =" in r.summary()


def test_init_loss_is_full_data_in_chunks(problem):
    p = problem
    exact = float(
        np.mean(
            0.5
            * (np.asarray(p.data[0], np.float64) @ np.asarray(p.params) - np.asarray(p.data[1]))
            ** 2
        )
    )
    r = llc.estimate_llc(
        jax.random.key(0),
        p.loss_fn,
        p.params,
        p.data,
        step_size=1e-4,
        batch_size=10,
        eval_batch_size=333,
        **SMALL,
    )  # 3 chunks + 1 row
    assert r.init_loss == pytest.approx(exact, rel=1e-6)


def test_dict_params_match_closed_form():
    # A nested pytree with d = 7: the full-batch ULA closed form holds leaf by leaf.
    mu = {"a": jnp.array([1.0, 2.0, 0.5]), "b": {"c": jnp.array([[1.0, 1.5], [0.7, 3.0]])}}

    def loss_fn(w, batch):
        terms = jax.tree.map(lambda m, x: 0.5 * jnp.sum(m * x**2), mu, w)
        return sum(jax.tree.leaves(terms))

    params = jax.tree.map(jnp.zeros_like, mu)
    n = 10_000
    nb = n / np.log(n)
    r = llc.estimate_llc(
        jax.random.key(7),
        loss_fn,
        params,
        dummy_data(n),
        step_size=1e-4,
        num_chains=16,
        num_draws=4000,
        num_burnin_steps=500,
    )
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(mu)])
    assert_within_stderr(r, quadratic_target(flat, nb, 1.0, 1e-4))


def test_all_chains_diverge_is_reported_with_the_step_size_bound():
    # mu = 1, nbeta = 1085.7: eps * p = 1e-2 * 1086.7 = 10.9 > 4, unstable.
    loss_fn = lambda w, b: 0.5 * jnp.sum(w**2)  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"blew up \(non-finite loss") as rec:
        r = llc.estimate_llc(
            jax.random.key(0),
            loss_fn,
            jnp.zeros(4),
            dummy_data(10_000),
            step_size=1e-2,
            num_chains=3,
            num_draws=200,
            num_burnin_steps=0,
        )
    message = str(rec[0].message)
    assert ">= 4" in message and "Use step_size <" in message
    assert "1" in message  # the largest Hessian eigenvalue, 1
    assert r.diverged.all() and (r.diverged_at_step >= 0).all()
    assert "diverged" in r.flags and np.isnan(r.llc_mean)
    assert np.isnan(r.llc_per_chain).all()


@pytest.mark.slow
def test_some_chains_diverge_the_rest_are_summarised():
    # A nearly flat loss that is NaN beyond |w| = 10: with eps = 1 and 100 steps the
    # random walks (std 10 by the end) cross it in some chains and not in others.
    def loss_fn(w, batch):
        return jnp.where(jnp.abs(w[0]) < 10.0, 1e-6 * w[0] ** 2, jnp.nan)

    with pytest.warns(RuntimeWarning, match="diverged|non-finite"):
        r = llc.estimate_llc(
            jax.random.key(11),
            loss_fn,
            jnp.zeros(1),
            dummy_data(100),
            step_size=1.0,
            localization=0.0,
            num_chains=16,
            num_draws=100,
            num_burnin_steps=0,
        )
    assert r.diverged.any() and not r.diverged.all()
    alive = r.llc_per_chain[~r.diverged]
    assert np.isfinite(alive).all() and np.isnan(r.llc_per_chain[r.diverged]).all()
    assert r.llc_mean == pytest.approx(alive.mean())
    assert np.isfinite(r.llc_std)
    assert str(np.flatnonzero(r.diverged).tolist()) in r.evidence["diverged"]


def test_negative_estimate_is_flagged():
    # A saddle with lower minima at w1 = +-1 (loss -1/4); gamma = 1 cannot confine the
    # negative direction (nbeta * 1 >> 1), so chains slide down: lambda_hat ~ -nbeta / 4.
    loss_fn = lambda w, b: 0.5 * (w[0] ** 2 - w[1] ** 2) + 0.25 * w[1] ** 4  # noqa: E731
    with pytest.warns(RuntimeWarning, match="negative_estimate"):
        r = llc.estimate_llc(
            jax.random.key(0),
            loss_fn,
            jnp.zeros(2),
            dummy_data(10_000),
            step_size=1e-4,
            num_chains=2,
            num_draws=500,
            num_burnin_steps=0,
        )
    assert r.llc_mean < -0.1 * r.nbeta / 4 and "negative_estimate" in r.flags


def test_progress_bar_runs(problem, capsys):
    p = problem
    r = llc.estimate_llc(
        jax.random.key(0), p.loss_fn, p.params, p.data, step_size=1e-4, progress_bar=True, **SMALL
    )
    assert np.isfinite(r.llc_mean)


def test_llc_from_losses_in_float64():
    trace = 1e4 + np.array([[1e-6, 3e-6], [2e-6, 2e-6]])
    np.testing.assert_allclose(llc.llc_from_losses(trace, 1e4, 1e6), [2.0, 2.0], rtol=1e-6)


# ----------------------------------------------------------------------- bad input


def _call(**overrides):
    p = gt.make_regular_problem(2, seed=0, num_data=50)
    args = dict(rng_key=jax.random.key(0), loss_fn=p.loss_fn, params=p.params, data=p.data)
    kwargs = dict(step_size=1e-4, **SMALL)
    for k, v in overrides.items():
        (args if k in args else kwargs)[k] = v
    return llc.estimate_llc(
        args.pop("rng_key"), args.pop("loss_fn"), args.pop("params"), args.pop("data"), **kwargs
    )


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (dict(data=(jnp.zeros((50, 2)), jnp.zeros(49))), ValueError, "same leading"),
        (dict(data=jnp.float32(1.0)), ValueError, "leading sample axis"),
        (dict(batch_size=0), ValueError, "batch_size must be in 1..50"),
        (dict(batch_size=51), ValueError, "batch_size must be in 1..50"),
        (dict(batch_size=2.5), TypeError, "batch_size"),
        (dict(loss_fn=lambda w, b: (b[0] @ w - b[1]) ** 2), ValueError, "scalar"),
        (dict(loss_fn=lambda w, b: jnp.sum(w) * jnp.nan), ValueError, "finite loss"),
        (dict(loss_fn="not a function"), TypeError, "loss_fn must be callable"),
        (dict(params=jnp.array([1.0, jnp.nan])), ValueError, "NaN or inf"),
        (dict(params=jnp.array([1, 2])), TypeError, "floating-point"),
        (dict(step_size=0.0), ValueError, "step_size must be a finite number > 0"),
        (dict(step_size=-1e-3), ValueError, "step_size"),
        (dict(step_size=float("nan")), ValueError, "step_size"),
        (dict(localization=-1.0), ValueError, "localization must be a finite number >= 0"),
        (dict(nbeta=0.0), ValueError, "nbeta must be a finite number > 0"),
        (dict(num_chains=0), ValueError, "num_chains must be >= 1"),
        (dict(num_draws=0), ValueError, "num_draws must be >= 1"),
        (dict(num_burnin_steps=-1), ValueError, "num_burnin_steps must be >= 0"),
        (dict(num_burnin_steps="long"), ValueError, "num_burnin_steps must be a count"),
        (dict(num_burnin_steps="auto", num_chains=1), ValueError, "num_chains >= 2"),
        (dict(num_burnin_steps="auto", max_burnin_steps=0), ValueError, "max_burnin_steps"),
        (dict(num_steps_bw_draws=0), ValueError, "num_steps_bw_draws must be >= 1"),
        (dict(num_draws=10.0), TypeError, "num_draws must be an integer"),
        (dict(rng_key=0), TypeError, "rng_key"),
    ],
)
def test_bad_input_raises_before_compiling(overrides, error, match):
    before = loop.run_chains._cache_size()
    with pytest.raises(error, match=match):
        _call(**overrides)
    assert loop.run_chains._cache_size() == before


def test_legacy_uint32_key_is_accepted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = _call(rng_key=jax.random.PRNGKey(0))
    assert np.isfinite(r.llc_mean)


def test_chains_that_disagree_are_flagged_not_converged():
    # A nearly flat loss and no localizer: each chain random-walks (std sqrt(eps t)), so
    # the loss traces trend and disagree across chains; R-hat far above 1.
    loss_fn = lambda w, b: 1e-6 * jnp.sum(w**2)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="not_converged"):
        r = llc.estimate_llc(
            jax.random.key(0),
            loss_fn,
            jnp.zeros(3),
            dummy_data(1000),
            step_size=1e-2,
            localization=0.0,
            num_chains=4,
            num_draws=2000,
            num_burnin_steps=0,
        )
    assert r.rhat > 1.05 and "not_converged" in r.flags and "R-hat" in r.evidence["not_converged"]
    assert np.isfinite(r.ess) and r.ess < r.num_chains * r.num_draws


def test_auto_burnin_is_estimate_llc_only():
    p = gt.make_regular_problem(2, seed=0, num_data=50)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), p.params)
    with pytest.raises(ValueError, match="'auto' \\(estimate_llc only\\)"):
        llc.estimate_llc_trajectory(
            jax.random.key(0),
            p.loss_fn,
            stacked,
            p.data,
            step_size=1e-4,
            num_burnin_steps="auto",
        )
    with pytest.raises(ValueError, match="NUTS"):
        _call(step_size=None, sampler="nuts", num_burnin_steps="auto")
