"""LLC along a training run, and the multi-temperature estimator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc.step_bias import MAX_STEP_BIAS
from tests._utils import assert_within_stderr, dummy_data, quadratic_target


def regression():
    x = jax.random.normal(jax.random.key(0), (800, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(jax.random.key(1), (800,))
    w = {"a": jnp.linalg.lstsq(x, y)[0], "b": jnp.zeros(())}

    def loss_fn(p, batch):
        return 0.5 * jnp.mean((batch[0] @ p["a"] + p["b"] - batch[1]) ** 2)

    return loss_fn, w, (x, y)


SETTINGS = {"step_size": 1e-4, "batch_size": 100, "num_draws": 300, "num_burnin_steps": 100}


@pytest.mark.slow
def test_each_checkpoint_equals_a_single_run_with_the_same_key():
    loss_fn, w, data = regression()
    points = [jax.tree.map(lambda p, s=s: p + s, w) for s in (0.0, 0.05, -0.1)]
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *points)
    traj = llc.estimate_llc_trajectory(jax.random.key(3), loss_fn, stacked, data, **SETTINGS)
    assert traj.llc_mean.shape == (3,) and len(traj.results) == 3
    for t, point in enumerate(points):
        single = llc.estimate_llc(jax.random.key(3), loss_fn, point, data, **SETTINGS)
        assert traj.init_loss[t] == pytest.approx(single.init_loss, rel=1e-12)
        np.testing.assert_allclose(traj.results[t].loss_trace, single.loss_trace, rtol=1e-5)
        assert traj.llc_mean[t] == pytest.approx(single.llc_mean, rel=1e-4, abs=1e-4)
        assert traj.flags[t] == single.flags


def test_auto_step_calibrates_each_checkpoint_as_estimate_llc_does():
    # A regression whose weights a are sampled and whose scale c is held (weight_mask):
    # checkpoint t has c = 1 or 3 and a = a* / c, both minima, the curvature c^2 x'x / n.
    # Each checkpoint gets the step estimate_llc(step_size="auto") calibrates there, and
    # its estimate is the quadratic model's exact value, within 4 s.e. and twice the
    # rule's step-bias cap.
    x = jax.random.normal(jax.random.key(0), (2000, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(jax.random.key(1), (2000,))
    a_star = jnp.linalg.lstsq(x, y)[0]

    def loss_fn(p, batch):
        return 0.5 * jnp.mean((batch[0] @ (p["c"] * p["a"]) - batch[1]) ** 2)

    scales = (1.0, 3.0)
    points = [{"a": a_star / c, "c": jnp.asarray(c)} for c in scales]
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *points)
    settings = {
        "step_size": "auto",
        "batch_size": 200,
        "num_draws": 2000,
        "weight_mask": {"a": True, "c": False},
    }
    traj = llc.estimate_llc_trajectory(jax.random.key(3), loss_fn, stacked, (x, y), **settings)
    s = np.linalg.eigvalsh(np.asarray(x.T @ x, np.float64) / x.shape[0])
    for t, (point, c) in enumerate(zip(points, scales, strict=True)):
        single = llc.estimate_llc(jax.random.key(3), loss_fn, point, (x, y), **settings)
        chosen = single.calibration.recommended["step_size"]
        r = traj.results[t]
        assert r.calibration.recommended["step_size"] == chosen and r.step_size == chosen
        target = quadratic_target(c**2 * s, r.nbeta, r.localization)
        assert_within_stderr(r, target, extra=2 * MAX_STEP_BIAS * target)
    assert traj.results[1].step_size < traj.results[0].step_size


def test_trajectory_input_errors():
    loss_fn, w, data = regression()
    with pytest.raises(ValueError, match="same non-zero leading axis"):
        llc.estimate_llc_trajectory(
            jax.random.key(0),
            loss_fn,
            {"a": jnp.zeros((2, 3)), "b": jnp.zeros(3)},
            data,
            step_size=1e-4,
        )
    with pytest.raises(ValueError, match="leading checkpoint axis"):
        llc.estimate_llc_trajectory(
            jax.random.key(0),
            loss_fn,
            {"a": jnp.zeros(3), "b": jnp.zeros(())},
            data,
            step_size=1e-4,
        )


@pytest.mark.slow
def test_multitemperature_slope_on_a_quasi_homogeneous_potential():
    # gamma = 0 and K = 0.5 sum mu w^2: E_beta[n beta K] = d/2 at every beta, so
    # f(beta) = n E[K] = (d/2) / beta exactly and the slope in 1/beta is d/2 = 2.5.
    # eps * nbeta * mu_max <= 0.03: a ULA bias under 1% of the target (extra).
    mu = jnp.array([2.0, 1.0, 0.5, 0.2, 0.1])

    def loss_fn(w, batch):
        return 0.5 * jnp.sum(mu * w**2)

    n = 10_000
    r = llc.estimate_llc_multitemp(
        jax.random.key(0),
        loss_fn,
        jnp.zeros(5),
        dummy_data(n),
        step_size=1e-5,
        localization=0.0,
        num_chains=16,
        num_draws=5000,
        num_burnin_steps=3000,
        num_steps_bw_draws=2,
    )
    assert r.nbetas.shape == (5,) and np.all(np.diff(r.nbetas) > 0)
    assert np.all(np.abs(r.llc_per_temperature - 2.5) < 0.25)

    class Slope:  # assert_within_stderr reads these two fields
        llc_mean, llc_stderr = r.llc, r.llc_stderr

    assert_within_stderr(Slope, 2.5, extra=0.025)


def test_multitemperature_input_errors():
    loss_fn, w, data = regression()
    with pytest.raises(ValueError, match="distinct"):
        llc.estimate_llc_multitemp(
            jax.random.key(0), loss_fn, w, data, step_size=1e-4, nbetas=[10.0, 10.0]
        )
    with pytest.raises(ValueError, match="at least two"):
        llc.estimate_llc_multitemp(
            jax.random.key(0), loss_fn, w, data, step_size=1e-4, nbetas=[1.0]
        )
