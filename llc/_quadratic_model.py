"""The quadratic picture's numbers for :func:`llc.diagnose.diagnose`.

In the quadratic picture (slt-reference.md 4.1) the localized tempered posterior has
precision ``p_i = nbeta mu_i + gamma`` along each Hessian eigendirection, and

    E[lambda_hat] = sum_i [ 0.5 nbeta mu_i / p_i - (nbeta g_i)^2 (gamma + 0.5 nbeta mu_i) / p_i^2 ]

Here: the first sum from the stochastic Lanczos density (:func:`quadratic_model`, with its
negative part), the gradient term by Lanczos quadrature from the start vector ``g``
(:func:`gradient_quadrature`, one step when its bound is negligible:
:func:`gradient_matvecs`), and what they say together (:func:`curvature_facts`).
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc import _chunks
from llc.hessian import full_data_flat_matvec
from llc.lanczos import lanczos

__all__ = [
    "MATERIAL",
    "curvature_facts",
    "gradient_matvecs",
    "gradient_quadrature",
    "quadratic_model",
]

MATERIAL = 0.05
"""Confined negative curvature is flagged when it moves the estimate by more than this
share of the rest (its quadratic-model contribution, ``0.5 nbeta mu / p`` summed)."""


@partial(jax.jit, static_argnames=("loss_fn", "num_matvecs", "chunk"))
def gradient_quadrature(rng_key, loss_fn, params, data, num_matvecs, chunk):
    """Full-data gradient g, and Ritz nodes/weights of H from the start vector g."""
    _, _, matvec = full_data_flat_matvec(loss_fn, params, data, chunk)
    g = _chunks.mean(lambda b: ravel_pytree(jax.grad(loss_fn)(params, b))[0], data, chunk)
    norm = jnp.linalg.norm(g)
    start = jnp.where(norm > 0, g, jnp.ones_like(g))
    tri = lanczos(rng_key, matvec, start, num_matvecs)
    theta, vecs = jnp.linalg.eigh(tri.matrix())
    return norm, theta, vecs[0] ** 2


def quadratic_model(spec, nbeta, gamma, tol, exact=False):
    """``(lambda_quadratic, negative part, its stderr)`` from the SLQ density.

    The negative part sums every negative node beyond rounding (``1e-5 mu_max``), those
    below the resolution too: many tiny negative eigenvalues can add up to a material
    share.
    """
    nodes, w, d = spec.nodes, spec.weights, spec.num_params
    share = nbeta * nodes / (nbeta * nodes + gamma)
    per_probe = 0.5 * d * np.sum(w * share, axis=1)
    floor = 1e-5 * abs(spec.max_eigenvalue)  # float32 Lanczos scatters zeros this far
    neg = 0.5 * d * np.sum(np.where(nodes < -floor, w * share, 0.0), axis=1)
    se = float(np.std(neg, ddof=1) / math.sqrt(len(neg))) if len(neg) > 1 else math.nan
    se = 0.0 if exact else se  # the full-data Ritz values are the eigenvalues
    return float(np.mean(per_probe)), float(np.mean(neg)), se


def gradient_matvecs(spec, cert, g_norm, nbeta, gamma, m) -> int:
    """Lanczos steps for the gradient term: 1 where even its bound is negligible.

    The term is ``-(nbeta ||g||)^2 sum_j w_j s(mu_j)`` with ``s(mu) = (gamma + nbeta mu /
    2) / (nbeta mu + gamma)^2``, decreasing on the confined range, so ``s`` at a lower
    bound of ``mu_min`` bounds it. Ritz values sit above the spectrum's minimum, so the
    bound takes the smallest Ritz value less its residual norm, and every probe's nodes.
    Below 0.005 (a hundredth of the smallest scale the flag compares it with) one step,
    the Rayleigh quotient of ``g``, is enough; unconfined, the term is not used; where the
    lower bound is not confined, the full quadrature runs.
    """
    mu_min = min(spec.min_eigenvalue, cert.rayleigh_quotient) if cert else spec.min_eigenvalue
    if nbeta * mu_min + gamma <= 0:
        return 1
    residual = float(spec.smallest_residuals[0]) if len(spec.smallest_residuals) else 0.0
    nodes = np.asarray(spec.nodes, np.float64)
    low = min(mu_min, spec.min_eigenvalue - abs(residual), float(np.min(nodes, initial=mu_min)))
    p = nbeta * low + gamma
    if not p > 0:
        return m
    bound = (nbeta * g_norm) ** 2 * (gamma + 0.5 * nbeta * low) / p**2
    return 1 if bound < 0.005 else m


def curvature_facts(spec, cert, tol, gradient, nbeta, gamma, subset=False) -> dict:
    """What the curvature and the gradient say: confinement, materiality, the model.

    With ``subset`` (the spectrum is a subset's), ``mu_min`` is the certificate's
    full-data Rayleigh quotient: the subset's Ritz value is no bound on the full one.
    """
    g_norm, g_nodes, g_weights = gradient
    d = spec.num_params
    mu_min = spec.min_eigenvalue
    if cert:
        mu_min = cert.rayleigh_quotient if subset else min(mu_min, cert.rayleigh_quotient)
    negative = cert is not None
    min_gamma = nbeta * abs(mu_min) if negative else 0.0
    confined = gamma > min_gamma
    lam_quad = grad_bias = neg_part = neg_se = math.nan
    if confined:
        exact = spec.nodes.shape[1] == d and not subset  # m = d on all the data
        lam_quad, neg_part, neg_se = quadratic_model(spec, nbeta, gamma, tol, exact)
        p = nbeta * g_nodes + gamma
        shape = (gamma + 0.5 * nbeta * g_nodes) / p**2
        grad_bias = -((nbeta * g_norm) ** 2) * float(np.sum(g_weights * shape))
    material = (negative and not confined) or (
        confined and abs(neg_part) > MATERIAL * max(lam_quad - neg_part, 0.5)
    )
    count = 0
    if negative:
        count = max(int(round(spec.fraction_below(-tol) * d)), int(np.sum(spec.smallest < -tol)), 1)
    elif material:  # many negative eigenvalues, each below the resolution
        count = int(round(spec.fraction_below(0.0) * d))
    scale = max(lam_quad, 0.5) if confined else 0.5
    large_gradient = (confined and -grad_bias > 0.1 * scale) or (
        not confined and nbeta * g_norm > math.sqrt(max(gamma, 1e-12))
    )
    return {
        "mu_min": mu_min,
        "negative": negative,
        "min_gamma": min_gamma,
        "confined": confined,
        "lam_quad": lam_quad,
        "grad_bias": grad_bias,
        "neg_part": neg_part,
        "neg_se": neg_se,
        "material": material,
        "count": count,
        "large_gradient": large_gradient,
    }
