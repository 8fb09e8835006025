"""From one run's host traces to an :class:`llc.LLCResult`: the estimate and its flags."""

import math
import time
import warnings
from typing import NamedTuple

import jax
import numpy as np

from llc import flags as flag
from llc import trace_stats as stats
from llc.hessian import largest_eigenvalue_magnitude
from llc.loop import RunOutput
from llc.plan import AutoBurnin, FollowBurnin, Plan
from llc.result import LLCResult, Observable
from llc.step_bias import MAX_STEP_BIAS, less_step_bias

__all__ = ["assemble", "llc_from_losses"]


def llc_from_losses(loss_trace, init_loss, nbeta) -> np.ndarray:
    """``nbeta * (mean over draws of loss_trace - init_loss)``, per chain, in float64.

    For users who run their own sampling loop. The subtraction comes before the mean
    and both happen in float64 on the host, so a large nbeta does not amplify rounding.

    Args:
        loss_trace: losses per draw, shape ``(draws,)`` or ``(chains, draws)``; draws
            after burn-in only.
        init_loss: the full-data loss ``L_n(w*)``.
        nbeta: n times the inverse temperature.

    Returns:
        The estimate per chain (a float64 array of shape ``loss_trace.shape[:-1]``).

    Examples:
        >>> llc_from_losses([[1.01, 1.03], [1.02, 1.02]], init_loss=1.0, nbeta=100.0)
        array([2., 2.])
    """
    trace = np.asarray(loss_trace, dtype=np.float64)
    return float(nbeta) * np.mean(trace - np.float64(init_loss), axis=-1)


def assemble(
    plan: Plan,
    out: RunOutput,
    t0: float,
    *,
    step_size=None,
    localization=None,
    nbeta=None,
    init_loss=None,
    warn: bool = True,
    calibration=None,
    step_bias=None,
    max_bias: float = MAX_STEP_BIAS,
) -> LLCResult:
    """Turn one run's host traces into an :class:`llc.LLCResult` with its flags.

    ``step_size``, ``localization``, ``nbeta`` and ``init_loss`` override the plan's (a
    calibration grid or a trajectory shares one plan across settings or anchors).
    ``step_bias`` is the predicted step-size bias per chain at its final position
    (:func:`llc.step_bias.end_step_bias`, absolute), flagged ``step_size_bias`` above
    ``max_bias``.
    """
    step_size = plan.step_size if step_size is None else step_size
    localization = plan.localization if localization is None else localization
    nbeta = plan.nbeta if nbeta is None else nbeta
    init_loss = plan.init_loss if init_loss is None else init_loss
    config = plan.config
    num_draws = out.delta.shape[1]
    delta = out.delta.astype(np.float64)
    loss_trace = init_loss + delta
    diverged = out.first_nonfinite_step >= 0
    per_chain = np.where(diverged, np.nan, llc_from_losses(loss_trace, init_loss, nbeta))
    alive = per_chain[~diverged]
    llc_mean = float(np.mean(alive)) if alive.size else math.nan
    llc_std = float(np.std(alive, ddof=1)) if alive.size > 1 else math.nan
    with warnings.catch_warnings():  # all-NaN rows: no checks, or a diverged chain
        warnings.simplefilter("ignore", RuntimeWarning)
        acceptance = (
            np.nanmean(out.acceptance.astype(np.float64), axis=1)
            if out.acceptance.size
            else np.full(config.num_chains, np.nan)
        )
    escape = stats.escapes(out, nbeta, config.num_burnin_steps, config.num_steps_bw_draws, diverged)
    rhat, ess = stats.convergence(delta[~diverged])
    if step_bias is not None:
        step_bias = step_bias / max(abs(llc_mean), 1e-12)  # relative to the estimate
    run = _Run(
        rhat=rhat,
        ess=ess,
        delta=delta,
        diverged=diverged,
        nbeta=nbeta,
        llc_mean=llc_mean,
        per_chain=per_chain,
        escape=escape,
        stderr=float(np.nan_to_num(stats.standard_error(llc_std, alive.size))),
        step_bias=step_bias,
        max_bias=max_bias,
        calibration=calibration,
        step_size=step_size,
        localization=localization,
    )
    evidence = _judge(plan, out, run)
    if warn:
        flag.warn(evidence, stacklevel=4)
    return LLCResult(
        llc_mean=llc_mean,
        llc_std=llc_std,
        llc_per_chain=per_chain,
        loss_trace=loss_trace,
        init_loss=init_loss,
        nbeta=nbeta,
        step_size=math.nan if step_size is None else float(step_size),
        localization=localization,
        num_chains=config.num_chains,
        num_draws=num_draws,
        num_burnin_steps=config.num_burnin_steps,
        num_steps_bw_draws=config.num_steps_bw_draws,
        batch_size=config.batch_size,
        control_variate=config.control_variate and config.batch_size is not None,
        num_data=plan.num_data,
        num_params=plan.num_params,
        burnin_loss_trace=init_loss + out.burnin_delta.astype(np.float64),
        distance_trace=out.distance.astype(np.float64),
        diverged=diverged,
        diverged_at_step=out.first_nonfinite_step.astype(np.int64),
        full_loss_trace=escape["full_loss_trace"] + init_loss,
        full_loss_steps=escape["full_loss_steps"],
        projection_trace=out.projection.astype(np.float64) if config.track_direction else None,
        escaped=escape["escaped"],
        escaped_at_step=escape["escaped_at_step"],
        min_loss_drop=escape["min_loss_drop"],
        share_below_init=escape["share_below_init"],
        num_held_directions=0 if plan.held is None else int(plan.held[1].shape[0]),
        sampler=plan.sampler,
        sampler_options=dict(plan.options),
        acceptance=acceptance,
        rhat=rhat,
        ess=ess,
        flags=tuple(e.flag for e in evidence),
        evidence={e.flag: e for e in evidence},
        wall_time=time.perf_counter() - t0,
        calibration=calibration,
        predicted_step_bias=step_bias,
        num_devices=plan.num_devices,
        burnin=_burnin_name(plan),
        observables=_observables(plan, out, nbeta, diverged),
        mesh_shape=plan.mesh_shape,
        virial_ratio=_virial_per_chain(plan, out, diverged),
        spread_steps=int(out.spread[1]) if out.spread else 0,
    )


def _virial_per_chain(plan: Plan, out: RunOutput, diverged: np.ndarray):
    """Each chain's ``E[(w - w*) . grad U] / d`` (NaN if diverged), or None without a trace."""
    virial = np.asarray(out.virial, np.float64)
    if virial.ndim != 2 or not virial.shape[1]:
        return None
    per_chain = stats.virial_ratio(virial, plan.moving_dimension)[0]
    return np.where(diverged | ~np.isfinite(per_chain), np.nan, per_chain)


def _observables(plan: Plan, out: RunOutput, nbeta: float, diverged: np.ndarray):
    """Each recorded observable with its own ``nbeta (E[L_q] - L_q(w*))``."""
    if not plan.observed_init:
        return None
    found = {}
    for name, init in plan.observed_init.items():
        delta = np.asanyarray(out.observed[name])  # a memory map when streamed
        per_sample = np.ndim(init) > 0
        mean = delta.reshape(*delta.shape[:2], -1).astype(np.float64).mean(axis=2)
        per_chain = np.where(diverged, np.nan, nbeta * mean.mean(axis=1))
        alive = per_chain[~diverged]
        found[name] = Observable(
            init_loss=init,
            delta=delta,
            llc=float(alive.mean()) if alive.size else math.nan,
            llc_per_chain=per_chain,
            per_sample=per_sample,
        )
    return found


def _burnin_name(plan: Plan) -> str:
    if isinstance(plan.burnin, AutoBurnin):
        return "auto"
    return "follow" if isinstance(plan.burnin, FollowBurnin) else "fixed"


class _Run(NamedTuple):
    """The numbers of one run that the flags judge."""

    rhat: float
    ess: float
    delta: np.ndarray
    diverged: np.ndarray
    nbeta: float
    llc_mean: float
    per_chain: np.ndarray
    escape: dict
    stderr: float
    step_bias: np.ndarray | None
    max_bias: float
    calibration: object
    step_size: float | None
    localization: float


def _judge(plan: Plan, out: RunOutput, v: _Run) -> list:
    """Every flag's evidence, in the order the flags are reported."""
    config, diverged, delta, nbeta = plan.config, v.diverged, v.delta, v.nbeta
    num_draws = delta.shape[1]
    after_spread = out.spread[1] if out.spread else 0  # the spread ran at another step
    rise, where = stats.draws_rise(
        out.burnin_delta[~diverged, after_spread:].astype(np.float64) * nbeta,
        delta[~diverged] * nbeta,
    )
    checked = out.full_delta.size and config.full_loss_every_draws
    found = [
        flag.not_converged(v.rhat, v.ess, delta[~diverged].size),
        flag.not_stationary(rise, where, v.llc_mean),
        flag.still_spreading(out.distance[~diverged].astype(np.float64)),
        flag.not_equilibrated(_alive_virial(out, diverged), plan.moving_dimension),
        flag.lower_loss_escape(v.escape, "full-batch checks" if checked else "minibatch trace"),
    ]
    if diverged.any():
        rows = min(plan.eval_rows, plan.num_data)
        mu = float(
            largest_eigenvalue_magnitude(
                jax.random.fold_in(plan.rng_key, 7), plan.loss_fn, plan.params, plan.head()
            )
        )
        evidence = flag.diverged(
            out.first_nonfinite_step,
            mu=mu,
            rows=rows,
            step_size=v.step_size,
            nbeta=nbeta,
            localization=v.localization,
            blowup=config.blowup_per_param,
        )
        if num_draws < config.num_draws and diverged.all():
            evidence = flag.stopped_early(evidence, num_draws, config.num_draws)
        found.append(evidence)
    if not diverged.all():
        found.append(flag.interrupted(num_draws, config.num_draws))
    found += [
        flag.negative_estimate(v.llc_mean, v.per_chain),
        flag.above_half_dimension(v.llc_mean, plan.moving_dimension, v.stderr)
        if (~diverged).any()
        else None,
        flag.imprecise(v.llc_mean, v.stderr, int(np.sum(~diverged))),
    ]
    relative = v.step_bias
    if relative is not None and np.isfinite(relative).any():
        found.append(
            flag.step_size_bias(
                relative,
                v.max_bias,
                less_step_bias(v.llc_mean, relative),
                _calibration_prediction(v.calibration, v.localization),
            )
        )
    return [e for e in found if e is not None]


def _alive_virial(out: RunOutput, diverged: np.ndarray) -> np.ndarray:
    """``(chains, draws)`` of the virial trace in float64, the live chains with finite values.

    ``(0, 0)`` when absent. A chain whose gradient overflowed at its last recorded step
    (loss still finite) is left out of the check rather than switching it off.
    """
    virial = np.asarray(out.virial, np.float64)
    if virial.ndim != 2:
        return np.zeros((0, 0))
    return virial[~diverged & np.isfinite(virial).all(axis=1)]


def _calibration_prediction(calibration, localization) -> float | None:
    """The bias the calibration predicted at its chosen setting, or None."""
    if calibration is None:
        return None
    g = int(np.argmin(np.abs(calibration.localizations - localization)))
    chosen = calibration.recommended["step_size"]
    s = int(np.argmin(np.abs(calibration.step_sizes - chosen)))
    return float(calibration.predicted_bias[g, s])
