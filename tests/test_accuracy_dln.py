"""Estimator accuracy on deep linear networks with exact (Aoyagi) learning coefficients.

At finite n even a perfect sampler does not return lambda (slt-reference.md section 3:
for normal crossings at n = 1e4 the exact expectation sits 10-22% below lambda), and no
closed-form finite-n target is known for deep linear networks. The tolerance is
therefore the project's accuracy contract for a single run in the small buckets,
|lambda_hat - lambda| <= 15% of lambda (issue 3, measured by benchmarks/accuracy.py),
plus 4 standard errors of the estimate itself.
"""

import jax
import pytest

import llc
from llc import ground_truth as gt

CONTRACT = 0.15


def assert_within_contract(result, lam):
    allowed = CONTRACT * lam + 4 * result.llc_stderr
    assert abs(result.llc_mean - lam) <= allowed, (
        f"lambda_hat {result.llc_mean:.2f} +/- {result.llc_stderr:.2f} vs lambda {lam:.2f}"
    )


@pytest.mark.parametrize(
    ("M", "H", "N", "burnin"),
    [pytest.param(5, 3, 5, 20_000, marks=pytest.mark.slow), (4, 3, 8, 40_000)],
)
def test_rrr_at_the_origin(M, H, N, burnin):
    # Rank-0 teacher: w* = 0 is the most singular point of the true set, where the local
    # coefficient is the global one (Aoyagi & Watanabe). devinterp's test allows 40%.
    # From the origin the chains spread slowly (the loss is quartic there): after 4,000
    # burn-in steps E[(w - w*) . grad U] was 0.80 d for 4-3-8 (not_equilibrated, 5.84
    # against 6) and 0.87 d for 5-3-5 (5.96 against 6.5); after 40,000 and 20,000 steps it
    # is 1.02 d and 0.96 d.
    p = gt.make_rrr_problem(M, H, N, 0, seed=0, num_data=10_000)
    r = llc.estimate_llc(
        jax.random.key(0),
        p.loss_fn,
        p.params,
        p.data,
        step_size=1e-4,
        localization=1.0,
        batch_size=500,
        num_chains=8,
        num_draws=4000,
        num_burnin_steps=burnin,
    )
    assert not r.flags
    assert_within_contract(r, float(p.true_lambda))


@pytest.mark.slow
def test_small_dln_teacher_converged_run():
    # Full-rank layers make the teacher a Morse-Bott point, where the LLC at the teacher
    # is known exactly (half the Hessian rank; here equal to Aoyagi's global value too).
    # The recipe's step size, but 3.3x its steps: with the recipe's 1e4 steps two of
    # eight chains had not equilibrated (R-hat 1.23, bulk ESS 25), which the
    # not_converged flag reports; 3.3e4 steps give R-hat ~1.03.
    p = gt.make_dln_problem([6, 8, 5, 7], seed=0, num_data=100_000, prop_rank_reduce=0.0)
    assert p.local_lambda is not None
    settings = {**gt.dln_recipe("1K"), "num_burnin_steps": 30_000, "num_draws": 3_000}
    r = llc.estimate_llc(jax.random.key(1), p.loss_fn, p.params, p.data, num_chains=8, **settings)
    # The recipe's step has a predicted first-order step-size bias of 4.2% where these
    # chains end (flagged; the contract's tolerance covers it). And the chains have not
    # spread along the minimum's symmetry directions (GL orbits of the hidden layers, flat
    # in the loss): E[(w - w*) . grad U] is 0.38 d, far from d, so not_equilibrated fires
    # truthfully; along exactly flat directions the spread does not move the estimate.
    assert r.flags == ("not_equilibrated", "step_size_bias"), r.evidence
    assert r.evidence["not_equilibrated"].values["ratio"] < 0.9
    assert_within_contract(r, float(p.local_lambda))


@pytest.mark.slow
def test_minimal_point_needs_a_longer_burnin_and_the_flag_says_so():
    # At the minimal factorisation the LLC is Aoyagi's lambda (19 here), and 11.5 of it
    # lives in the degenerate directions around the origin of a rank-0 network, which
    # SGLD leaves slowly (a plateau, then a rise). The recipe's 9,000-step burn-in gives
    # a transient underestimate, flagged not_stationary; num_burnin_steps="auto" runs on
    # until the rise is bounded (here: to its cap) and meets the contract.
    p = gt.make_dln_problem(
        [10, 6, 8, 6], seed=0, num_data=100_000, prop_rank_reduce=1.0, point="minimal"
    )
    lam = float(p.true_lambda)
    settings = gt.dln_recipe("1K")
    fixed = llc.estimate_llc(
        jax.random.key(1), p.loss_fn, p.params, p.data, num_chains=8, **settings
    )
    assert "not_stationary" in fixed.flags and fixed.llc_mean < 0.7 * lam
    settings["num_burnin_steps"] = "auto"
    auto = llc.estimate_llc(
        jax.random.key(1), p.loss_fn, p.params, p.data, num_chains=8, **settings
    )
    assert auto.num_burnin_steps > 10 * fixed.num_burnin_steps
    assert_within_contract(auto, lam)
