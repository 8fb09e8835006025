"""The words of :func:`llc.diagnose`: evidence per flag, the verdict and the remedy."""

import math

from llc.flags import Evidence

_DRIVERS = {
    "negative_curvature": "_negative",
    "unconfined": "_unconfined",
    "undecided": "_undecided",
    "higher_order_saddle": "_higher_order",
    "large_gradient": "_large_gradient",
}


def evidence_for(flag: str, f: dict) -> Evidence:
    """The :class:`llc.Evidence` of one of diagnose's own flags, from its facts."""
    return globals()[_DRIVERS[flag]](f)


def _cert_text(f) -> str:
    c = f["cert"]
    if c is None:
        return "no certificate"
    return (
        f"certificate: a direction with Rayleigh quotient {c.rayleigh_quotient:.4g} "
        f"(Ritz value {c.ritz_value:.4g}, residual {c.residual:.2g}); a negative Rayleigh "
        "quotient proves negative curvature whatever the residual"
    )


def _negative(f) -> Evidence:
    confined = math.isfinite(f["neg_part"])
    cost = (
        f"; its quadratic-model share of the estimate {f['neg_part']:.3g} +/- {f['neg_se']:.2g}"
        if confined
        else ""
    )
    return Evidence(
        "negative_curvature",
        f"smallest Hessian eigenvalue {f['mu_min']:.4g}; about {f['count']} below "
        f"-{f['tolerance']:.2g}{cost}",
        {
            "mu_min": f["mu_min"],
            "mu_max": f["mu_max"],
            "count": f["count"],
            "tolerance": f["tolerance"],
            "negative_contribution": f["neg_part"],
            "negative_contribution_stderr": f["neg_se"],
        },
        f"{_cert_text(f)}. The resolution {f['tolerance']:.2g} = 0.1 gamma / nbeta: an "
        "eigenvalue below it in size moves the estimate by less than 0.05. w* is a saddle.",
    )


def _unconfined(f) -> Evidence:
    return Evidence(
        "unconfined",
        f"localization {f['gamma']:g} <= nbeta |mu_min| = {f['min_gamma']:.4g}",
        {"localization": f["gamma"], "min_localization": f["min_gamma"], "nbeta": f["nbeta"]},
        f"nbeta * |mu_min| = {f['nbeta']:.4g} * {abs(f['mu_min']):.4g}: the localized "
        "posterior does not exist along the negative direction; chains slide to lower loss "
        f"and the estimate is meaningless. {_tried_text(f)}",
    )


def _undecided(f) -> Evidence:
    spec = f["spec"]
    return Evidence(
        "undecided",
        f"smallest Ritz value {spec.min_eigenvalue:.4g} with residual "
        f"{spec.smallest_residuals[0]:.2g} > resolution {f['tolerance']:.2g} after "
        f"{f['max_matvecs']} matvecs",
        {
            "ritz_value": spec.min_eigenvalue,
            "residual": float(spec.smallest_residuals[0]),
            "tolerance": f["tolerance"],
            "num_matvecs": f["spent"],
        },
        "Lanczos did not resolve the smallest eigenvalue at the scale that matters within "
        f"max_matvecs = {f['max_matvecs']} (spent {f['spent']} in all): negative curvature "
        f"of size about {f['tolerance']:.2g} or more may be hidden in the bulk. Deciding "
        f"needs a longer run: diagnose(..., max_matvecs={4 * f['max_matvecs']}).",
    )


def _higher_order(f) -> Evidence:
    drop, distance = f["found"]
    lo, null = f["lower"], f["null"]
    how = []
    if lo is not None:
        where = (
            "(the run keeps no positions: no direction)"
            if lo.direction is None
            else "(direction: diagnosis.lower_loss.direction)"
        )
        how.append(
            f"{_chains_text(lo)} (step {lo.step_size:.3g}): lowest nbeta (L - L*) "
            f"{lo.loss_drop:.3g} {'within' if lo.direction is None else 'at'} distance "
            f"{lo.distance:.3g} {where}"
        )
    if null is not None and null.num_directions:
        how.append(
            f"a line search along {null.num_directions} near-null Hessian directions: "
            f"nbeta (L - L*) {null.loss_drop:.3g} at distance {null.distance:.3g} "
            "(direction: diagnosis.null_search.direction)"
        )
    return Evidence(
        "higher_order_saddle",
        f"no negative curvature, but lower loss: nbeta (L - L*) = {drop:.3g} at distance "
        f"{distance:.3g}",
        {"loss_drop": drop, "distance": distance},
        "; ".join(how) + ". The gradient is ~0 and the Hessian has no negative eigenvalue "
        "above the resolution, so the descent is beyond second order (several layers moving "
        f"together, as at the plateaus of deep networks). {_tried_text(f)}",
    )


def _large_gradient(f) -> Evidence:
    if math.isfinite(f["grad_bias"]):
        return Evidence(
            "large_gradient",
            f"||grad L_n(w*)|| = {f['g_norm']:.4g} shifts E[lambda_hat] by {f['grad_bias']:.4g}",
            {
                "grad_norm": f["g_norm"],
                "gradient_bias": f["grad_bias"],
                "lambda_quadratic": f["lam_quad"],
            },
            f"w* is not a critical point. The gradient shifts E[lambda_hat] by "
            f"{f['grad_bias']:.4g} (quadratic model), against {f['lam_quad']:.4g} from the "
            "curvature alone.",
        )
    return Evidence(
        "large_gradient",
        f"||grad L_n(w*)|| = {f['g_norm']:.4g}: w* is not a critical point",
        {"grad_norm": f["g_norm"]},
    )


def _tried_text(f) -> str:
    if not f["tried"]:
        return ""
    steps = "; ".join(
        f"gamma {t['localization']:.4g}: "
        + ("diverged" if t["diverged"] else f"lowest nbeta (L - L*) {t['loss_drop']:.3g}")
        for t in f["tried"]
    )
    return f"Localizations tried with short chains: {steps}."


def _threshold(f) -> str:
    """The confinement threshold nbeta |mu_min|, where a certified direction sets one."""
    if not f["negative"]:
        return ""
    return f" (threshold nbeta |mu_min| = {f['min_gamma']:.4g})"


def _projection(f) -> str:
    """The projection remedy, offered only when it covers every negative direction."""
    if f["cert"] is None or f["count"] != 1:
        return ""
    return (
        "or sample the complement of the one negative direction: estimate_llc(..., "
        "held_directions=([report.certificate.direction], [float('inf')])); "
    )


def verdict_and_remedy(flags, f, probed: bool) -> tuple[str, str]:
    """One line for the user, and the remedy with numbers ("" when none is needed)."""
    kwargs = f["kwargs"]
    relabel = (
        "or estimate the LLC of the function w* computes, defined at any point: "
        "loss_fn, data = llc.relabel(predict_fn, params, inputs)"
    )
    if kwargs:
        apply = (
            f"estimate_llc(..., **report.estimate_kwargs) sets localization "
            f"{kwargs['localization']:.4g}{_threshold(f)}, verified with short chains (this "
            "lowers the "
            "estimate in every direction: compare only at equal localization); "
        )
    elif f["tried"]:
        apply = (
            f"no localization up to {f['tried'][-1]['localization']:.4g}{_threshold(f)} kept "
            "short chains above L_n(w*), so report.estimate_kwargs is empty; "
        )
    else:
        apply = ""
    saddle = f"about {f['count']} negative directions, mu_min = {f['mu_min']:.3g}"
    if "unconfined" in flags:
        return (
            f"w* is a saddle ({saddle}) and localization {f['gamma']:g} <= "
            f"{f['min_gamma']:.4g} does not confine the sampler: the estimate is not "
            "meaningful.",
            f"{apply}{_projection(f)}refine w* to a nearby minimum (llc.refine_to_minimum); "
            f"{relabel}.",
        )
    if "higher_order_saddle" in flags:
        drop, distance = f["found"]
        return (
            "w* is a higher-order saddle: gradient ~0, no negative curvature, but lower loss "
            f"(nbeta (L - L*) = {drop:.3g}) at distance {distance:.3g}.",
            f"{apply}refine w* (llc.refine_to_minimum leaves along the lower-loss direction); "
            f"{relabel}.",
        )
    if "undecided" in flags:
        return (
            "Undecided: the smallest Hessian eigenvalue was not resolved at the scale that "
            f"matters ({f['tolerance']:.2g}) within the Lanczos budget.",
            f"Run diagnose with max_matvecs={4 * f['max_matvecs']}.",
        )
    if "negative_curvature" in flags:
        held = (
            f"held by localization {f['gamma']:g} > {f['min_gamma']:.4g}"
            if f["negative"]
            else f"each below the resolution, held by localization {f['gamma']:g}, but many"
        )
        return (
            f"w* is a saddle ({saddle}) {held}; its negative directions contribute "
            f"{f['neg_part']:.3g} to the expected estimate (quadratic model).",
            f"Report the estimate with that contribution and the saddle's index; {relabel}; "
            "or refine w* to a nearby minimum.",
        )
    if "large_gradient" in flags:
        return (
            f"w* is not a critical point (||grad|| = {f['g_norm']:.3g}): chains drift to "
            "lower loss and the estimate is biased low.",
            f"Train further (or refine w* to a nearby minimum); {relabel}.",
        )
    tested = _tested(f, probed)
    if flags:
        return (
            f"The sampling result is flagged: {', '.join(flags)}. {tested}",
            "See the evidence of each flag.",
        )
    return f"No test found w* to be other than a local minimum: {tested}", ""


def _chains_text(lo) -> str:
    """Whose chains probed for lower loss: diagnose's own, or the run's."""
    who = "the run's" if lo.source == "run" else "short localized"
    return f"{who} {lo.num_chains} chains of {lo.num_steps} steps"


def _tested(f, probed: bool) -> str:
    parts = [f"gradient {f['g_norm']:.2g}"]
    parts.append(f"smallest eigenvalue {f['mu_min']:.3g} (resolution {f['tolerance']:.2g})")
    if math.isfinite(f["neg_part"]) and f["neg_part"] < -0.05:
        parts.append(
            f"negative eigenvalues contribute {f['neg_part']:.3g} +/- {f['neg_se']:.2g} "
            "to the estimate (immaterial)"
        )
    null = f["null"]
    if null is not None and null.num_directions:
        parts.append(
            f"a line search along {null.num_directions} near-null directions found no lower "
            "loss that outweighs the localizer"
        )
    lo = f["lower"]
    if lo is not None:
        parts.append(
            f"{_chains_text(lo)} stayed above L_n(w*) - "
            f"1/nbeta (lowest nbeta (L - L*) {lo.loss_drop:.3g})"
        )
    elif not probed:
        parts.append("no lower-loss probe (probe_steps=0)")
    if math.isfinite(f["lam_quad"]):
        parts.append(f"quadratic-model LLC {f['lam_quad']:.4g}")
    return "; ".join(parts) + "."


def confined_explanation(result, confined_saddle: bool, predicted: float):
    """Evidence that a flagged result is what a confined saddle predicts, not an escape."""
    suspect = {"lower_loss_escape", "negative_estimate"} & set(result.flags)
    if not confined_saddle or not suspect or not math.isfinite(predicted):
        return None
    se = result.llc_stderr if math.isfinite(result.llc_stderr) else abs(predicted)
    if abs(result.llc_mean - predicted) > 4 * se + 0.1 * abs(predicted):
        return None
    return Evidence(
        "confined_saddle",
        f"llc_mean {result.llc_mean:.4g} matches the confined saddle's prediction "
        f"{predicted:.4g}: expected, not an escape",
        {
            "llc_mean": result.llc_mean,
            "predicted": predicted,
            "stderr": se,
            "explains": sorted(suspect),
        },
        "The localizer holds every negative direction, and the quadratic model (negative "
        "directions included) predicts this estimate within 4 standard errors: the "
        f"{', '.join(sorted(suspect))} flag reports the saddle's negative contribution, not "
        "chains leaving w*.",
    )
