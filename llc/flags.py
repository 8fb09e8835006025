"""The flags: one small function per flag, each returning its :class:`Evidence` or None.

A flag says what makes an estimate suspect. Each function here takes the numbers it
judges (no sampling, no device work) and returns the evidence: the flag's name, a
one-line message with the decisive numbers, the values behind it, and the explanation
with the remedy. :func:`warn` prints one line per flag; ``result.evidence[flag]`` holds
the whole :class:`Evidence`, and the docs page "Reading a result" explains each flag.
"""

import dataclasses
import math
import warnings

import numpy as np

from llc.trace_stats import RHAT_LIMIT, RISE_REL, RISE_T, rise, rising, virial_ratio

__all__ = [
    "Evidence",
    "above_half_dimension",
    "diverged",
    "imprecise",
    "interrupted",
    "lower_loss_escape",
    "negative_estimate",
    "not_converged",
    "not_equilibrated",
    "not_stationary",
    "step_size_bias",
    "still_spreading",
    "warn",
]

SPREAD_REL = 0.05  # still_spreading: the distance must grow by this share of its level
VIRIAL_REL = 0.10  # not_equilibrated: E[(w - w*) . grad U] off d by this share of d ...
VIRIAL_T = 3.0  # ... and by this many standard errors
IMPRECISE_REL = 0.05  # imprecise: a standard error above this share of |llc_mean|

MAX_LINE = 200  # characters of one flag's line in a warning


@dataclasses.dataclass(frozen=True)
class Evidence:
    """Why a flag was raised.

    ``str(evidence)`` is the message followed by the explanation; ``text in evidence``
    searches it.

    Attributes:
        flag: the flag's name.
        message: one line with the decisive numbers.
        values: the numbers behind it (floats, ints, lists), by name.
        explanation: what it means for the estimate, and the remedy.

    Examples:
        >>> e = not_converged(1.2, 85.0, 4000)
        >>> e.message
        'R-hat 1.200 > 1.05 (bulk ESS 85 of 4000 draws): the chains disagree'
        >>> "more burn-in" in e
        True
    """

    flag: str
    message: str
    values: dict
    explanation: str = ""

    def __str__(self) -> str:
        return f"{self.message}. {self.explanation}".strip()

    def __contains__(self, text: str) -> bool:
        return text in str(self)

    def line(self) -> str:
        """``[flag] message``, cut to :data:`MAX_LINE` characters."""
        text = f"[{self.flag}] {self.message}"
        return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def warn(evidence: list[Evidence], what: str = "LLC estimate", stacklevel: int = 3) -> None:
    """One ``RuntimeWarning`` with one line per flag; the details are in the evidence."""
    if not evidence:
        return
    lines = "\n".join(e.line() for e in evidence)
    warnings.warn(
        f"{what} flagged (details: result.evidence[flag]):\n{lines}",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def _listing(values, fmt: str = ".3g", most: int = 8) -> str:
    shown = ", ".join(format(float(v), fmt) for v in list(values)[:most])
    return shown + (", ..." if len(values) > most else "")


def not_converged(rhat: float, ess: float, num_draws: int) -> Evidence | None:
    """R-hat of the loss traces above 1.05: the chains disagree."""
    if not rhat > RHAT_LIMIT:
        return None
    return Evidence(
        "not_converged",
        f"R-hat {rhat:.3f} > {RHAT_LIMIT} (bulk ESS {ess:.0f} of {num_draws} draws): "
        "the chains disagree",
        {"rhat": rhat, "ess": ess, "num_draws": num_draws},
        "They have not reached the same distribution. Run longer (more burn-in), or "
        "check the step size.",
    )


def not_stationary(rise, where: str, llc_mean: float) -> Evidence | None:
    """The estimate still rising into the draws (3 standard errors and 2% of it)."""
    if not rising(rise, llc_mean):
        return None
    amount, stderr = rise
    share = amount / abs(llc_mean)
    return Evidence(
        "not_stationary",
        f"still rising: +{amount:.4g} ({share:.1%} of llc_mean, "
        f"{amount / max(stderr, 1e-300):.1f} s.e.) {where}",
        {"rise": amount, "stderr": stderr, "share": share, "where": where},
        f"The estimate was still rising ({where}, by more than {RISE_T:g} standard errors "
        f"and {RISE_REL:.0%} of it). The chains are still spreading from w* (typically along "
        "flat, degenerate directions), so llc_mean is a transient and most likely an "
        "underestimate, even when R-hat is fine (all chains can drift alike). Run longer: "
        "more burn-in steps (num_burnin_steps='auto'), or a larger step size if the "
        "step-size bias allows (llc.calibrate).",
    )


def still_spreading(distance: np.ndarray) -> Evidence | None:
    """The chains' distance from w* still growing through the draws (first to last quarter).

    ``distance``: ``(chains, draws)`` ``||w_t - w*||`` of the chains that did not
    diverge. The growth must exceed 3 standard errors across chains and 5% of the last
    quarter's level. The distance is a smoother witness of equilibration than the loss:
    along flat, degenerate directions the chains creep outward for a long time, and
    llc_mean rises with them.
    """
    quarter = distance.shape[1] // 4
    if quarter < 4 or distance.shape[0] < 2:
        return None
    grow = rise(distance[:, :quarter], distance[:, -quarter:])
    level = float(np.mean(distance[:, -quarter:]))
    if grow is None or not (grow[0] > RISE_T * grow[1] and grow[0] > SPREAD_REL * level):
        return None
    share = grow[0] / max(level - grow[0], 1e-300)
    return Evidence(
        "still_spreading",
        f"||w - w*|| grew {share:.0%} from the first to the last quarter of the draws "
        f"({level - grow[0]:.3g} -> {level:.3g}, {grow[0] / max(grow[1], 1e-300):.1f} s.e.)",
        {"growth": grow[0], "stderr": grow[1], "level": level, "share": share},
        "The chains are still moving away from w* during the draws (along flat, degenerate "
        "directions the localized posterior is wide and the chains reach it slowly), so "
        "they have not equilibrated and llc_mean may still be rising; growth along "
        "directions that carry little loss can leave it nearly unchanged (see the docs' "
        "reading-a-result page). Run more burn-in (num_burnin_steps='auto' or larger), or a "
        "preconditioned sampler (sampler='rmsprop_sgld'), and compare.",
    )


def not_equilibrated(virial: np.ndarray, dimension: int) -> Evidence | None:
    """The chains' ``E[(w - w*) . grad U] / d`` off 1: they do not sample the target.

    ``virial``: ``(chains, draws)`` of ``(w_t - w*) . grad U(w_t)`` (the drift's gradient,
    minibatch and localizer) of the chains that did not diverge; ``dimension``: the
    weights that move. The identity (:func:`llc.trace_stats.virial_ratio`) holds for the
    localized posterior itself, so it tests the draws against the target, not against
    each other: chains that all lag alike (R-hat fine, no trend left) still fail it.
    Flagged when the ratio is off 1 by more than ``VIRIAL_REL`` and ``VIRIAL_T``
    standard errors across chains. Below 1: the chains have not spread out to the
    posterior's width (on flat, degenerate directions only the localizer holds them, and
    they take tens of thousands of steps to get there). Above 1: they are hotter than the
    target (a step too large for the stiff directions, or minibatch noise).
    """
    if virial.ndim != 2 or virial.shape[1] < 4 or not np.all(np.isfinite(virial)):
        return None
    _, ratio, stderr = virial_ratio(virial, dimension)
    off = ratio - 1.0
    if not (abs(off) > VIRIAL_REL and abs(off) > VIRIAL_T * stderr):
        return None
    if off < 0:
        what = "the chains have not spread out to the localized posterior"
        remedy = (
            "llc_mean may then still move, even with R-hat fine and no trend left: it was "
            "low at minimal points of deep linear networks and on a tanh MLP while their "
            "chains spread, and directions that carry no loss spread without moving it; the "
            "step-size bias can push it the other way. Run more "
            "burn-in (a larger num_burnin_steps; 'auto' does not wait for this check), and "
            "compare; directions held "
            "only by the localizer relax in about 1 / (step_size * localization) steps, so "
            "a larger localization equilibrates sooner (it measures a more local LLC)."
        )
    else:
        what = "the chains are hotter than the localized posterior"
        remedy = (
            "The step is too large for the stiff directions (or the minibatch noise too "
            "strong): llc_mean is most likely an overestimate. Lower step_size (llc.calibrate), "
            "or raise batch_size."
        )
    return Evidence(
        "not_equilibrated",
        f"E[(w - w*) . grad U] = {ratio:.3f} d ± {stderr:.2g} (d = {dimension}; 1 at "
        f"equilibrium): {what}",
        {"ratio": ratio, "stderr": stderr, "dimension": dimension},
        "At stationarity of the localized posterior exp(-U), U = nbeta L_n + gamma/2 "
        "|w - w*|^2, the mean of (w - w*) . grad U is exactly the number of weights that move "
        f"(integration by parts), whatever the loss; the draws are off it by {off:+.1%}. " + remedy,
    )


def lower_loss_escape(escape: dict, source: str) -> Evidence | None:
    """Chains that reached loss below ``L_n(w*)`` by more than a unit of temperature."""
    bad = np.flatnonzero(escape["escaped"])
    if not bad.size:
        return None
    drops = escape["min_loss_drop"][bad]
    return Evidence(
        "lower_loss_escape",
        f"chains {bad.tolist()} reached loss below L_n(w*): nbeta (L - L*) down to "
        f"{float(np.min(drops)):.3g}",
        {
            "chains": bad.tolist(),
            "min_loss_drop": drops.tolist(),
            "escaped_at_step": escape["escaped_at_step"][bad].tolist(),
            "share_below_init": escape["share_below_init"][bad].tolist(),
            "source": source,
        },
        f"nbeta (L - L*) per chain: {_listing(drops)}; first at steps "
        f"{escape['escaped_at_step'][bad].tolist()}; share of {source} below L_n(w*): "
        f"{_listing(escape['share_below_init'][bad], '.2f')}. At a local minimum this never "
        "happens: w* is a saddle or not a critical point, or the localizer does not hold "
        "the chains. Run llc.diagnose for the curvature, the smallest confining "
        "localization and the remedy.",
    )


def diverged(
    first_bad: np.ndarray, *, mu: float, rows: int, step_size, nbeta, localization, blowup
) -> Evidence | None:
    """Chains that blew up, with the stability product at w* and a safe step size.

    ``mu`` is the largest Hessian eigenvalue magnitude at w* (power iteration on
    ``rows`` samples); ``blowup`` the divergence threshold per parameter.
    """
    bad = np.flatnonzero(first_bad >= 0)
    if not bad.size:
        return None
    precision = nbeta * mu + localization
    product = step_size * precision
    unstable = product >= 4
    safe = 4 / precision if unstable else min(0.2 / precision, step_size / 10)
    values = {
        "chains": bad.tolist(),
        "steps": first_bad[bad].tolist(),
        "mu_max": mu,
        "stability_product": product,
        "safe_step_size": safe,
    }
    chains = str(bad.tolist()) if bad.size <= 8 else f"{bad.size} chains"
    head = (
        f"chains {chains} of {len(first_bad)} blew up (non-finite loss or blow-up); "
        f"step_size * (nbeta mu_max + gamma) = {product:.3g}"
    )
    if unstable:
        message = f"{head} >= 4: Use step_size < {safe:.3g}"
        remedy = (
            " >= 4: the step size is too large for the curvature and SGLD is unstable. "
            f"Use step_size < {safe:.3g}; below {0.2 / precision:.3g} the discretisation bias "
            "stays at a few percent."
        )
    else:
        message = f"{head} < 4 (stable at w*): lower step_size (e.g. {safe:.3g})"
        remedy = (
            " < 4, stable at w* itself: the chains moved into steeper regions or minibatch "
            f"gradient noise kicked them out. Lower step_size (e.g. {safe:.3g}) or raise "
            "localization or batch_size."
        )
    explanation = (
        f"Blow-up: a non-finite loss, or nbeta * (L - L*) > {blowup:g} d. "
        f"Chains {bad.tolist()} blew up at steps {first_bad[bad].tolist()} and are left out "
        f"of llc_mean. At w* the largest Hessian eigenvalue magnitude is {mu:.4g} (power "
        f"iteration on {rows} samples), so step_size * (nbeta * mu_max + localization) = "
        f"{product:.3g}" + remedy
    )
    return Evidence("diverged", message, values, explanation)


def stopped_early(evidence: Evidence, num_draws: int, planned: int) -> Evidence:
    """``diverged``'s evidence when every chain diverged and the run stopped early."""
    return dataclasses.replace(
        evidence,
        message=f"{evidence.message}; all diverged: stopped after {num_draws} of {planned} draws",
        values={**evidence.values, "num_draws": num_draws, "planned": planned},
    )


def interrupted(num_draws: int, planned: int) -> Evidence | None:
    """A run stopped (Ctrl-C between chunks) before all its draws."""
    if num_draws >= planned:
        return None
    return Evidence(
        "interrupted",
        f"interrupted after {num_draws} of {planned} draws (chunk_draws)",
        {"num_draws": num_draws, "planned": planned},
        "The estimate uses the draws completed.",
    )


def negative_estimate(llc_mean: float, per_chain: np.ndarray) -> Evidence | None:
    """Chains whose estimate is negative: they found loss below ``L_n(w*)``."""
    negative = np.flatnonzero(np.nan_to_num(per_chain, nan=0.0) < 0)
    if not negative.size:
        return None
    return Evidence(
        "negative_estimate",
        f"llc_mean = {llc_mean:.4g}; chains {negative.tolist()} negative "
        f"({_listing(per_chain[negative])})",
        {"llc_mean": llc_mean, "chains": negative.tolist()},
        "A negative LLC means the chains found loss below L_n(w*): w* is not a local "
        "minimum (a saddle, or not a critical point), or the localizer does not confine "
        "them. Check the gradient and the Hessian's smallest eigenvalue at w* "
        "(llc.diagnose), raise localization, or refine w* to a nearby minimum.",
    )


def imprecise(llc_mean: float, stderr: float, num_chains: int) -> Evidence | None:
    """A standard error above 5% of ``|llc_mean|``: the run cannot resolve 10%.

    Two standard errors then exceed a tenth of the estimate, so an error of 10% is
    within the run's own noise: the estimate is not wrong, it is not known that well.

    Examples:
        >>> imprecise(0.2, 0.025, 4).message
        'llc_stderr 0.025 is 12.5% of |llc_mean| 0.2: known to +/- 25% (2 s.e.)'
        >>> imprecise(14.0, 0.2, 4) is None
        True
    """
    if not (math.isfinite(llc_mean) and math.isfinite(stderr)):
        return None
    if not stderr > IMPRECISE_REL * abs(llc_mean):
        return None
    share = stderr / abs(llc_mean) if llc_mean else math.inf
    more = (share / IMPRECISE_REL) ** 2 if share < 1e6 else math.inf
    return Evidence(
        "imprecise",
        f"llc_stderr {stderr:.3g} is {share:.1%} of |llc_mean| {abs(llc_mean):.4g}: "
        f"known to +/- {2 * share:.0%} (2 s.e.)",
        {"llc_mean": llc_mean, "stderr": stderr, "share": share, "num_chains": num_chains},
        f"The spread of the {num_chains} chains' estimates leaves llc_mean uncertain by more "
        f"than {2 * IMPRECISE_REL:.0%} at two standard errors. About {more:.1f}x the chains "
        "(or longer chains, when each chain's mean is noisy) bring the standard error to "
        f"{IMPRECISE_REL:.0%}. With 4 chains the standard error is itself uncertain by "
        "about 40%.",
    )


def above_half_dimension(llc_mean: float, num_params: int, stderr: float) -> Evidence | None:
    """An estimate above d/2 by more than two standard errors: no minimum has that."""
    if not llc_mean - num_params / 2 > 2 * stderr:
        return None
    excess = llc_mean - num_params / 2
    return Evidence(
        "above_half_dimension",
        f"llc_mean = {llc_mean:.4g} exceeds d/2 = {num_params / 2:g} by {excess:.3g} "
        f"(> 2 s.e. = {2 * stderr:.3g})",
        {"llc_mean": llc_mean, "half_dimension": num_params / 2, "stderr": stderr},
        "No local minimum has an LLC above d/2. The step size is probably too large "
        "(discretisation bias) or the chains are not localized; lower step_size or raise "
        "localization.",
    )


def step_size_bias(
    relative: np.ndarray, max_bias: float, corrected: float, at_calibration: float | None
) -> Evidence | None:
    """The predicted first-order step-size bias where the chains ended, above the cap.

    ``relative`` is per chain and relative to ``|llc_mean|``; ``corrected`` the estimate
    less it; ``at_calibration`` the prediction where the calibration's short run ended.
    """
    if relative is None or not np.isfinite(relative).any():
        return None
    end = float(np.nanmean(relative))
    if not end > max_bias:
        return None
    where = (
        ""
        if at_calibration is None or math.isnan(at_calibration)
        else f" (the calibration predicted {at_calibration:.1%} where its short run ended)"
    )
    return Evidence(
        "step_size_bias",
        f"predicted step-size bias {end:.1%} > {max_bias:.1%}; "
        f"llc_step_corrected = {corrected:.4g}",
        {
            "predicted_bias": end,
            "per_chain": relative.tolist(),
            "max_bias": max_bias,
            "llc_step_corrected": corrected,
            "at_calibration": at_calibration,
        },
        f"The first-order step-size bias predicted where the chains ended is {end:.1%} of "
        f"the estimate (per chain: {_listing(relative, '.1%')}), above {max_bias:.1%}{where}, "
        "so llc_mean is biased upward by about that much; llc_step_corrected removes it "
        "to first order. Halve step_size and double the steps, or compare a run at half "
        "the step.",
    )
