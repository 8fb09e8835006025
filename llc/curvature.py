"""The smallest Hessian eigenvalue, decided at the resolution that matters for the LLC.

:func:`resolve_smallest` runs Lanczos adaptively until the smallest Hessian eigenvalue
is decided at the resolution that matters for the LLC: a direction matters when
``nbeta |mu|`` is comparable to the localization ``gamma`` (its share of the estimate is
``0.5 nbeta mu / (nbeta mu + gamma)``), so the resolution is ``RESOLUTION * gamma /
nbeta``, not a fraction of ``mu_max``. A Ritz vector with a negative Rayleigh quotient
*proves* negative curvature whatever its residual, and is kept as a certificate.

A saddle proven on a subset. With ``hvp_rows`` below n, Lanczos first runs on a fixed
random subset of that many rows (each product costs ``hvp_rows / n`` of a full-data
one), and the full-data Rayleigh quotient ``q`` of its smallest Ritz vector is computed
(one full-data product). Where ``q`` is negative with ``nbeta |q| >= gamma`` the saddle
is unconfined, proven on all the data: a Rayleigh quotient bounds the smallest
eigenvalue from above, so the localizer does not hold that direction. The subset's
negative Ritz vectors are then refined on all the data (Rayleigh-Ritz, one full-data
product each beyond the first): the smallest values, their residuals and vectors, and
the certificate are the full data's, each refined value at or above the eigenvalue of
its rank (Cauchy interlacing); the density (the count of negative directions) and the
largest eigenvalues are the subset's. Every other answer reruns on all the data, a
minimum above all: a subset can hide a full-data negative direction (its sampling noise
pushes the curvature there above zero) while agreeing with the full data along the
directions it does look at, and no check along a few directions rules that out.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc import _validation as check
from llc._batching import gather
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.hessian import HessianSpectrum, full_data_flat_matvec, hessian_spectrum

__all__ = ["RESOLUTION", "Certificate", "Resolved", "resolution", "resolve_smallest"]

RESOLUTION = 0.1
"""An eigenvalue with ``nbeta |mu| < RESOLUTION * gamma`` moves the estimate by less than
about ``RESOLUTION / 2``: below the resolution that matters."""


def resolution(nbeta: float, localization: float, mu_max: float) -> float:
    """The eigenvalue scale that matters: ``RESOLUTION * gamma / nbeta``.

    With ``gamma = 0`` every negative eigenvalue matters: then a float32-safe floor of
    ``1e-6 |mu_max|`` (and never below ``1e-12``).

    Examples:
        >>> resolution(1e4, 1.0, 1.0)
        1e-05
    """
    floor = max(1e-6 * abs(mu_max), 1e-12)
    return max(RESOLUTION * localization / nbeta, floor) if localization > 0 else floor


class Certificate(NamedTuple):
    """A proof of negative curvature: a unit direction with a negative Rayleigh quotient.

    Attributes:
        rayleigh_quotient: ``v^T H v`` of the full-data Hessian, recomputed with one
            Hessian-vector product.
        ritz_value: the Lanczos estimate it came from.
        residual: the Ritz residual ``||H v - theta v||`` (large is fine: a negative
            Rayleigh quotient is a proof whatever the residual).
        direction: ``v`` as a parameter pytree.
    """

    rayleigh_quotient: float
    ritz_value: float
    residual: float
    direction: ArrayTree


class Resolved(NamedTuple):
    """What :func:`resolve_smallest` returns.

    Attributes:
        spectrum: the last (longest) Lanczos run's :class:`llc.hessian.HessianSpectrum`.
        resolution: the eigenvalue scale that matters (:func:`resolution`).
        decided: the smallest eigenvalue was resolved, or negative curvature certified.
        certificate: the most negative full-data Rayleigh quotient found, or None.
        num_matvecs: Hessian-vector products spent, on the subset and on all the data.
        full_matvecs: their cost in full-data products (a subset product counts
            ``rows / n``).
        rows: the rows the spectrum was computed on (n: all the data).
    """

    spectrum: HessianSpectrum
    resolution: float
    decided: bool
    certificate: Certificate | None
    num_matvecs: int
    full_matvecs: float
    rows: int


@partial(jax.jit, static_argnames=("loss_fn", "chunk"))
def _products(loss_fn, params, data, vs, chunk):
    """``H v`` of the full-data Hessian for each row ``v`` of ``vs``."""
    _, _, matvec = full_data_flat_matvec(loss_fn, params, data, chunk)
    return jax.lax.map(matvec, vs)


def _rayleigh(loss_fn, params, data, v, chunk) -> tuple[float, jax.Array]:
    """``(v^T H v / v^T v, H v)`` of the full-data Hessian: one product."""
    image = _products(loss_fn, params, data, v[None], chunk)[0]
    return float(jnp.vdot(v, image) / jnp.vdot(v, v)), image


def resolve_smallest(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    nbeta: float,
    localization: float,
    k: int,
    num_matvecs: int,
    max_matvecs: int,
    num_probes: int,
    chunk: int,
    hvp_rows: int | None = None,
) -> Resolved:
    """Lanczos, doubling its length until the smallest eigenvalue is resolved.

    Resolved: a smallest Ritz value whose residual is within the resolution (or a Krylov
    space of dimension d). A certificate found on the way is kept (the most negative
    Rayleigh quotient) and the doubling goes on while the budget lasts, so that
    ``nbeta |mu_min|``, the confining threshold, is not taken from an unconverged value.
    Decided: resolved, or certified negative.

    With ``hvp_rows`` below n the search starts on a random subset of that many rows and
    keeps the subset's answer only where all the data prove an unconfined saddle (see
    the module docstring); otherwise it reruns on all the data from the Lanczos length
    the subset needed.

    Examples:
        An unconfined saddle of a data-free loss, proven from a 10-row subset:

        >>> import jax, jax.numpy as jnp
        >>> mu = jnp.array([2.0, 1.0, -1.0])
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(mu * w**2)
        >>> out = resolve_smallest(jax.random.key(0), loss_fn, jnp.zeros(3), jnp.zeros((100, 1)),
        ...                        nbeta=10.0, localization=1.0, k=1, num_matvecs=3,
        ...                        max_matvecs=3, num_probes=1, chunk=100, hvp_rows=10)
        >>> out.rows, round(out.certificate.rayleigh_quotient, 4), round(out.full_matvecs, 2)
        (10, -1.0, 1.3)
    """
    n = jax.tree.leaves(data)[0].shape[0]
    hvp_rows = None if hvp_rows is None else check.check_count("hvp_rows", hvp_rows, minimum=1)
    common = (loss_fn, params, nbeta, localization, k, max_matvecs, num_probes, chunk)
    if hvp_rows is None or hvp_rows >= n:
        return _adaptive(rng_key, data, data, num_matvecs, 0, 0.0, n, *common)
    rows = jax.random.choice(jax.random.fold_in(rng_key, 0), n, (hvp_rows,), replace=False)
    sub = _adaptive(rng_key, gather(data, rows), None, num_matvecs, 0, 0.0, n, *common)
    spec, res, chunk = sub.spectrum, sub.resolution, min(chunk, n)
    v = ravel_pytree(spec.smallest_eigenvectors[0])[0]
    rq, image = _rayleigh(loss_fn, params, data, v, chunk)
    spent, cost = sub.num_matvecs + 1, sub.full_matvecs + 1.0
    if rq < -res and nbeta * abs(rq) >= localization:  # unconfined, proven on all the data
        spec, cert, extra = _refined(loss_fn, params, data, spec, res, image, chunk)
        return sub._replace(
            spectrum=spec,
            decided=True,
            certificate=cert,
            num_matvecs=spent + extra,
            full_matvecs=cost + extra,
        )
    m = min(max(num_matvecs, len(spec.nodes[0])), max_matvecs)
    return _adaptive(rng_key, data, data, m, spent, cost, n, *common)


def _refined(loss_fn, params, data, spec, res, image, chunk):
    """The subset's negative Ritz vectors, Rayleigh-Ritz on the full-data Hessian.

    The subset's smallest Ritz vectors below ``-res`` (at least the first, whose
    full-data ``image`` is given) span a space in which the full-data Hessian's Ritz
    values bound its smallest eigenvalues from above (Cauchy interlacing): they replace
    the subset's smallest values, with their full-data residuals and vectors, so that the
    spectrum and the certificate say the same.

    Returns:
        ``(spectrum, certificate, full-data products spent beyond the first)``.
    """
    flat, unravel = ravel_pytree(params)
    take = [0] + [i for i in range(1, len(spec.smallest)) if spec.smallest[i] < -res]
    basis = jnp.stack([ravel_pytree(spec.smallest_eigenvectors[i])[0] for i in take])
    images = image[None]
    if len(take) > 1:
        rest = _products(loss_fn, params, data, basis[1:], chunk)
        images = jnp.concatenate([images, rest])
    b, hb = np.asarray(basis, np.float64), np.asarray(images, np.float64)
    theta, y = np.linalg.eigh(0.5 * (b @ hb.T + hb @ b.T))
    vectors, mapped = y.T @ b, y.T @ hb
    residuals = np.linalg.norm(mapped - theta[:, None] * vectors, axis=1)
    smallest = np.concatenate([theta, spec.smallest[len(take) :]])
    resid = np.concatenate([residuals, spec.smallest_residuals[len(take) :]])
    vecs = [unravel(jnp.asarray(x, flat.dtype)) for x in vectors]
    vecs += spec.smallest_eigenvectors[len(take) :]
    order = np.argsort(smallest, kind="stable")
    ritz = float(spec.smallest[0])
    spec = spec._replace(
        min_eigenvalue=float(smallest[order[0]]),
        smallest=smallest[order],
        smallest_residuals=resid[order],
        smallest_eigenvectors=[vecs[i] for i in order],
    )
    cert = Certificate(float(theta[0]), ritz, float(residuals[0]), vecs[0])
    return spec, cert, len(take) - 1


def _adaptive(
    rng_key,
    rows_data,
    full_data,
    m,
    spent,
    cost,
    n,
    loss_fn,
    params,
    nbeta,
    gamma,
    k,
    top,
    num_probes,
    chunk,
) -> Resolved:
    """The doubling Lanczos on ``rows_data``; certificates on ``full_data``.

    A subset run (``full_data`` None) certifies nothing: the caller checks its answer on
    all the data.
    """
    rows = jax.tree.leaves(rows_data)[0].shape[0]
    d = ravel_pytree(params)[0].size
    # where the whole space costs no more products than the probes, take it: one exact run
    m, best = (d if d <= num_probes * m else min(m, d)), None
    while True:
        spec = hessian_spectrum(
            jax.random.fold_in(rng_key, m),
            loss_fn,
            params,
            rows_data,
            k=k,
            num_matvecs=m,
            num_probes=num_probes,
            eigenvectors=True,
            eval_batch_size=min(chunk, rows),
        )
        spent, cost = spent + spec.num_matvecs, cost + spec.num_matvecs * rows / n
        res = resolution(nbeta, gamma, spec.max_eigenvalue)
        if full_data is not None:
            cert = _certificate(loss_fn, params, full_data, spec, min(chunk, n), res)
            probed = spec.min_eigenvalue < -res  # one full-data product, certificate or not
            spent, cost = spent + probed, cost + probed
            if cert is not None and (
                best is None or cert.rayleigh_quotient < best.rayleigh_quotient
            ):
                best = cert
        resolved = spec.smallest_residuals[0] <= res or m >= d
        if resolved or 2 * m > top:
            return Resolved(spec, res, best is not None or bool(resolved), best, spent, cost, rows)
        m = min(2 * m, d)


def _certificate(loss_fn, params, data, spec, chunk, res) -> Certificate | None:
    """The smallest Ritz pair as a certificate, if its Rayleigh quotient is below -res."""
    if spec.min_eigenvalue >= -res:
        return None
    rq, _ = _rayleigh(loss_fn, params, data, ravel_pytree(spec.smallest_eigenvectors[0])[0], chunk)
    if not rq < -res:
        return None
    return Certificate(
        rayleigh_quotient=rq,
        ritz_value=float(spec.min_eigenvalue),
        residual=float(spec.smallest_residuals[0]),
        direction=spec.smallest_eigenvectors[0],
    )
