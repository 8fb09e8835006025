"""Is w* a point where the LLC means something? Hessian probe + gradient + sampling result.

The LLC is defined at a local minimum. In the quadratic picture (slt-reference.md 4.1)
the localized tempered posterior has precision ``p_i = nbeta mu_i + gamma`` along each
Hessian eigendirection: it exists only if every ``p_i > 0`` (confinement,
``gamma > nbeta |mu_min|``), and then

    E[lambda_hat] = sum_i [ 0.5 nbeta mu_i / p_i - (nbeta g_i)^2 (gamma + 0.5 nbeta mu_i) / p_i^2 ]

with ``g`` the gradient at w*. :func:`diagnose` estimates each piece with
Hessian-vector products: the extremes and the density from :func:`hessian_spectrum`,
the gradient term by Lanczos quadrature started at ``g``.
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc import _chunks
from llc import _validation as check
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.flags import Evidence
from llc.hessian import HessianSpectrum, full_data_flat_matvec, hessian_spectrum
from llc.lanczos import lanczos
from llc.result import LLCResult
from llc.settings import default_nbeta

__all__ = ["Diagnosis", "diagnose"]


class Diagnosis(NamedTuple):
    """What :func:`diagnose` returns.

    Attributes:
        flags: short names of the problems found (empty: w* looks like a minimum).
        evidence: for each flag, its :class:`llc.Evidence` (the numbers behind it).
        verdict: one line for the user.
        remedy: what to do, with numbers ("" when nothing is needed).
        spectrum: the Hessian probe.
        grad_norm: ``||grad L_n(w*)||``.
        gradient_bias: predicted shift of E[lambda_hat] from the gradient (<= 0), or NaN
            when the posterior is not confined.
        lambda_quadratic: the quadratic-model E[lambda_hat] without the gradient term,
            ``0.5 tr(nbeta H (nbeta H + gamma)^-1)`` (NaN when not confined).
        min_localization: the smallest localization that confines every direction
            (``nbeta * |mu_min|``, 0 if there is no negative curvature).
        negative_directions: estimated number of eigenvalues below ``-tolerance``.
        tolerance: eigenvalues with ``|mu| <= tolerance`` are treated as zero.
        nbeta: the nbeta assumed.
        localization: the localization assumed.
        num_matvecs: Hessian-vector products spent.
        cost_in_sgld_steps: the probe's cost in SGLD steps (a Hessian-vector product
            on n samples ~ 2 n / batch steps).
    """

    flags: tuple
    evidence: dict
    verdict: str
    remedy: str
    spectrum: HessianSpectrum
    grad_norm: float
    gradient_bias: float
    lambda_quadratic: float
    min_localization: float
    negative_directions: int
    tolerance: float
    nbeta: float
    localization: float
    num_matvecs: int
    cost_in_sgld_steps: float


@partial(jax.jit, static_argnames=("loss_fn", "num_matvecs", "chunk"))
def _gradient_quadrature(rng_key, loss_fn, params, data, num_matvecs, chunk):
    """Full-data gradient g, and Ritz nodes/weights of H from the start vector g."""
    _, _, matvec = full_data_flat_matvec(loss_fn, params, data, chunk)
    g = _chunks.mean(lambda b: ravel_pytree(jax.grad(loss_fn)(params, b))[0], data, chunk)
    norm = jnp.linalg.norm(g)
    start = jnp.where(norm > 0, g, jnp.ones_like(g))
    tri = lanczos(rng_key, matvec, start, num_matvecs)
    theta, vecs = jnp.linalg.eigh(tri.matrix())
    return norm, theta, vecs[0] ** 2


def diagnose(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    nbeta: float | None = None,
    localization: float = 1.0,
    result: LLCResult | None = None,
    k: int = 5,
    num_matvecs: int = 50,
    num_probes: int = 4,
    eval_batch_size: int = 8192,
) -> Diagnosis:
    """Check that the LLC at ``params`` is meaningful, and say why not and what to do.

    Args:
        rng_key: a JAX PRNG key.
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: w*.
        data: the data (the full-data loss L_n is probed).
        nbeta: as for :func:`llc.estimate_llc` (default n / log n, or the result's).
        localization: gamma (default 1, or the result's).
        result: an :class:`llc.LLCResult` at the same point, whose flags are merged in.
        k: extreme eigenvalues to compute.
        num_matvecs: Lanczos steps per probe.
        num_probes: probes for the density (the first also gives the extremes).
        eval_batch_size: rows per Hessian-vector product chunk.

    Returns:
        A :class:`Diagnosis`.

    Examples:
        A saddle whose negative direction the localizer cannot hold:

        >>> import jax, jax.numpy as jnp
        >>> mu = jnp.array([1.0, 1.0, -0.01])
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(mu * w**2)
        >>> report = diagnose(jax.random.key(0), loss_fn, jnp.zeros(3), jnp.zeros((1000, 1)))
        >>> report.flags
        ('negative_curvature', 'unconfined')
        >>> round(report.min_localization, 3)
        1.448
    """
    n = check.check_data(data)
    d = check.check_params(params)
    if result is not None:
        nbeta = result.nbeta if nbeta is None else nbeta
        localization = result.localization
    nbeta = check.check_real(
        "nbeta", default_nbeta(n) if nbeta is None else nbeta, allow_zero=False
    )
    gamma = check.check_real("localization", localization, allow_zero=True)
    chunk = min(check.check_count("eval_batch_size", eval_batch_size, minimum=1), n)
    m = min(check.check_count("num_matvecs", num_matvecs, minimum=2), d)
    spec_key, grad_key = jax.random.split(rng_key)
    spec = hessian_spectrum(
        spec_key,
        loss_fn,
        params,
        data,
        k=k,
        num_matvecs=m,
        num_probes=num_probes,
        eigenvectors=True,
        eval_batch_size=chunk,
    )
    params = jax.tree.map(jnp.asarray, params)
    g_norm, g_nodes, g_weights = jax.tree.map(
        np.asarray, _gradient_quadrature(grad_key, loss_fn, params, data, m, chunk)
    )
    g_norm = float(g_norm)

    mu_min, mu_max = spec.min_eigenvalue, spec.max_eigenvalue
    tol = spec.zero_tolerance
    negative = mu_min < -tol
    min_gamma = nbeta * abs(mu_min) if negative else 0.0
    confined = gamma > min_gamma
    neg_count = int(round(spec.negative_fraction() * d)) if negative else 0
    neg_count = max(neg_count, int(np.sum(spec.smallest < -tol))) if negative else 0

    if confined:
        nodes, w = spec.nodes, spec.weights
        lam_quad = 0.5 * d * float(np.mean(np.sum(w * nbeta * nodes / (nbeta * nodes + gamma), 1)))
        p = nbeta * g_nodes + gamma
        shape = (gamma + 0.5 * nbeta * g_nodes) / p**2
        grad_bias = -((nbeta * g_norm) ** 2) * float(np.sum(g_weights * shape))
    else:
        lam_quad = grad_bias = math.nan

    flags, evidence = [], {}
    if negative:
        flags.append("negative_curvature")
        evidence["negative_curvature"] = Evidence(
            "negative_curvature",
            f"smallest Hessian eigenvalue {mu_min:.4g}; about {neg_count} below -{tol:.2g}",
            {"mu_min": mu_min, "mu_max": mu_max, "count": neg_count, "tolerance": tol},
            f"Ritz residual {spec.smallest_residuals[0]:.2g}; largest eigenvalue {mu_max:.4g}: "
            "w* is a saddle, not a minimum.",
        )
    if negative and not confined:
        flags.append("unconfined")
        evidence["unconfined"] = Evidence(
            "unconfined",
            f"localization {gamma:g} <= nbeta |mu_min| = {min_gamma:.4g}",
            {"localization": gamma, "min_localization": min_gamma, "nbeta": nbeta},
            f"nbeta * |mu_min| = {nbeta:.4g} * {abs(mu_min):.4g}: the localized posterior "
            "does not exist along the negative direction; chains slide to lower loss and the "
            "estimate is meaningless.",
        )
    scale = max(lam_quad, 0.5) if confined else 0.5
    if confined and -grad_bias > 0.1 * scale:
        flags.append("large_gradient")
        evidence["large_gradient"] = Evidence(
            "large_gradient",
            f"||grad L_n(w*)|| = {g_norm:.4g} shifts E[lambda_hat] by {grad_bias:.4g}",
            {"grad_norm": g_norm, "gradient_bias": grad_bias, "lambda_quadratic": lam_quad},
            f"w* is not a critical point. The gradient shifts E[lambda_hat] by {grad_bias:.4g} "
            f"(quadratic model), against {lam_quad:.4g} from the curvature alone.",
        )
    elif not confined and g_norm > 0 and nbeta * g_norm > math.sqrt(max(gamma, 1e-12)):
        flags.append("large_gradient")
        evidence["large_gradient"] = Evidence(
            "large_gradient",
            f"||grad L_n(w*)|| = {g_norm:.4g}: w* is not a critical point",
            {"grad_norm": g_norm},
        )
    if result is not None:
        for flag in result.flags:
            if flag not in evidence:
                flags.append(flag)
                evidence[flag] = result.evidence[flag]

    verdict, remedy = _verdict(flags, mu_min, neg_count, min_gamma, gamma, g_norm, lam_quad)
    batch = (result.batch_size if result is not None else None) or n
    cost = (spec.num_matvecs + m) * 2.0 * n / batch
    return Diagnosis(
        flags=tuple(flags),
        evidence=evidence,
        verdict=verdict,
        remedy=remedy,
        spectrum=spec,
        grad_norm=g_norm,
        gradient_bias=grad_bias,
        lambda_quadratic=lam_quad,
        min_localization=min_gamma,
        negative_directions=neg_count,
        tolerance=tol,
        nbeta=nbeta,
        localization=gamma,
        num_matvecs=spec.num_matvecs + m,
        cost_in_sgld_steps=cost,
    )


def _verdict(flags, mu_min, neg_count, min_gamma, gamma, g_norm, lam_quad):
    if "unconfined" in flags:
        return (
            f"w* is a saddle (about {neg_count} negative directions, mu_min = {mu_min:.3g}) and "
            f"localization {gamma:g} does not confine the sampler: the LLC estimate is not "
            "meaningful.",
            f"Raise localization above {min_gamma:.4g} (e.g. {2 * min_gamma:.4g}; this lowers "
            "the estimate in every direction, so compare only at equal localization); or "
            "hold only the negative directions: estimate_llc(..., held_directions="
            f"(report.spectrum.smallest_eigenvectors[:{max(neg_count, 1)}], strengths)) with "
            f"strengths above nbeta |mu_i| - localization (e.g. {2 * min_gamma:.4g}), which "
            "gives the LLC of the other directions beside the saddle's index; or refine w* "
            "to a nearby minimum (llc.refine_to_minimum) and estimate there.",
        )
    if "negative_curvature" in flags:
        return (
            f"w* is a saddle (about {neg_count} negative directions, mu_min = {mu_min:.3g}), "
            f"held by localization {gamma:g} > {min_gamma:.4g}: the estimate includes "
            "negative contributions from those directions.",
            "Report it with the saddle's index, or refine w* to a nearby minimum.",
        )
    if "large_gradient" in flags:
        return (
            f"w* is not a critical point (||grad|| = {g_norm:.3g}): chains drift to lower "
            "loss and the estimate is biased low.",
            "Train further (or refine w* to a nearby minimum) before estimating the LLC.",
        )
    if flags:
        return "The sampling result is flagged: " + ", ".join(
            flags
        ) + ".", "See the evidence of each flag."
    return (
        "w* looks like a local minimum: no negative curvature, gradient negligible"
        + (f"; quadratic-model LLC {lam_quad:.4g}." if math.isfinite(lam_quad) else "."),
        "",
    )
