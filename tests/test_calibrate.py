"""Calibration: the grid runs as one program, the bias model is right, the rule is stated."""

import functools
import logging
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import spread, step_bias
from llc.plan import Spread
from tests._utils import dummy_data, quadratic_target

N = 10_000
NBETA = N / np.log(N)
MU = np.array([2.0, 1.0, 0.5, 0.2, 0.1])


def quadratic_loss(w, batch):
    return 0.5 * jnp.sum(jnp.asarray(MU, jnp.float32) * w**2)


def regression(n=1000):
    x = jax.random.normal(jax.random.key(0), (n, 2))
    y = x @ jnp.array([1.0, -1.0]) + jax.random.normal(jax.random.key(1), (n,))
    w = jnp.linalg.lstsq(x, y)[0]
    return (lambda p, b: 0.5 * jnp.mean((b[0] @ p - b[1]) ** 2)), w, (x, y)


def test_grid_shape_table_and_rule():
    loss_fn, w, data = regression()
    cal = llc.calibrate(
        jax.random.key(0), loss_fn, w, data, batch_size=100, localizations=[1.0, 10.0]
    )
    assert cal.llc_mean.shape == cal.acceptance.shape == cal.healthy.shape == (2, 8)
    assert np.all(np.diff(cal.step_sizes) > 0)
    g = list(cal.localizations).index(cal.recommended["localization"])
    s = list(cal.step_sizes).index(cal.recommended["step_size"])
    assert cal.healthy[g, s] and not cal.healthy[g, s + 1 :].any()
    assert "largest healthy step size" in cal.rule
    lines = cal.table().splitlines()
    transient = cal.transient()
    assert len(lines) == 17 + transient.any() and "*healthy" in cal.table()
    # a value from a run flagged as not settled is marked, and only such values
    marked = [line.split()[2].endswith("~") for line in lines[1:17]]
    assert marked == transient.ravel().tolist()
    # the predicted bias grows with the step size at every localization
    assert np.all(np.diff(cal.predicted_bias, axis=1) > 0)


def test_predicted_bias_is_the_exact_first_order_ula_bias():
    # Full-batch SGLD on a quadratic: E[lambda_hat](eps) is known exactly (ULA closed form),
    # and its first-order term is eps nbeta sum(mu) / 8 for nbeta mu >> gamma. The rule's
    # bias model must reproduce it: Hutchinson's diagonal is exact for a diagonal Hessian.
    gamma = 1.0
    model = step_bias.curvature_model(
        jax.random.key(0),
        quadratic_loss,
        jnp.zeros(5),
        dummy_data(N),
        nbeta=NBETA,
        localization=gamma,
    )
    np.testing.assert_allclose(model.hessian_diagonal, MU, rtol=1e-5)
    assert model.mu_max == pytest.approx(2.0, rel=1e-4)
    for eps in (1e-5, 1e-4):
        exact = quadratic_target(MU, NBETA, gamma, eps) - quadratic_target(MU, NBETA, gamma)
        predicted = eps * NBETA * np.sum(model.hessian_diagonal) / 8
        # second-order terms: relative size eps * (nbeta mu_max + gamma) / 4 <= 5.4%
        assert predicted == pytest.approx(exact, rel=0.06)


def test_auto_step_size_on_a_model_it_was_not_designed_on():
    # A regular model (lambda = d/2 = 1.5 up to the localizer's exact shrinkage) that the
    # rule's constants were not chosen on. The chosen step must have a predicted bias under
    # 2.5%, and the estimate must agree with the exact quadratic expectation within its
    # standard error plus that bias.
    x = jax.random.normal(jax.random.key(3), (5000, 3))
    y = x @ jnp.array([0.5, 1.0, -1.5]) + 0.5 * jax.random.normal(jax.random.key(4), (5000,))
    w = jnp.linalg.lstsq(x, y)[0]

    def loss_fn(p, b):
        return 0.5 * jnp.mean((b[0] @ p - b[1]) ** 2)

    r = llc.estimate_llc(
        jax.random.key(5),
        loss_fn,
        w,
        (x, y),
        step_size="auto",
        batch_size=250,
        num_chains=8,
        num_draws=4000,
        num_burnin_steps=2000,
    )
    cal = r.calibration
    assert r.step_size == cal.recommended["step_size"]
    # the burn-in reported is the one run: the spread, then the planned 2000 steps, or up
    # to 2000 more while the follow waits for the chains to be steady
    assert r.burnin_loss_trace.shape[1] == r.num_burnin_steps
    assert 2000 <= r.num_burnin_steps - r.spread_steps <= 4000
    hessian = np.asarray(x.T @ x / 5000, np.float64)
    target = quadratic_target(np.linalg.eigvalsh(hessian), r.nbeta, 1.0)
    s = list(cal.step_sizes).index(r.step_size)
    assert cal.predicted_bias[0, s] <= 0.025
    allowed = 4 * r.llc_stderr + 0.025 * target
    assert abs(r.llc_mean - target) <= allowed, (r.llc_mean, target, allowed)


@pytest.mark.slow
def test_auto_step_size_follows_the_chains_into_stiffer_regions():
    # L = (1 + a |u|^2) |v|^2 / 2 with 40 flat coordinates u, held only by the localizer
    # (gamma = 1: |u|^2 -> about 40 over 2 / (eps gamma) ~ 40,000 steps), and 8 stiff
    # coordinates v whose curvature grows with |u|^2, up to 5 times its value at w*. The
    # calibration's short run sees the curvature near w*; the burn-in must then shrink the
    # step as the chains spread. The exact continuous-time target is
    # (8/2) E[k / (k + gamma)], within 0.1% of 4 (k = nbeta (1 + a |u|^2) >= 1085), and the
    # estimate must meet it within 4 standard errors plus the 2.5% bias the rule allows.
    def loss_fn(w, batch):
        return 0.5 * (1 + 0.1 * jnp.sum(w["u"] ** 2)) * jnp.sum(w["v"] ** 2)

    r = llc.estimate_llc(
        jax.random.key(0),
        loss_fn,
        {"u": jnp.zeros(40), "v": jnp.zeros(8)},
        dummy_data(N),
        step_size="auto",
        num_chains=4,
        num_draws=4000,
        num_burnin_steps=40_000,
    )
    assert r.step_size < 0.8 * r.calibration.recommended["step_size"]
    assert "followed the chains" in r.calibration.rule
    assert abs(r.llc_mean - 4.0) <= 4 * r.llc_stderr + 0.025 * 4.0, r.llc_mean


def test_calibration_checks_its_input():
    loss_fn, w, data = regression()
    with pytest.raises(ValueError, match="step_sizes"):
        llc.calibrate(jax.random.key(0), loss_fn, w, data, step_sizes=[1e-3, -1.0])
    with pytest.raises(ValueError, match="localizations"):
        llc.calibrate(jax.random.key(0), loss_fn, w, data, localizations=[])
    with pytest.raises(ValueError, match="max_bias"):
        llc.calibrate(jax.random.key(0), loss_fn, w, data, max_bias=2.0)
    with pytest.raises(ValueError, match="nuts"):
        llc.calibrate(jax.random.key(0), loss_fn, w, data, sampler="nuts")


@pytest.mark.slow
def test_auto_step_size_on_a_normal_crossing_at_its_finite_n_target():
    # K = w1^2 w2^2 at w* = 0, gamma = 1, n = 1e4: the exact E[lambda_hat] is 0.3912
    # (quadrature, slt-reference 3.3; the same target as test_estimator_exact). The Hessian
    # vanishes at w*, so the default grid (unit 1 / gamma) diverges everywhere and must
    # move down by itself. The rule was not designed on this model; the estimate must hit
    # the target within 4 standard errors plus the 2.5% bias the rule allows.
    kk = jnp.asarray((1, 1), jnp.float32)
    r = llc.estimate_llc(
        jax.random.key(4),
        lambda w, b: jnp.prod(w ** (2 * kk)),
        jnp.zeros(2),
        dummy_data(N),
        step_size="auto",
        localization=1.0,
        num_chains=32,
        num_draws=20_000,
        num_steps_bw_draws=10,
        num_burnin_steps=20_000,
    )
    assert "moved down" in r.calibration.rule and not r.flags
    target = 0.3912
    assert abs(r.llc_mean - target) <= 4 * r.llc_stderr + 0.025 * target, r.llc_mean


def test_auto_step_size_spreads_the_chains_along_soft_directions():
    # L = |v|^2 / 2 + mu |u|^2 / 2 with 4 stiff coordinates v and 16 soft ones u whose
    # curvature nbeta mu equals gamma = 1: each soft one contributes exactly 1/4 to
    # lambda = 1/2 sum nbeta mu_i / (nbeta mu_i + gamma) = 5.998, two thirds of it. From w*
    # a soft coordinate's variance relaxes as exp(-2 eps gamma t): at the step the
    # calibration picks (about 1e-4) the 3,000 steps of a default run reach under half of
    # it (without the spread: 3.33, -44%). The spread runs at a larger stable step until
    # the loss stops rising, at most three relaxation times (95%); the estimate must then
    # meet the exact value within 4 standard errors plus the rule's 2.5% bias cap and the
    # 5% the three relaxation times may leave.
    def loss_fn(w, batch):
        return 0.5 * jnp.sum(w["v"] ** 2) + 0.5 / NBETA * jnp.sum(w["u"] ** 2)

    r = llc.estimate_llc(
        jax.random.key(0),
        loss_fn,
        {"u": jnp.zeros(16), "v": jnp.zeros(4)},
        dummy_data(N),
        num_chains=16,
        num_draws=2000,
    )
    exact = quadratic_target(np.array([1.0] * 4 + [1.0 / NBETA] * 16), NBETA, 1.0)
    assert r.spread_steps > 0 and "first spread" in r.calibration.rule
    allowed = 4 * r.llc_stderr + (0.025 + 0.05) * exact
    assert abs(r.llc_mean - exact) <= allowed, (r.llc_mean, exact, allowed)


def test_the_spread_stops_at_once_without_soft_directions(caplog):
    # A regular quadratic (curvatures 1 to 2, every nbeta mu_i >> gamma): the loss is at
    # its level within a few hundred steps, so the spread stops at one of its first checks
    # (from one relaxation time of the localizer on) instead of running its three. The
    # check needs the precision of many chains (16 here; with 4 it ran to the end).
    # Every spread and burn-in call is one compiled program (the first call resumes from
    # the carry at w* too), the draws a second; on one device the noise probe at w* shares
    # the program that probes the chains' positions.
    def loss_fn(w, batch):
        return 0.5 * jnp.sum(jnp.linspace(1.0, 2.0, 6) * w**2)

    with jax.log_compiles(), caplog.at_level(logging.WARNING, logger="jax._src.dispatch"):
        r = llc.estimate_llc(
            jax.random.key(1),
            loss_fn,
            jnp.zeros(6),
            dummy_data(N),
            num_chains=16,
            num_draws=2000,
            num_devices=1,  # on a mesh the probe at w* is not sharded as the chains are
        )
    compiled = [m for m in caplog.messages if m.startswith("Finished XLA compilation of")]
    assert sum("jit(_run)" in m for m in compiled) == 2, compiled
    assert sum("jit(_probe_noise)" in m for m in compiled) == 1, compiled
    plan = spread.spread_plan(r.calibration, "sgld", 2000)
    full = spread.spread_steps(plan.step_size, 1.0, plan.cap)
    assert 0 < r.spread_steps - plan.settle < full, (r.spread_steps, full)
    exact = quadratic_target(np.linspace(1.0, 2.0, 6), NBETA, 1.0)
    assert abs(r.llc_mean - exact) <= 4 * r.llc_stderr + 0.025 * exact, r.llc_mean


def test_the_spread_waits_for_the_chains_to_stop_moving_out():
    # A stationary SGLD chain at step e keeps E|w - w*|^2 constant, so its virial
    # E[(w - w*) . grad U] is d + e/4 E|grad U|^2, at least d: on U = a |w|^2 / 2 the
    # chain's variance is 1 / (a (1 - e a / 4)) and both sides are d / (1 - e a / 4).
    # Checked on a simulated chain (d = 50, e a = 0.4, 4 chains x 4,000 steps), then the
    # stop rule: a loss that has stopped rising ends the spread only if the virial ratio
    # over the later half is not below 1 (here 0.8: the chains still move out).
    rng = np.random.default_rng(0)
    d, a, e, chains, steps = 50, 1.0, 0.4, 4, 4000
    w = rng.normal(size=(chains, d)) / np.sqrt(a * (1 - e * a / 4))
    virial = np.empty((chains, steps))
    for t in range(steps):
        w = w - e / 2 * a * w + np.sqrt(e) * rng.normal(size=w.shape)
        virial[:, t] = a * np.sum(w**2, axis=1)
    ratio = virial.mean() / d
    assert abs(ratio * (1 - e * a / 4) - 1) < 0.02, ratio
    unit, nbeta = 500, 1.0
    loss = [10.0 + rng.normal(size=(chains, unit)) for _ in range(8)]
    settled = functools.partial(spread._settled, nbeta=nbeta, unit=unit, first=unit, dimension=d)
    spread_out = [np.full((chains, unit), 1.0 * d) + rng.normal(size=(chains, unit))] * 8
    moving = [np.full((chains, unit), 0.8 * d) + rng.normal(size=(chains, unit))] * 8
    assert settled(loss, spread_out)
    assert not settled(loss, moving)
    assert not settled(loss[:3], spread_out[:3])  # checks at 2, 4, 8, ... units only


def test_spread_step_is_the_largest_stable_step_of_the_grid():
    # The spread's step: the largest grid step at the chosen localization up to which
    # every step's chains stayed finite, escaped nowhere and kept the stiffness bound (a
    # stable step above an unstable one does not count); at most 16 times the chosen
    # step, at least twice it, and only for SGLD with a localizer.
    steps = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])

    def fake(diverged, stiffness, chosen=1.0):
        row = np.zeros((1, steps.size))
        return SimpleNamespace(
            recommended={"step_size": chosen, "localization": 1.0},
            localizations=np.array([1.0]),
            step_sizes=steps,
            num_diverged=row + np.asarray(diverged),
            escape_share=row,
            llc_mean=row + 1.0,
            stiffness=row + np.asarray(stiffness),
            max_bias=0.025,
        )

    ok = fake(0, 0.1)
    assert spread.spread_plan(ok, "sgld", 1000) == Spread(16.0, 8000, 0.025, 500)
    assert spread.spread_plan(ok, "rmsprop_sgld", 1000) is None
    unlocalized = fake(0, 0.1)
    unlocalized.recommended = {"step_size": 1.0, "localization": 0.0}
    assert spread.spread_plan(unlocalized, "sgld", 1000) is None
    assert spread.spread_plan(fake([0, 0, 0, 1, 0, 0, 0], 0.1), "sgld", 1000).step_size == 4.0
    assert (
        spread.spread_plan(fake(0, [0.1, 0.2, 3.0, 3.0, 3.0, 3.0, 3.0]), "sgld", 10).step_size
        == 2.0
    )
    assert spread.spread_plan(fake(0, [0.1, 3.0, 0.1, 0.1, 0.1, 0.1, 0.1]), "sgld", 10) is None
    assert spread.spread_plan(fake(0, 0.1, chosen=64.0), "sgld", 10) is None


def test_no_spread_where_the_burn_in_has_no_segments_to_carry_it():
    # The spread runs in the adaptive burn-in's segments: a fixed burn-in of 0 steps (none)
    # or of 200 (segments of 50 steps, under the 100 that keep the calls few) gets none,
    # with the progress bar on too (its total counts the spread only where it runs).
    for burnin in (0, 200):
        r = llc.estimate_llc(
            jax.random.key(2),
            quadratic_loss,
            jnp.zeros(5),
            dummy_data(N),
            num_draws=200,
            num_burnin_steps=burnin,
            progress_bar=True,
        )
        assert r.spread_steps == 0 and r.num_burnin_steps >= burnin
