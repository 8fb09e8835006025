"""Each flag judged on its numbers alone: raised past its threshold, silent below it."""

import numpy as np

from llc import flags


def test_not_converged_at_the_rhat_limit():
    assert flags.not_converged(1.05, 100.0, 400) is None
    assert flags.not_converged(float("nan"), float("nan"), 400) is None
    e = flags.not_converged(1.0501, 100.0, 400)
    assert e.flag == "not_converged" and e.values["rhat"] == 1.0501 and "R-hat" in e


def test_not_stationary_needs_three_standard_errors_and_two_percent():
    where = "from the burn-in to the draws"
    assert flags.not_stationary((2.9, 1.0), where, 10.0) is None  # 2.9 s.e.
    assert flags.not_stationary((3.1, 1.0), where, 200.0) is None  # 1.55% of the level
    assert flags.not_stationary(None, where, 10.0) is None
    e = flags.not_stationary((3.1, 1.0), where, 100.0)
    assert "still rising" in e and e.values["share"] == 0.031


def test_lower_loss_escape_names_the_chains():
    escape = {
        "escaped": np.array([False, True, True]),
        "min_loss_drop": np.array([0.5, -3.0, -7.0]),
        "escaped_at_step": np.array([-1, 10, 20]),
        "share_below_init": np.array([0.0, 0.4, 0.8]),
    }
    e = flags.lower_loss_escape(escape, "full-batch checks")
    assert e.values["chains"] == [1, 2] and "-7" in e.message and "llc.diagnose" in e
    escape["escaped"] = np.zeros(3, bool)
    assert flags.lower_loss_escape(escape, "minibatch trace") is None


def test_diverged_gives_the_stability_product_and_a_safe_step():
    first_bad = np.array([-1, 12])
    kw = {"mu": 10.0, "rows": 100, "nbeta": 100.0, "localization": 0.0, "blowup": 1e4}
    unstable = flags.diverged(first_bad, step_size=0.01, **kw)  # 0.01 * 1000 = 10 >= 4
    assert unstable.values["stability_product"] == 10.0
    assert unstable.values["safe_step_size"] == 4 / 1000 and ">= 4" in unstable
    stable = flags.diverged(first_bad, step_size=0.001, **kw)  # product 1 < 4
    assert "< 4" in stable and stable.values["safe_step_size"] == 1e-4
    assert flags.diverged(np.array([-1, -1]), step_size=0.01, **kw) is None
    early = flags.stopped_early(unstable, 60, 250)
    assert "stopped after 60 of 250 draws" in early.message


def test_interrupted_negative_and_above_half_dimension():
    assert flags.interrupted(100, 100) is None and flags.interrupted(40, 100).values["num_draws"]
    assert flags.negative_estimate(1.0, np.array([1.0, np.nan])) is None
    assert flags.negative_estimate(0.5, np.array([2.0, -1.0])).values["chains"] == [1]
    assert flags.above_half_dimension(5.9, 10, 0.5) is None  # within 2 s.e. of d/2 = 5
    assert flags.above_half_dimension(6.1, 10, 0.5).values["half_dimension"] == 5


def test_step_size_bias_above_the_cap_only():
    assert flags.step_size_bias(np.array([0.02, 0.03]), 0.025, 9.75, None) is None  # 2.5%
    assert flags.step_size_bias(np.array([np.nan]), 0.025, 10.0, None) is None
    e = flags.step_size_bias(np.array([0.04, np.nan]), 0.025, 9.6, 0.01)
    assert e.values["predicted_bias"] == 0.04 and "llc_step_corrected = 9.6" in e.message
    assert "calibration predicted 1.0%" in e


def test_a_stopped_run_still_fits_on_one_warning_line():
    e = flags.diverged(
        np.arange(12), mu=1.0, rows=10, step_size=1.0, nbeta=1e4, localization=1.0, blowup=1e4
    )
    line = flags.stopped_early(e, 1234, 100000).line()
    assert len(line) <= flags.MAX_LINE and line.endswith("stopped after 1234 of 100000 draws")


def test_still_spreading_needs_three_standard_errors_and_five_percent():
    rng = np.random.default_rng(0)
    steady = 2.0 + 0.05 * rng.standard_normal((4, 400))
    assert flags.still_spreading(steady) is None
    creeping = steady + np.linspace(0.0, 0.3, 400)  # +15% over the draws, far beyond noise
    e = flags.still_spreading(creeping)
    assert e.flag == "still_spreading" and e.values["growth"] > 0.2
    small = steady + np.linspace(0.0, 0.06, 400)  # 3% growth: significant, but below 5%
    assert flags.still_spreading(small) is None
    assert flags.still_spreading(creeping[:, :12]) is None  # quarters shorter than 4 draws


def test_imprecise_above_five_percent_standard_error_either_sign():
    assert flags.imprecise(10.0, 0.5, 4) is None  # exactly 5%
    assert flags.imprecise(10.0, float("nan"), 1) is None  # one chain: no standard error
    e = flags.imprecise(-0.2, 0.0201, 4)
    assert e.flag == "imprecise" and abs(e.values["share"] - 0.1005) < 1e-12
    assert "+/- 20%" in e and "x the chains" in e.explanation
    assert flags.imprecise(0.0, 1e-6, 4).values["share"] > 1  # an estimate at zero
