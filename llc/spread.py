"""The spread: from w*, the chains first spread along the flat directions at a larger step.

``step_size="auto"`` with SGLD runs it before the burn-in proper (:mod:`llc.burnin`):
:func:`spread_plan` picks its step from the calibration grid, :func:`spread` runs it.
"""

import functools
import math

import numpy as np

from llc.burnin import (
    Start,
    adaptive,
    bias_ratio,
    burnin_chunk,
    passes,
    segment,
    shrunk,
    unit_steps,
)
from llc.calibration import MAX_STIFFNESS
from llc.flags import not_equilibrated
from llc.plan import Plan, Spread

__all__ = [
    "SPREAD_MAX_FACTOR",
    "SPREAD_SETTLE",
    "spread",
    "spread_for",
    "spread_plan",
    "spread_steps",
]

SPREAD_RELAXATIONS = 3.0  # the spread runs this many localizer times 1 / (step * gamma)
SPREAD_TRIES = 3  # a spread that loses a chain is rerun from w* at half the step, so often
SPREAD_SETTLE = 500  # then steps at the calibrated step: the stiff directions settle back
SPREAD_MAX_FACTOR = 16.0  # the spread's step: at most this many times the calibrated one
SPREAD_MAX_WINDOWS = 8  # ... for at most this many spans of the draws
SPREAD_MIN_UNIT = 100  # no spread in burn-in segments shorter than this


def spread_plan(calibration, sampler: str, window: int) -> Spread | None:
    """The spread ``step_size="auto"`` runs before the burn-in (None: no spread).

    Its step is the largest of ``calibration``'s grid, at the localization it chose, up to
    which every step above the chosen one had chains that all stayed finite and below
    the blow-up bound, escaped to no lower loss, gave a finite estimate and kept the
    stiffness ``max_i s_i (nbeta H_ii + gamma)`` within the rule's bound; at most
    ``SPREAD_MAX_FACTOR`` times the chosen step, and at least twice it (else no spread).
    It runs at most ``SPREAD_MAX_WINDOWS`` spans of the draws.
    SGLD only: RMSProp-SGLD's preconditioner already takes large steps along flat
    directions, and the momentum samplers' steps are not the grid's.
    """
    chosen = calibration.recommended
    if sampler != "sgld" or not chosen["localization"] > 0:
        return None  # without a localizer, flat directions have no spread to reach
    g = int(np.argmin(np.abs(calibration.localizations - chosen["localization"])))
    steps = np.asarray(calibration.step_sizes, np.float64)
    stable = (
        (np.asarray(calibration.num_diverged[g]) == 0)
        & (np.asarray(calibration.escape_share[g]) == 0)
        & np.isfinite(np.asarray(calibration.llc_mean[g], np.float64))
        & (np.asarray(calibration.stiffness[g], np.float64) <= MAX_STIFFNESS)
        & (steps <= SPREAD_MAX_FACTOR * chosen["step_size"] * (1 + 1e-9))
    )
    top = int(np.argmin(np.abs(steps - chosen["step_size"])))
    while top + 1 < steps.size and stable[top + 1]:  # every step up to it stable too
        top += 1
    if steps[top] < 2 * chosen["step_size"]:
        return None
    cap = SPREAD_MAX_WINDOWS * window
    return Spread(float(steps[top]), cap, calibration.max_bias, SPREAD_SETTLE)


def spread_for(plan: Plan, calibration) -> Spread | None:
    """:func:`spread_plan` for a run, or None where its burn-in cannot carry a spread.

    The spread runs as calls of the adaptive burn-in's segments (:func:`unit_steps`): it
    needs one (a fixed burn-in of fewer than ``FOLLOW_SEGMENTS`` steps has none), of at
    least ``SPREAD_MIN_UNIT`` steps (else thousands of tiny calls) and no longer than the
    spread's cap.
    """
    window = plan.config.num_draws * plan.config.num_steps_bw_draws
    spread = spread_plan(calibration, plan.sampler, window)
    if spread is None or not adaptive(plan):
        return None
    unit = unit_steps(plan, plan.config)
    return spread if SPREAD_MIN_UNIT <= unit <= spread.cap else None


def spread_steps(step_size: float, localization: float, cap: int) -> int:
    """The spread's length: ``SPREAD_RELAXATIONS`` times ``1 / (step * gamma)``, at most ``cap``."""
    return int(min(cap, math.ceil(SPREAD_RELAXATIONS / (step_size * localization))))


def spread(plan: Plan, hyper, config) -> Start:
    """Spread the chains from w* at ``plan.spread.step_size`` before the burn-in proper.

    From w* the chains must first spread along the flat directions of the loss, where
    only the localizer pulls: the spread of such a direction relaxes as
    ``exp(-step * gamma * t)``, tens of thousands of steps at a step chosen for a small
    bias (on deep linear networks the estimate of a 20,000-step run was still 10% low,
    see the defaults page of the docs). At a step ``F`` times larger it takes ``F`` times
    fewer: :func:`spread_steps` steps, ``SPREAD_RELAXATIONS`` relaxation times (95% of
    the spread), at most ``plan.spread.cap``, or fewer where the loss stops rising and
    the chains stop moving out before (:func:`_settled`, from one relaxation time on;
    with few chains the check rarely passes, and the spread runs its three relaxation
    times).
    The larger step also inflates the stiff directions; ``plan.spread.settle`` steps at
    the calibrated step let them settle back (a direction of stiffness ``s k`` per step
    keeps an excess ``(F - 1) s k / 8`` of ``nbeta (L - L*)`` and loses it at the rate
    ``2 s k``: after ``t`` steps at most ``(F - 1) / (16 e t)`` per coordinate, 7e-4 at
    ``F = 16``, ``t = 500``). The step is then re-judged where the chains are
    (:func:`bias_ratio`, over those steps) and shrunk (:func:`shrunk`) if it exceeds
    ``plan.spread.max_bias``.

    Both phases run as calls of ``unit`` steps, the burn-in's own segment length, so that
    they compile no program of their own (the spread's length is rounded up to whole units
    but not past the cap, the settling one up to a whole unit).
    A spread that loses a chain (a non-finite loss or a blow-up) is run again from w* at
    half the step: ``SPREAD_TRIES`` tries in all, never below twice the calibrated step;
    after that the burn-in starts from w* as it would without a spread (and the result's
    ``spread_steps`` is 0).

    Returns:
        a :class:`Start`: the carry after the spread, its steps, its host trace and the
        hyperparameters to go on with.
    """
    base = float(hyper.step_size)
    step = plan.spread.step_size
    chunk, unit = burnin_chunk(plan, config), unit_steps(plan, config)
    settle = unit * -(-plan.spread.settle // unit)
    for _ in range(SPREAD_TRIES):
        if step < 2 * base * (1 - 1e-6):  # base: the step in the parameters' dtype
            break
        units = -(-spread_steps(step, plan.localization, plan.spread.cap) // unit)
        steps = unit * min(units, plan.spread.cap // unit)  # whole units, within the cap
        hot = hyper._replace(step_size=hyper.step_size * (step / base))
        first = math.ceil(1.0 / (step * plan.localization))  # one relaxation time
        settled = functools.partial(
            _settled, nbeta=plan.nbeta, unit=unit, first=first, dimension=plan.moving_dimension
        )
        resume, trace, alive = _units(plan, hot, None, chunk, 0, steps, unit, settled)
        steps = trace.shape[1]
        if alive.all():
            resume, calm, alive = _units(plan, hyper, resume, chunk, steps, settle, unit)
        if alive.all():
            bias = bias_ratio(plan, hyper, resume[0], calm, alive)
            if bias > plan.spread.max_bias:
                hyper = shrunk(hyper, bias, plan.spread.max_bias)
            return Start(resume, steps + settle, np.concatenate([trace, calm], 1), hyper, step)
        step /= 2
    return Start(None, 0, None, hyper)


def _units(plan: Plan, hyper, resume, chunk, done: int, steps: int, unit: int, until=None):
    """``steps`` steps as :func:`segment` calls of ``unit`` steps (one compiled program).

    Stops early once a chain is lost, or once ``until(parts, virials)`` holds for the host
    loss and virial traces of the calls so far. Returns ``(resume, trace, alive)``: the
    carry to resume from, the loss trace of the steps run and which chains are alive.
    """
    parts, virials, alive = [], [], None
    for start in range(0, steps, unit):
        resume, part, alive, virial = segment(plan, hyper, resume, chunk, done + start, unit)
        parts.append(part)
        virials.append(virial)
        if not alive.all() or (until is not None and until(parts, virials)):
            break
    return resume, np.concatenate(parts, axis=1), alive


def _settled(parts: list, virials: list, nbeta: float, unit: int, first: int, dimension: int):
    """Whether the spread's chains have stopped spreading (judged at 2, 4, 8, ... units).

    Not before ``first`` steps, one relaxation time of the localizer at the spread's
    step: earlier, a short window's loose precision can pass a deep network's slow rise
    for flat (held-out DLN 5-5-5-5-5: stopped after 500 steps, -23%).

    Two tests, both over the calls so far:

    - the loss has stopped rising: the test of ``num_burnin_steps="auto"``
      (:func:`llc.burnin.passes`: the rise from ``[T/4, T/2)`` to ``[T/2, T)`` bounded
      below tolerance, R-hat at most 1.05 over the later half);
    - the chains have stopped moving out: over ``[T/2, T)`` the virial ratio
      ``E[(w - w*) . grad U] / d`` is not below 1 by the margins of the
      ``not_equilibrated`` flag. For SGLD at step ``e`` a stationary chain has
      ``E|w' - w*|^2 = E|w - w*|^2``, which gives ``E[(w - w*) . grad U] = d + e/4
      E|grad U|^2``, at least d at any step; a ratio below 1 means ``|w - w*|`` is
      still growing. The test is one-sided, not a guarantee: stiff directions near the
      stability bound and minibatch noise raise the ratio and can hide soft directions
      that still move out. The loss alone can plateau while the chains still move out (a tanh
      MLP on digits: flat from 2,000 to 4,000 steps, then up 12%).

    Without soft directions both can pass at the first check, given the chains for the
    precision; along them, not before the chains have spread.
    """
    count = len(parts)
    if count < 2 or count & (count - 1) or count * unit < first:
        return False
    if not passes(np.concatenate(parts, axis=1).astype(np.float64) * nbeta, unit):
        return False
    later = np.concatenate(virials[count // 2 :], axis=1).astype(np.float64)
    off = not_equilibrated(later, dimension)  # above 1 (hot, the large step) does not hold it
    return off is None or off.values["ratio"] > 1.0
