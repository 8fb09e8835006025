"""A finished :func:`llc.estimate_llc` run as :func:`llc.diagnose`'s lower-loss probe.

Its chains are localized SGLD chains from w* at the same nbeta and localization as the
probe's; when they diffused at least as far as the probe would (steps x step size), they
already answer its question, with the library's own escape criterion, and the probe's
chains are not run again.
"""

import math

import numpy as np

from llc.result import LLCResult
from llc.saddle_probe import LowerLoss
from llc.trace_stats import ESCAPE_DROP

__all__ = ["covers", "lower_loss_of_run"]


def covers(
    result: LLCResult | None,
    nbeta: float,
    localization: float,
    steps: int,
    step_size: float,
    num_params: int,
) -> bool:
    """Whether ``result``'s chains probed at least ``steps`` SGLD steps of ``step_size``.

    Only plain SGLD runs at the same nbeta and localization, with no held directions,
    full-data checks (the probe's own test) and a chain that did not diverge, count: a
    preconditioned step or a held direction moves the chains differently from the probe.

    Examples:
        >>> covers(None, 10.0, 1.0, 1000, 1e-3, 4)
        False
    """
    if result is None or steps <= 0 or result.sampler != "sgld" or result.num_held_directions:
        return False
    if result.num_params != num_params:  # a weight_mask run moved only some weights
        return False
    if not _full_data(result):  # a noisy minibatch trace is not the probe's test
        return False
    if not (np.isclose(result.nbeta, nbeta) and np.isclose(result.localization, localization)):
        return False
    if result.step_size is None or not math.isfinite(result.step_size):
        return False
    if np.all(result.diverged):
        return False
    return chain_steps(result) * result.step_size >= steps * step_size


def _full_data(result: LLCResult) -> bool:
    """Whether ``min_loss_drop`` comes from full-data losses (checks, or full batch)."""
    return result.batch_size is None or bool(np.size(result.full_loss_trace))


def chain_steps(result: LLCResult) -> int:
    """Steps each chain of ``result`` took, burn-in included."""
    return result.num_burnin_steps + result.num_draws * result.num_steps_bw_draws


def lower_loss_of_run(result: LLCResult) -> LowerLoss:
    """What ``result``'s chains found below ``L_n(w*)``, as a :class:`LowerLoss` (no cost).

    ``found`` is the run's ``escaped``, or, where its losses are full-data ones (checks,
    or a full-batch run), any of them below ``L_n(w*) - ESCAPE_DROP / nbeta``, the
    probe's own test; ``loss_drop`` the lowest
    ``nbeta (L - L*)`` over its chains that did not diverge; ``mean_excess`` its
    ``llc_mean``; ``distance`` the largest ``||w - w*||`` their draws reached. The run
    keeps no positions, so there is no direction or point.
    """
    alive = ~np.asarray(result.diverged, bool)
    drops = np.asarray(result.min_loss_drop, np.float64)[alive]
    distance = np.asarray(result.distance_trace, np.float64)[alive]
    return LowerLoss(
        found=bool(np.any(result.escaped))
        or (_full_data(result) and bool(np.any(drops < -ESCAPE_DROP))),
        loss_drop=float(np.nanmin(drops)) if np.isfinite(drops).any() else math.nan,
        mean_excess=float(result.llc_mean),
        distance=float(np.nanmax(distance)) if np.isfinite(distance).any() else math.nan,
        direction=None,
        point=None,
        diverged=int(np.sum(result.diverged)),
        num_chains=result.num_chains,
        num_steps=chain_steps(result),
        step_size=float(result.step_size or math.nan),
        batch_size=result.batch_size,
        cost_in_sgld_steps=0.0,
        source="run",
    )
