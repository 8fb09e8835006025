"""The remedy of :func:`llc.diagnose`, checked by short chains before it is offered."""

import jax


def found(lower, null):
    """The larger of the two lower-loss findings, as ``(loss_drop, distance)``, or None."""
    hits = [(x.loss_drop, x.distance) for x in (lower, null) if x is not None and x.found]
    return min(hits) if hits else None


def verified_localization(rng_key, chains, gamma, min_gamma, lower, tries: int = 4):
    """The smallest tried localization under which the short chains find no lower loss.

    Starts at twice the quadratic threshold (or, beyond second order, where the
    localizer's pull ``gamma r^2 / 2`` at the distance of the lower point matches its
    drop), and multiplies by 4 until the chains neither escape nor diverge and their mean
    ``nbeta (L - L*)`` is not negative: the quadratic threshold is only a lower bound away
    from w*. (A criterion of -1/2 on the mean passed localizations under which a longer
    run at a higher-order saddle dipped below ``L_n(w*) - 1/nbeta``.)
    """
    start = 2.0 * min_gamma
    if lower is not None and lower[1] > 0:
        start = max(start, 4.0 * gamma, 4.0 * abs(lower[0]) / lower[1] ** 2)
    tried, value = [], max(start, 2.0 * gamma)
    for i in range(tries):
        out = chains(jax.random.fold_in(rng_key, i), value)
        tried.append(
            {
                "localization": value,
                "found": out.found,
                "loss_drop": out.loss_drop,
                "diverged": out.diverged,
                "mean_excess": out.mean_excess,
                "cost": out.cost_in_sgld_steps,
            }
        )
        if not out.found and not out.diverged and out.mean_excess >= 0.0:
            return {"localization": float(value)}, tried
        value *= 4.0
    return {}, tried
