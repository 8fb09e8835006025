"""Choosing the step size by measurement: a grid of settings in one compiled call, and a rule.

:func:`calibrate` runs every (localization, step size) pair of a grid as one vectorised
program (``vmap`` over the traced hyperparameters, the same noise and minibatches for every
setting) and tabulates, per setting, the estimate, its spread, the MALA acceptance, R-hat,
escapes, divergences and the *predicted step-size bias*. It recommends a setting by a
stated rule:

1. A setting is *healthy* when its runs show no divergence, no lower-loss escape, no
   negative per-chain estimate and no estimate above d/2; when it is stable with margin,
   ``max_i s_i (nbeta H_ii + gamma) <= 2`` (and ``step_size (nbeta mu_max + gamma) <= 2``
   for an unpreconditioned sampler; 4 is the stability limit), with ``s_i`` the per-
   coordinate effective Langevin step the sampler actually took (``step_size / xi`` for
   the momentum samplers, xi their friction); and when its predicted bias is at most
   ``max_bias`` (2.5%) of its estimate in the calibration run (while the chains are still
   equilibrating that estimate is low, so the relative prediction errs on the safe
   side); and, for the Langevin samplers, when the MALA acceptance of its steps is at
   least ``min_acceptance`` (0.5), a floor against landscapes much stiffer away from w*
   than the prediction saw.
2. Among the localizations with a healthy setting take the smallest (a larger gamma
   shrinks the estimate), and at it the largest healthy step size: larger steps mix
   faster along the flat directions, whose slow equilibration is what dominates the
   sampler's error on deep linear networks (issue 3's note).

The predicted bias is the first-order bias of the Langevin discretisation on the
quadratic part of the loss plus that of the minibatch gradient noise (slt-reference 3.1:
a direction of curvature k has stationary variance ``(1 + eps nbeta^2 c / 4) /
(k (1 - eps k / 4))`` with ``c`` the gradient-noise variance), summed over coordinates:
``sum_i s_i (nbeta H_ii + nbeta^2 c_i) / 8``, with ``H_ii`` Hutchinson's estimate of the
Hessian diagonal and ``c_i`` the variance of a minibatch gradient coordinate, both
measured where the setting's first surviving chain ended its calibration run, not at w*:
a noise-free fit has no gradient noise at w* itself, and a loss that is flat at w* (an MLP
trained to interpolation) can be stiff where the chains go. On a 3-parameter regression
it predicts +16% at the step where the measured bias is +18%; on a 54-parameter deep
linear network the gradient-noise term is as large as the discretisation term.

The MALA acceptance is only a floor, not the usual 0.9 target: it is computed on one
minibatch, so it cannot see the gradient-noise bias (on that regression it reads 0.98 at
+18% bias), and it falls with the dimension at a fixed step while the estimate's
relative bias does not (on a 2,470-parameter network it reads 0.80 at a step whose
predicted bias is 0.8%). The floor caught what the prediction missed on an MLP trained to
interpolation on scikit-learn's digits (notebook 4), where the calibration estimate
rose 25-fold across the grid at acceptances down to 0.12.

``estimate_llc(..., step_size="auto")`` applies this rule with the default grid, and then
keeps applying the bias cap during the burn-in, where the chains are (see
``llc.burnin.follow``): a long run can carry them into regions stiffer than the
calibration's short run saw.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from llc import loop, mesh, samplers, stacked
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.plan import Plan, make_plan
from llc.report import assemble
from llc.result import CalibrationResult
from llc.settings import Settings, signature
from llc.step_bias import MAX_STEP_BIAS, CurvatureModel, chain_prediction, curvature_model

__all__ = ["calibrate", "calibrate_plan", "default_step_sizes"]

_GRID_FACTORS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_RMSPROP_POINTS = 12
MAX_STIFFNESS = 2.0
_MAX_WIDENINGS = 3
_DEFAULTS = {"num_draws": 200, "num_burnin_steps": 200}


def default_step_sizes(
    model: CurvatureModel, *, nbeta: float, localization: float, sampler: str, options: dict
) -> np.ndarray:
    """The default grid: the curvature scale times ``0.01 .. 2`` (8 points).

    The scale is ``1 / (nbeta * mu_max + localization)``: SGLD is unstable above 4 times
    it. ``"rmsprop_sgld"`` steps ``step_size / (sqrt(v) + eps)`` per coordinate, with
    ``v`` the running mean square of the loss gradient: about ``H_ii / nbeta`` in a
    curved direction (a step of ``step_size * sqrt(nbeta / H_ii)``), and down to 0 in a
    flat one (a step of ``step_size / eps``, held only by the localizer). Its grid
    spans 12 log-spaced points from a hundredth of the smaller to twice the larger of
    the two corresponding units, ``scale * sqrt(nbeta mu_max)`` and ``eps / gamma``;
    the rule then reads the steps the sampler actually took.
    """
    if sampler == "rmsprop_sgld":
        stiff = model.scale * math.sqrt(nbeta * model.mu_max + localization)
        flat = options["eps"] / localization if localization > 0 else stiff
        low, high = 0.01 * min(stiff, flat), 2.0 * max(stiff, flat)
        return np.geomspace(low, high, _RMSPROP_POINTS)
    return np.array([model.scale * f for f in _GRID_FACTORS])


def calibrate(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    step_sizes=None,
    localizations=None,
    max_bias: float = MAX_STEP_BIAS,
    min_acceptance: float = 0.5,
    **settings,
) -> CalibrationResult:
    """Run a grid of step sizes (and localizations) in one compiled call; recommend one.

    Args:
        rng_key: a JAX PRNG key (every setting sees the same noise and minibatches).
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: w*.
        data: a pytree of arrays with a leading sample axis.
        step_sizes: the step sizes to try; default :func:`default_step_sizes`.
        localizations: the localizations gamma to try (default: the ``localization``
            setting, 1.0).
        max_bias: the largest predicted step-size bias, relative to the estimate, that
            the rule accepts.
        min_acceptance: the smallest mean MALA acceptance the rule accepts (Langevin
            samplers; the momentum samplers have none).
        **settings: any keyword of :func:`llc.estimate_llc` but ``step_size`` (each
            setting's runs use them; here ``num_draws`` and ``num_burnin_steps`` default
            to 200 and the burn-in is fixed).

    Returns:
        A :class:`CalibrationResult` (``.table()`` prints it; ``llc.plot.calibration``
        draws it).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (1000, 2))
        >>> y = x @ jnp.array([1.0, -1.0]) + jax.random.normal(jax.random.key(1), (1000,))
        >>> loss_fn = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)
        >>> w_star = jnp.linalg.lstsq(x, y)[0]
        >>> cal = calibrate(jax.random.key(2), loss_fn, w_star, (x, y), batch_size=100)
        >>> cal.llc_mean.shape
        (1, 8)
        >>> cal.recommended["step_size"] in cal.step_sizes
        True
    """
    max_bias, min_acceptance = float(max_bias), float(min_acceptance)
    if not 0 < max_bias < 1:
        msg = f"max_bias must be in (0, 1); got {max_bias}."
        raise ValueError(msg)
    if not 0 <= min_acceptance < 1:
        msg = f"min_acceptance must be in [0, 1); got {min_acceptance}."
        raise ValueError(msg)
    s = Settings.build(
        "calibrate", defaults={**_DEFAULTS, "step_size": "auto"}, refuse=_REFUSED, **settings
    )
    if not samplers.CAPABILITIES[s.sampler].step_size:
        msg = (
            f"calibrate tunes the stochastic-gradient samplers; {s.sampler!r} adapts its own step."
        )
        raise ValueError(msg)
    if s.auto_burnin:
        msg = "calibrate runs a fixed burn-in; pass num_burnin_steps as a count."
        raise ValueError(msg)
    plan = make_plan(rng_key, loss_fn, params, data, s)
    return calibrate_plan(
        plan,
        step_sizes=step_sizes,
        localizations=localizations,
        max_bias=max_bias,
        min_acceptance=min_acceptance,
    )


def _check_grid(name: str, values, allow_zero: bool) -> np.ndarray:
    arr = np.sort(np.asarray(values, np.float64).reshape(-1))
    low_ok = np.all(arr >= 0) if allow_zero else np.all(arr > 0)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or not low_ok:
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a non-empty list of finite numbers {bound}; got {values!r}."
        raise ValueError(msg)
    return np.unique(arr)


_REFUSED = (
    "step_size",
    "observables",
    "per_sample_observables",
    "per_sample_loss_fn",
    "max_per_sample_bytes",
    "per_sample_path",
)
calibrate.__signature__ = signature(calibrate, refuse=_REFUSED, defaults=_DEFAULTS)


def calibrate_plan(
    plan: Plan,
    *,
    step_sizes=None,
    localizations=None,
    max_bias: float = MAX_STEP_BIAS,
    min_acceptance: float = 0.5,
    short=False,
) -> CalibrationResult:
    """:func:`calibrate` for a validated :class:`llc.plan.Plan`.

    Without ``localizations`` the plan's own is the only one; without ``step_sizes`` the
    default grid. The run length is the plan's; with ``short`` (``step_size="auto"``)
    capped at 200 draws and 200 burn-in steps (RMSProp-SGLD: ``10 / (1 - alpha)``, so
    that its second moment has forgotten its start).
    """
    t0 = time.perf_counter()
    gammas = (
        np.array([plan.localization])
        if localizations is None
        else _check_grid("localizations", localizations, allow_zero=True)
    )
    if step_sizes is not None:
        step_sizes = _check_grid("step_sizes", step_sizes, allow_zero=False)
    config = plan.config._replace(progress_rate=0, record_scale=True)
    if short:
        draws = min(config.num_draws, 200)
        burnin = 200
        if plan.sampler == "rmsprop_sgld":  # until v forgets its start at 1: alpha^t < 5e-5
            burnin = max(burnin, round(10 / (1 - plan.options["alpha"])))
        config = config._replace(
            num_burnin_steps=min(config.num_burnin_steps, burnin),
            num_draws=draws,
            full_loss_every_draws=max(1, draws // 10) if config.full_loss_every_draws else 0,
            acceptance_every_draws=max(1, draws // 50) if config.acceptance_every_draws else 0,
        )
    plan = plan._replace(config=config, show_progress=False)
    model = curvature_model(
        jax.random.fold_in(plan.rng_key, 11),
        plan.loss_fn,
        plan.params,
        plan.data,
        nbeta=plan.nbeta,
        localization=float(gammas[0]),
        batch_size=config.batch_size,
        eval_rows=plan.eval_rows,
        copies=config.num_chains,
    )
    widen = step_sizes is None
    if widen:
        step_sizes = default_step_sizes(
            model,
            nbeta=plan.nbeta,
            localization=float(gammas[0]),
            sampler=plan.sampler,
            options=plan.options,
        )
    thresholds = (max_bias, min_acceptance)
    evaluated = _evaluate_grid(plan, config, model, gammas, step_sizes, thresholds)
    widened = 0
    # A default grid where nothing passes (typically: no curvature at w*, so its unit
    # 1 / (nbeta mu_max + gamma) says nothing about where the chains go) moves down by
    # its own span, up to three times.
    while widen and not evaluated["healthy"].any() and widened < _MAX_WIDENINGS:
        step_sizes = step_sizes * (step_sizes[0] / step_sizes[-1])
        evaluated = _evaluate_grid(plan, config, model, gammas, step_sizes, thresholds)
        widened += 1
    recommended, rule = _recommend(
        step_sizes, gammas, evaluated["healthy"], evaluated, max_bias, min_acceptance
    )
    if widened:
        rule += (
            f" (The default grid was moved down {widened} time(s): nothing passed above "
            f"{step_sizes[-1]:.3g}.)"
        )
    return CalibrationResult(
        step_sizes=step_sizes,
        localizations=gammas,
        recommended=recommended,
        rule=rule,
        max_bias=max_bias,
        min_acceptance=min_acceptance,
        curvature=model,
        wall_time=time.perf_counter() - t0,
        **evaluated,
    )


def _evaluate_grid(plan, config, model, gammas, step_sizes, thresholds) -> dict:
    """Run one grid (one compiled call) and judge every setting by the rule's checks."""
    max_bias, min_acceptance = thresholds
    dtype = jnp.result_type(*jax.tree.leaves(plan.params))
    settings = [(g, e) for g in gammas for e in step_sizes]
    hypers = [
        loop.make_hyper(e, plan.nbeta, g, plan.init_loss, dtype, 0, plan.options)
        for g, e in settings
    ]
    out = stacked.run_grid(
        plan.rng_key,
        plan.params,
        plan.data,
        stacked.stack_hypers(hypers),
        plan.direction,
        plan.held,
        plan.mask,
        loss_fn=plan.loss_fn,
        config=config,
    )
    out = mesh.to_host(out)
    shape = (len(gammas), len(step_sizes))
    results = [[None] * shape[1] for _ in range(shape[0])]
    bias = np.zeros(shape)
    stiffness = np.zeros(shape)
    preconditioned = samplers.SAMPLERS[plan.sampler].proposal_scale not in (
        None,
        samplers.SAMPLERS["sgld"].proposal_scale,
    )
    for i, (g, e) in enumerate(settings):
        at = (i // shape[1], i % shape[1])
        one = jax.tree.map(lambda x, i=i: x[i], out)
        r = assemble(plan, one, time.perf_counter(), step_size=e, localization=g, warn=False)
        results[at[0]][at[1]] = r
        finite = np.all(np.isfinite(one.scale_max), axis=1) & ~r.diverged
        steps = one.scale[finite].astype(np.float64)
        if steps.size == 0:
            bias[at] = stiffness[at] = math.inf
            continue
        # every finite chain's own end point: their mean is the prediction (one chain's
        # noise moved a whole row of the grid by a fifth, and the chosen step with it)
        per_chain, curv = chain_prediction(plan, one.final_position, one.scale, finite)
        absolute = float(np.nanmean(per_chain))
        bias[at] = absolute / max(abs(r.llc_mean), 1e-12)
        stiff = float(np.max(one.scale_max[finite] * (curv[finite] + g)))
        if not preconditioned:
            stiff = max(
                stiff, float(np.max(one.scale_max[finite])) * (plan.nbeta * model.mu_max + g)
            )
        stiffness[at] = stiff
    grid = {
        name: np.array([[fn(r) for r in row] for row in results])
        for name, fn in {
            "llc_mean": lambda r: r.llc_mean,
            "llc_std": lambda r: r.llc_std,
            "acceptance": lambda r: _nanmean(r.acceptance),
            "rhat": lambda r: r.rhat,
            "escape_share": lambda r: float(np.mean(r.escaped)),
            "num_diverged": lambda r: int(np.sum(r.diverged)),
        }.items()
    }
    healthy = np.zeros(shape, bool)
    reasons = np.full(shape, "", dtype=object)
    for g in range(shape[0]):
        for s in range(shape[1]):
            why = _unhealthy(results[g][s])
            if not why and not stiffness[g, s] <= MAX_STIFFNESS:  # NaN is not healthy
                why = f"stiffness {stiffness[g, s]:.3g} > {MAX_STIFFNESS:g}"
            if not why and not bias[g, s] <= max_bias:
                why = f"predicted bias {bias[g, s]:.1%} > {max_bias:.1%}"
            accept = grid["acceptance"][g, s]
            if not why and np.isfinite(accept) and accept < min_acceptance:
                why = f"acceptance {accept:.2f} < {min_acceptance:g}"
            reasons[g, s] = why
            healthy[g, s] = not why
    return {
        **grid,
        "predicted_bias": bias,
        "stiffness": stiffness,
        "healthy": healthy,
        "reasons": reasons.astype(str),
        "results": results,
    }


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else math.nan


def _unhealthy(result) -> str:
    """What the runs of a setting show against it, or ``""``."""
    if result.diverged.any():
        return f"{int(result.diverged.sum())} chains diverged"
    if result.escaped.any():
        return "lower-loss escape"
    if "negative_estimate" in result.flags:
        return "negative estimate"
    if "above_half_dimension" in result.flags:
        return "estimate > d/2"
    return ""


def _recommend(step_sizes, gammas, healthy, grid, max_bias, min_acceptance):
    base = (
        "healthy = no divergence, lower-loss escape, negative or above-d/2 estimate in its "
        f"runs; stiffness max_i s_i (nbeta H_ii + gamma) <= {MAX_STIFFNESS:g}; predicted "
        f"step-size bias <= {max_bias:.1%} of the estimate; MALA acceptance >= "
        f"{min_acceptance:g} (Langevin samplers). Then the smallest localization "
        "with a healthy setting and, at it, the largest healthy step size."
    )
    for g, gamma in enumerate(gammas):
        ok = np.flatnonzero(healthy[g])
        if ok.size:
            s = int(ok[-1])
            chosen = {"step_size": float(step_sizes[s]), "localization": float(gamma)}
            detail = (
                f" Chosen: step_size {step_sizes[s]:.3g} at localization {gamma:g} "
                f"(estimate {grid['llc_mean'][g, s]:.4g}, predicted bias "
                f"{grid['predicted_bias'][g, s]:.2%})."
            )
            if s + 1 < len(step_sizes):
                detail += " The next larger step size fails the checks."
            else:
                detail += " It is the largest on the grid: a larger one may also pass."
            return chosen, base + detail
    chosen = {"step_size": float(step_sizes[0]), "localization": float(gammas[-1])}
    return chosen, base + (
        " No setting passed: fell back to the smallest step size at the largest "
        "localization. Widen the grid (smaller steps, larger localization) or check w* "
        "with llc.diagnose."
    )
