"""Burn-in strategies: how long the chains run before their draws count.

A fixed burn-in runs in the same compiled call as the draws. The two adaptive ones run
the burn-in as a sequence of compiled segments, each resuming the last one's carry (the
chains are those of one uninterrupted run), and judge the chains between segments:

- :func:`auto` (``num_burnin_steps="auto"``, :class:`llc.plan.AutoBurnin`): window by
  window until the chains stop rising (:func:`passes`, then :func:`confirmed`).
- :func:`follow` (``step_size="auto"``, :class:`llc.plan.FollowBurnin`): the step size
  shrinks below the step-size bias cap where the chains are, until they are :func:`steady`.

With ``step_size="auto"`` either one starts where :func:`llc.spread.spread` left the
chains (a :class:`Start`): spread along the flat directions at a larger, stable step.
"""

from typing import NamedTuple

import jax
import numpy as np

from llc import loop, mesh, samplers
from llc import trace_stats as stats
from llc.plan import AutoBurnin, FollowBurnin, Plan
from llc.step_bias import chain_bias

__all__ = [
    "Start",
    "adaptive",
    "auto",
    "burnin_chunk",
    "confirmed",
    "follow",
    "follow_limits",
    "passes",
    "planned_steps",
    "run_chunk",
    "shrunk",
    "steady",
    "unit_steps",
]

FOLLOW_SEGMENTS = 4  # step_size="auto": burn-in segments after which the step is re-judged
FOLLOW_MAX_EXTRA = 4  # ... and at most this many more segments until the chains are steady
SHRINK_MARGIN = 0.8  # a step over the bias cap shrinks to this share of it


class Start(NamedTuple):
    """Where the burn-in proper starts: after :func:`llc.spread.spread` (or at w*, ``steps=0``).

    Attributes:
        resume: the carry to resume from, or None (from w*).
        steps: the steps run so far (the global step number of the next one).
        trace: the spread's host trace of ``L_B - L*``, ``(chains, steps)``.
        hyper: the hyperparameters to go on with (the step re-judged where the spread
            left the chains).
        step_size: the step the spread ran at (0: no spread).
    """

    resume: tuple | None
    steps: int
    trace: np.ndarray | None
    hyper: object
    step_size: float = 0.0


def run_chunk(plan: Plan, hyper, resume, config) -> loop.RunOutput:
    """One compiled call of the plan's chains, resuming ``resume`` (None: from w*)."""
    return loop.run_chains(
        plan.rng_key,
        plan.params,
        plan.data,
        hyper,
        plan.direction,
        plan.held,
        resume,
        plan.mask,
        plan.observe,
        loss_fn=plan.loss_fn,
        config=config,
    )


def auto(plan: Plan, hyper, config, start: Start | None = None):
    """``num_burnin_steps="auto"``: burn in window by window until the chains stop rising.

    Each window (``config.num_burnin_steps`` steps, the span of the draws) is one
    compiled call resuming the last one's carry, so the chains are those of one
    uninterrupted run. At ``T = 2W, 4W, ...`` (and at the cap) the mean over
    ``[T/2, T)`` is compared with that over ``[T/4, T/2)`` by :func:`llc.trace_stats.rise`; ``T``
    passes when the rise is bounded below tolerance (:func:`llc.trace_stats.settled`) and the chains
    agree over ``[T/2, T)`` (R-hat at most 1.05: a trend test alone passes a plateau
    that the chains leave at different times). A passing ``T`` is then confirmed by one
    more window ``[T, T + W)``, a dry run of the draws' ``not_stationary`` test
    (:func:`confirmed`); the burn-in is then ``T + W``. A window that fails sends the
    doubling on to ``2T``. The cap (``plan.burnin.cap``) stops it in any case.

    With ``start`` (from :func:`llc.spread.spread`) the windows go on from where the spread left
    the chains, at ``start.hyper``; ``T`` counts the steps after the spread.

    Returns:
        ``(config, resume, burnin_delta)`` for :func:`llc.execute.execute_chunks`: the config with
        the burn-in actually run (the spread's steps included), the carry to resume from, and
        the host burn-in trace.
    """
    start = start or Start(None, 0, None, hyper)
    window, cap = plan.burnin.window, plan.burnin.cap
    chunk = burnin_chunk(plan, config)
    resume, parts, steps, check_at, passed = start.resume, [], 0, 2 * window, None
    while steps < cap:
        size = min(window, cap - steps)
        resume, part, alive, _ = segment(
            plan, start.hyper, resume, chunk, start.steps + steps, size
        )
        steps += size
        parts.append(part)
        if not alive.any():
            break  # every chain diverged: the draws will say so
        if passed is not None:  # [passed, steps) is the confirming window
            if confirmed(joined(parts, alive, plan.nbeta), passed):
                break
            passed = None
        elif steps >= check_at or steps >= cap:
            verdict = passes(joined(parts, alive, plan.nbeta), window)
            if verdict is None:
                break
            passed = steps if verdict else None
            check_at *= 2
    burnin = _with_spread(start, parts, config.num_chains)
    return config._replace(num_burnin_steps=start.steps + steps), resume, burnin


def adaptive(plan: Plan) -> bool:
    """Whether the plan's burn-in runs as segments judged between calls (auto or follow)."""
    return isinstance(plan.burnin, AutoBurnin) or (
        isinstance(plan.burnin, FollowBurnin) and plan.burnin.steps >= FOLLOW_SEGMENTS
    )


def unit_steps(plan: Plan, config) -> int:
    """The length of the adaptive burn-in's calls: auto's window, or the follow's segment."""
    if isinstance(plan.burnin, AutoBurnin):
        return plan.burnin.window
    return follow_limits(config.num_burnin_steps)[0]


def planned_steps(plan: Plan, config) -> int:
    """The most steps per chain the run may take (the progress bar's total)."""
    total = config.total_steps
    if isinstance(plan.burnin, AutoBurnin):
        total += max(0, plan.burnin.cap - config.num_burnin_steps)
    if isinstance(plan.burnin, FollowBurnin):
        total += follow_limits(config.num_burnin_steps)[1] - config.num_burnin_steps
    if plan.spread is not None:
        unit = unit_steps(plan, config)
        total += unit * (plan.spread.cap // unit - (-plan.spread.settle // unit))
    return total


def burnin_chunk(plan: Plan, config):
    """The config of every burn-in call: no draws, one progress total (one program)."""
    return config._replace(num_draws=0, chunked=True, progress_total=planned_steps(plan, config))


def segment(plan: Plan, hyper, resume, chunk, done: int, size: int):
    """``size`` more burn-in steps after ``done`` (one compiled call resuming ``resume``).

    Returns ``(resume, burnin_delta, alive, virial)``: the carry to resume from, the
    segment's host trace, which chains have not diverged and the host trace of
    ``(w_t - w*) . grad U(w_t)``.
    """
    if resume is None:  # the carry at w*: every segment then shares one compiled program
        resume = loop.start_carry(plan.params, hyper, chunk)
    out = run_chunk(plan, hyper, resume, chunk._replace(num_burnin_steps=size))
    states, first_bad = out.final_carry
    resume = (states, first_bad, jax.numpy.int32(done + size), jax.numpy.int32(0))
    host = mesh.to_host((out.burnin_delta, first_bad, out.burnin_virial))
    return resume, host[0], host[1] < 0, host[2]


def follow_limits(num_burnin_steps: int) -> tuple[int, int]:
    """The followed burn-in's segment length and the most steps it may run."""
    size = -(-num_burnin_steps // FOLLOW_SEGMENTS)
    return size, num_burnin_steps + FOLLOW_MAX_EXTRA * size


def follow(plan: Plan, hyper, config, start: Start | None = None):
    """Burn in with a step size that follows the chains (``step_size="auto"``).

    The calibration judges its step where a short run's chains end; a long run can carry
    them into stiffer regions (on deep linear networks, along the flat directions). So the
    burn-in runs in ``FOLLOW_SEGMENTS`` equal segments (each one compiled call resuming
    the last one's carry: the chains are those of one run), and after every segment the
    rule's predicted step-size bias is evaluated at each chain's position with its own
    per-coordinate steps (:func:`llc.step_bias.chain_bias`). Where the chains' mean,
    relative to their mean ``nbeta (L - L*)`` over the segment's second half, exceeds
    ``plan.burnin.max_bias``, the step shrinks to ``SHRINK_MARGIN`` of the cap (the
    prediction is first order in the step; shrunk to the cap itself, the chains' further
    wandering put it above the cap at their end points about half the time).

    The draws start only where both hold: the step is inside the cap where the chains
    are, and the chains are steady (:func:`steady`: the last segment's mean moved from
    the one before by no more than the draws' tolerance, up *or down*, and the chains
    agree over the two). Until then the burn-in goes on, a segment at a time, for at most
    ``FOLLOW_MAX_EXTRA`` segments more; a step shrunk after the planned burn-in is always
    run for a segment before the draws. Chains can come down from above: an adaptive
    sampler (``"rmsprop_sgld"`` with ``adapt_steps`` set to the burn-in) lifts them while
    its preconditioner adapts, and they relax after it freezes.

    With ``start`` (from :func:`llc.spread.spread`) the segments go on from where the spread left
    the chains, at ``start.hyper``.

    Returns:
        ``(hyper, step_sizes, config, resume, burnin_delta)``: the final hyperparameters,
        the step size of every segment, and :func:`llc.execute.execute_chunks`'s arguments (the
        config with the burn-in actually run, the spread's steps included).
    """
    start = start or Start(None, 0, None, hyper)
    total = config.num_burnin_steps
    size, limit = follow_limits(total)
    chunk = burnin_chunk(plan, config)
    hyper, resume, parts, steps, history = start.hyper, start.resume, [], 0, []
    while steps < limit:
        this = min(size, total - steps) if steps < total else size
        history.append(float(hyper.step_size))
        resume, part, alive, _ = segment(plan, hyper, resume, chunk, start.steps + steps, this)
        steps += this
        parts.append(part)
        if not alive.any():
            break  # every chain diverged: the draws will say so
        if steps >= total and steps + size > limit:
            break  # no room left to run a shrunk step, or to wait for the chains
        bias = bias_ratio(plan, hyper, resume[0], part, alive)
        if bias > plan.burnin.max_bias:
            hyper = shrunk(hyper, bias, plan.burnin.max_bias)
        elif steps >= total and steady(parts, alive, plan.nbeta):
            break
    burnin = _with_spread(start, parts, config.num_chains)
    config = config._replace(num_burnin_steps=start.steps + steps)
    return hyper, tuple(history), config, resume, burnin


def shrunk(hyper, bias: float, max_bias: float):
    """``hyper`` with the step shrunk from a predicted ``bias`` to ``SHRINK_MARGIN * max_bias``."""
    return hyper._replace(step_size=hyper.step_size * (SHRINK_MARGIN * max_bias / bias))


def bias_ratio(plan: Plan, hyper, states, part: np.ndarray, alive: np.ndarray) -> float:
    """The rule's predicted step-size bias at the chains' ``states``, relative to the level.

    :func:`llc.step_bias.chain_bias` with each chain's own per-coordinate steps at
    ``hyper``, its mean over the chains ``alive`` divided by their mean ``nbeta (L - L*)``
    over the second half of ``part`` (the last segment's host trace). 0 where nothing is
    finite.
    """
    sampler = samplers.SAMPLERS[plan.sampler]
    scale = jax.vmap(lambda s: loop.step_scale(sampler, s, hyper, plan.params, plan.mask))(states)
    half = part.shape[1] // 2
    level = abs(float(np.mean(plan.nbeta * part[alive, half:].astype(np.float64))))
    absolute = chain_bias(plan, states.position, scale, alive)
    return float(np.nanmean(absolute)) / max(level, 1e-12) if np.isfinite(absolute).any() else 0.0


def _with_spread(start: Start, parts: list, num_chains: int) -> np.ndarray:
    """The whole burn-in's host trace: the spread's, then the burn-in's ``parts``."""
    pieces = ([] if start.trace is None else [start.trace]) + parts
    return np.concatenate(pieces, axis=1) if pieces else np.zeros((num_chains, 0))


def steady(parts, alive, nbeta) -> bool:
    """Whether the followed burn-in's chains have stopped moving, either way.

    ``parts`` are its segments' host traces. The last segment's mean of ``nbeta (L - L*)``
    must not have moved from the one before, up *or down*, by the draws' ``not_stationary``
    measure (:func:`llc.trace_stats.rising`: 3 standard errors and 2% of the level), and the
    chains must agree over the two (R-hat at most 1.05). True when it cannot be measured (fewer than
    two chains or segments, non-finite values), as :func:`passes` does.
    """
    if len(parts) < 2:
        return True
    earlier = parts[-2][alive].astype(np.float64) * nbeta
    later = parts[-1][alive].astype(np.float64) * nbeta
    rise = stats.rise(earlier, later)
    if rise is None:
        return True
    level = float(np.mean(later))
    if stats.rising(rise, level) or stats.rising((-rise[0], rise[1]), level):
        return False
    return not stats.convergence(np.concatenate([earlier, later], axis=1))[0] > stats.RHAT_LIMIT


def joined(parts, alive, nbeta) -> np.ndarray:
    """The burn-in windows so far as one ``(alive chains, steps)`` trace of nbeta (L - L*)."""
    return np.concatenate(parts, axis=1)[alive].astype(np.float64) * nbeta


def passes(trace: np.ndarray, window: int) -> bool | None:
    """Whether a burn-in ``trace`` of ``T`` steps passes the doubling test at ``T``.

    The rise from ``[T/4, T/2)`` to ``[T/2, T)`` must be bounded below tolerance
    (:func:`llc.trace_stats.settled`, with the last ``window`` steps as the draws'
    precision) and the chains must agree over ``[T/2, T)`` (R-hat at most 1.05). None
    when the rise cannot be measured (fewer than two chains, windows under four steps,
    non-finite values).
    """
    steps = trace.shape[1]
    later = trace[:, steps // 2 :]
    rise = stats.rise(trace[:, steps // 4 : steps // 2], later)
    if rise is None:
        return None
    rhat = stats.convergence(later)[0]  # chains caught at different stages
    return stats.settled(rise, float(np.mean(later)), later[:, -window:].mean(axis=1)) and not (
        rhat > stats.RHAT_LIMIT
    )


def confirmed(trace: np.ndarray, passed: int) -> bool:
    """Whether the window after a passing ``T = passed`` is not rising from ``[T/2, T)``.

    The draws' ``not_stationary`` test (:func:`llc.trace_stats.draws_rise`,
    :func:`llc.trace_stats.rising`) with ``trace[:, :passed]`` as the burn-in and
    ``trace[:, passed:]`` as the draws. Not the draws' R-hat: over one window it
    measures the draws' length against the chains' autocorrelation, which no longer
    burn-in changes.
    """
    trial = trace[:, passed:]
    return not stats.rising(stats.draws_rise(trace[:, :passed], trial)[0], float(np.mean(trial)))
