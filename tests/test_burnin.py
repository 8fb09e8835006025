"""The burn-in strategies' tests on synthetic traces (no sampling)."""

import numpy as np

from llc import burnin


def test_auto_burnin_confirms_a_passing_burnin_with_the_draws_checks():
    # A plateau every chain is still on passes the doubling test at T; the confirming
    # window [T, T + W) then fails if it rises (the not_stationary test: here +15%, some
    # 300 standard errors) and passes if flat, or if the chains merely disagree over it
    # (R-hat 1.15 over one window says the draws are short, not that burn-in is).
    rng = np.random.default_rng(0)
    chains, T, W = 8, 8000, 1000
    plateau = 100.0 + 5.0 * rng.standard_normal((chains, T))
    assert burnin.passes(plateau, W)
    flat = 100.0 + 5.0 * rng.standard_normal((chains, W))
    rising = flat + 15.0
    parted = flat + 10.0 * (np.arange(chains)[:, None] - (chains - 1) / 2) / chains  # no rise
    assert burnin.confirmed(np.concatenate([plateau, flat], axis=1), T)
    assert not burnin.confirmed(np.concatenate([plateau, rising], axis=1), T)
    assert burnin.confirmed(np.concatenate([plateau, parted], axis=1), T)


def test_followed_burnin_waits_for_chains_moving_either_way():
    # The follow's end test on segment traces of nbeta (L - L*): noise about a level is
    # steady; a fall (chains relaxing from above, as after an adaptive preconditioner
    # freezes) or a rise of 10% (some 200 standard errors) is not, and neither are
    # chains that disagree (levels 10% apart: R-hat well above 1.05). One segment, or one
    # chain, cannot be judged and passes.
    rng = np.random.default_rng(0)
    alive = np.ones(8, bool)

    def segment(level):
        return level + 5.0 * rng.standard_normal((8, 2000))

    assert burnin.steady([segment(100.0), segment(100.0)], alive, 1.0)
    assert not burnin.steady([segment(110.0), segment(100.0)], alive, 1.0)
    assert not burnin.steady([segment(100.0), segment(110.0)], alive, 1.0)
    parted = 100.0 + 10.0 * (np.arange(8)[:, None] - 3.5) / 8
    assert not burnin.steady([segment(parted), segment(parted)], alive, 1.0)
    assert burnin.steady([segment(100.0)], alive, 1.0)
    assert burnin.steady([segment(110.0), segment(100.0)], np.eye(8, dtype=bool)[0], 1.0)
