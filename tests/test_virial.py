"""The equilibration check: ``E[(w - w*) . grad U] = d`` at stationarity, exactly.

For full-batch SGLD on a quadratic ``U = sum_i kappa_i x_i^2 / 2`` (``x = w - w*``,
``kappa_i = nbeta a_i + gamma``) the chain along each eigendirection is the AR(1) process
``x' = (1 - eps kappa / 2) x + sqrt(eps) xi``, whose stationary variance is
``1 / (kappa (1 - eps kappa / 4))``: the mean of ``x . grad U`` is exactly
``sum_i 1 / (1 - eps kappa_i / 4)``, the finite-step value of ``d``. The library's
``virial_ratio`` must reproduce it within its own standard error, over the weights that
move (a mask, a projected-out direction), and the flag must fire where chains started at
w* have not yet spread along a direction that only the localizer holds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llc
from llc import flags
from llc.trace_stats import virial_ratio

CURVATURES = np.array([1.0, 2.0, 5.0, 10.0])  # loss Hessian eigenvalues a_i
NBETA, STEP = 100.0, 8e-4  # eps * kappa_max / 4 = 0.2: the finite-step value is d + 10%
DATA = jnp.zeros((100, 1))


def quadratic(params, batch):
    return 0.5 * jnp.sum(jnp.asarray(CURVATURES, params.dtype) * params**2) + 0.0 * jnp.sum(batch)


def exact_virial(moving: np.ndarray) -> float:
    """``sum_i 1 / (1 - eps kappa_i / 4)`` over the moving eigendirections."""
    kappa = NBETA * CURVATURES[moving] + 1.0
    return float(np.sum(1.0 / (1.0 - STEP * kappa / 4.0)))


def run(**kw):
    return llc.estimate_llc(
        jax.random.key(3),
        quadratic,
        jnp.zeros(4),
        DATA,
        step_size=STEP,
        nbeta=NBETA,
        batch_size=None,
        num_chains=16,
        num_draws=4000,
        num_burnin_steps=500,
        progress_bar=False,
        **kw,
    )


@pytest.mark.parametrize(
    ("kw", "moving"),
    [
        ({}, [0, 1, 2, 3]),
        ({"weight_mask": np.array([False, False, True, True])}, [2, 3]),
        ({"held_directions": ([np.eye(4)[0]], [float("inf")])}, [1, 2, 3]),
    ],
    ids=["all", "mask", "projected"],
)
def test_virial_ratio_matches_the_exact_finite_step_value(kw, moving):
    with pytest.warns(RuntimeWarning):  # the step is hot on purpose: step_size_bias
        result = run(**kw)
    d = len(moving)
    per_chain = result.virial_ratio * d
    mean = per_chain.mean()
    stderr = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
    assert abs(mean - exact_virial(np.array(moving))) < 4 * stderr
    assert abs(mean - d) > 4 * stderr  # the test resolves the finite-step correction


def test_chains_that_have_not_spread_along_a_flat_direction_are_flagged():
    """A weight the loss ignores: only the localizer (gamma = 10) holds it, at variance 0.1.

    From w* its variance after t steps is ``(1 - (1 - eps gamma / 2)^(2t)) / gamma``: 20
    burn-in steps and 100 draws at eps = 1e-3 leave it (and the stiffer directions, which
    start at 0 too) well short of equilibrium, and the check flags it; 3,000 burn-in steps
    are 30 relaxation times. The step is small (eps kappa / 4 < 2%): the finite-step value
    is within 1% of d.
    """

    def flat(params, batch):
        return quadratic(params.at[3].set(0.0), batch)

    def run_flat(chains, burnin, draws):
        return llc.estimate_llc(
            jax.random.key(0),
            flat,
            jnp.zeros(4),
            DATA,
            step_size=1e-3,
            nbeta=10.0,
            localization=10.0,
            batch_size=None,
            num_chains=chains,
            num_burnin_steps=burnin,
            num_draws=draws,
            progress_bar=False,
        )

    with pytest.warns(RuntimeWarning, match="not_equilibrated"):
        short = run_flat(16, 20, 100)
    assert short.evidence["not_equilibrated"].values["ratio"] < 0.9
    long = run_flat(8, 3000, 8000)
    assert "not_equilibrated" not in long.flags


def test_not_equilibrated_needs_ten_percent_and_three_standard_errors():
    rng = np.random.default_rng(0)
    d = 10
    at = lambda ratio, spread: ratio * d + spread * rng.normal(size=(4, 50))  # noqa: E731
    assert flags.not_equilibrated(at(0.95, 0.1), d) is None  # 5%: not material
    assert flags.not_equilibrated(at(0.7, 200.0), d) is None  # too noisy to tell
    low = flags.not_equilibrated(at(0.7, 0.1), d)
    assert low.values["ratio"] == pytest.approx(0.7, abs=0.01) and "not spread" in low
    high = flags.not_equilibrated(at(1.3, 0.1), d)
    assert "hotter" in high and "step_size" in high
    assert flags.not_equilibrated(np.full((4, 50), np.nan), d) is None


def test_virial_ratio_of_exact_normal_draws_is_one():
    w = np.random.default_rng(1).normal(size=(8, 5000, 6))
    _, mean, stderr = virial_ratio(np.sum(w**2, axis=2), 6)
    assert abs(mean - 1.0) < 4 * stderr


def test_a_projected_direction_outside_the_mask_is_refused_before_running():
    mask = np.array([True, True, False, False])
    held = ([np.eye(4)[3]], [float("inf")])  # on a frozen weight: d would be wrong
    with pytest.raises(ValueError, match="held_directions direction 0"):
        run(weight_mask=mask, held_directions=held)


def test_sgnht_thermostat_counts_only_the_sampled_directions():
    """SGNHT with a projected-out direction: its friction adapts to d - 1 directions.

    Its thermostat once divided the kinetic energy by d and read the velocity before the
    projection, so the chains ran hot (ratio 1.25, estimate 1.86 against the exact 1.49);
    the check flagged it. The exact value is 1/2 sum nbeta mu / (nbeta mu + gamma) over the
    three sampled directions; the tolerance is 4 standard errors plus the predicted
    first-order step-size bias.
    """
    held = ([np.eye(4)[3]], [float("inf")])
    result = llc.estimate_llc(
        jax.random.key(0),
        quadratic,
        jnp.zeros(4),
        DATA,
        step_size=1e-4,
        nbeta=NBETA,
        batch_size=None,
        num_chains=8,
        num_draws=4000,
        num_burnin_steps=2000,
        sampler="sgnht",
        held_directions=held,
        progress_bar=False,
    )
    scaled = NBETA * CURVATURES[:3]
    exact = 0.5 * np.sum(scaled / (scaled + 1.0))
    bias = abs(result.llc_mean - result.llc_step_corrected)
    assert abs(result.llc_mean - exact) < 4 * result.llc_stderr + bias
    assert "not_equilibrated" not in result.flags
