"""Probes of a point beyond a fixed-budget Hessian: certificates, resolution, lower loss.

* :func:`resolve_smallest` runs Lanczos adaptively until the smallest Hessian
  eigenvalue is decided at the resolution that matters for the LLC: a direction
  matters when ``nbeta |mu|`` is comparable to the localization ``gamma``
  (its share of the estimate is ``0.5 nbeta mu / (nbeta mu + gamma)``), so the
  resolution is ``RESOLUTION * gamma / nbeta``, not a fraction of ``mu_max``. A Ritz
  vector with a negative Rayleigh quotient *proves* negative curvature whatever its
  residual, and is kept as a certificate.
* :func:`probe_lower_loss` looks for lower loss at the sampler's own scale with a few
  short localized SGLD chains and full-data checks, which finds what curvature cannot
  see: the higher-order saddles of deep networks (zero gradient, positive
  semi-definite Hessian, lower loss by moving several layers together).
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from llc._batching import gather, sample_indices
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.hessian import HessianSpectrum, full_data_flat_matvec, hessian_spectrum
from llc.loop import full_loss
from llc.sgld import build_kernel, init
from llc.trace_stats import ESCAPE_DROP

__all__ = [
    "RESOLUTION",
    "Certificate",
    "LowerLoss",
    "NullSearch",
    "probe_lower_loss",
    "search_null_directions",
    "resolution",
    "resolve_smallest",
]

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
        rayleigh_quotient: ``v^T H v`` recomputed with one Hessian-vector product.
        ritz_value: the Lanczos estimate it came from.
        residual: the Ritz residual ``||H v - theta v||`` (large is fine: a negative
            Rayleigh quotient is a proof whatever the residual).
        direction: ``v`` as a parameter pytree.
    """

    rayleigh_quotient: float
    ritz_value: float
    residual: float
    direction: ArrayTree


@partial(jax.jit, static_argnames=("loss_fn", "chunk"))
def _rayleigh(loss_fn, params, data, v, chunk):
    _, _, matvec = full_data_flat_matvec(loss_fn, params, data, chunk)
    return jnp.vdot(v, matvec(v)) / jnp.vdot(v, v)


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
) -> tuple[HessianSpectrum, float, bool, Certificate | None, int]:
    """Lanczos, doubling its length until the smallest eigenvalue is resolved.

    Resolved: a smallest Ritz value whose residual is within the resolution (or a Krylov
    space of dimension d). A certificate found on the way is kept (the most negative
    Rayleigh quotient) and the doubling goes on while the budget lasts, so that
    ``nbeta |mu_min|``, the confining threshold, is not taken from an unconverged value.
    Decided: resolved, or certified negative.

    Returns:
        ``(spectrum, resolution, decided, certificate, matvecs spent)``.
    """
    d = ravel_pytree(params)[0].size
    m, spent, best = min(num_matvecs, d), 0, None
    while True:
        spec = hessian_spectrum(
            jax.random.fold_in(rng_key, m),
            loss_fn,
            params,
            data,
            k=k,
            num_matvecs=m,
            num_probes=num_probes,
            eigenvectors=True,
            eval_batch_size=chunk,
        )
        spent += spec.num_matvecs
        res = resolution(nbeta, localization, spec.max_eigenvalue)
        cert = _certificate(loss_fn, params, data, spec, chunk, res)
        spent += cert is not None
        if cert is not None and (best is None or cert.rayleigh_quotient < best.rayleigh_quotient):
            best = cert
        resolved = spec.smallest_residuals[0] <= res or m >= d
        if resolved or 2 * m > max_matvecs:
            return spec, res, best is not None or bool(resolved), best, spent
        m = min(2 * m, d)


def _certificate(loss_fn, params, data, spec, chunk, res) -> Certificate | None:
    """The smallest Ritz pair as a certificate, if its Rayleigh quotient is below -res."""
    if spec.min_eigenvalue >= -res:
        return None
    v = ravel_pytree(spec.smallest_eigenvectors[0])[0]
    rq = float(_rayleigh(loss_fn, params, data, v, chunk))
    if not rq < -res:
        return None
    return Certificate(
        rayleigh_quotient=rq,
        ritz_value=float(spec.min_eigenvalue),
        residual=float(spec.smallest_residuals[0]),
        direction=spec.smallest_eigenvectors[0],
    )


class LowerLoss(NamedTuple):
    """What :func:`probe_lower_loss` found.

    Attributes:
        found: a full-data loss below ``L_n(w*)`` by more than ``ESCAPE_DROP / nbeta``
            (the escape criterion of :func:`llc.estimate_llc`).
        loss_drop: ``nbeta * (min L_n - L_n(w*))`` over the checks (negative: lower loss).
        mean_excess: the mean of ``nbeta (L_n - L_n(w*))`` over the checks (the short
            chains' raw estimate; negative where lower loss dominates).
        distance: ``||w - w*||`` at the lowest point.
        direction: the unit vector from w* to the lowest point (a parameter pytree).
        point: the lowest point found.
        diverged: chains whose loss became non-finite (the chains are not held: at a
            saddle of any order, or a step too large for the curvature they met).
        num_chains: chains run.
        num_steps: steps per chain.
        step_size: the step of the last run.
        batch_size: the minibatch used (None: full batch).
        cost_in_sgld_steps: chain-steps plus the full-data checks, in minibatch steps,
            over every run.
        source: ``"probe"`` (these short chains) or ``"run"`` (the chains of the
            :func:`llc.estimate_llc` result passed to :func:`llc.diagnose`).
    """

    found: bool
    loss_drop: float
    mean_excess: float
    distance: float
    direction: ArrayTree
    point: ArrayTree
    diverged: int
    num_chains: int
    num_steps: int
    step_size: float
    batch_size: int | None
    cost_in_sgld_steps: float
    source: str = "probe"


@partial(
    jax.jit, static_argnames=("loss_fn", "num_chains", "num_steps", "num_checks", "batch", "chunk")
)
def _probe_chains(
    rng_key, loss_fn, params, data, hyper, num_chains, num_steps, num_checks, batch, chunk
):
    """Short localized SGLD chains; the full-data loss and position at each check.

    The last entry of each chain is the point of its lowest minibatch loss, so a chain
    that diverges after finding lower loss still reports it.
    """
    step_size, nbeta, localization = hyper
    kernel = build_kernel()
    n = jax.tree.leaves(data)[0].shape[0]
    every = num_steps // num_checks

    def one_step(carry, key):
        state, best, best_at = carry
        batch_key, noise_key = jax.random.split(key)
        if batch is None:
            rows = data
        else:
            rows = gather(data, sample_indices(batch_key, n, batch))
        new, info = kernel(
            noise_key,
            state,
            loss_fn,
            rows,
            step_size=step_size,
            nbeta=nbeta,
            localization=localization,
            anchor=params,
        )
        better = jnp.isfinite(info.loss) & (info.loss < best)
        best_at = jax.tree.map(lambda b, w: jnp.where(better, w, b), best_at, state.position)
        return (new, jnp.where(better, info.loss, best), best_at), None

    def segment(carry, key):
        carry, _ = jax.lax.scan(one_step, carry, jax.random.split(key, every))
        value = full_loss(loss_fn, carry[0].position, data, chunk)
        return carry, (value, carry[0].position)

    def chain(key):
        start = (init(params), jnp.asarray(jnp.inf, hyper[0].dtype), params)
        (_, _, best_at), (values, points) = jax.lax.scan(
            segment, start, jax.random.split(key, num_checks)
        )
        # the point of lowest minibatch loss: the last finite look before a divergence
        best_value = full_loss(loss_fn, best_at, data, chunk)
        values = jnp.concatenate([values, best_value[None]])
        points = jax.tree.map(lambda p, b: jnp.concatenate([p, b[None]]), points, best_at)
        return values, points

    return jax.vmap(chain)(jax.random.split(rng_key, num_chains))


def probe_lower_loss(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    init_loss: float,
    nbeta: float,
    localization: float,
    step_size: float,
    num_chains: int = 2,
    num_steps: int = 200,
    num_checks: int = 8,
    batch_size: int | None = None,
    chunk: int = 8192,
    max_retries: int = 3,
) -> LowerLoss:
    """Short localized chains from w*: is there lower full-data loss at the sampler's scale?

    At a local minimum the chains never reach a full-data loss below ``L_n(w*)`` by more
    than a unit of temperature (``ESCAPE_DROP / nbeta``); at a saddle of any order
    whose descent the localizer does not stop, they do, typically within a few hundred
    steps. The lowest point found is returned with its direction and distance. When
    chains diverge without finding lower loss, the step was too large for the curvature
    they met: the probe reruns with a step ten times smaller, ``max_retries`` times.

    Examples:
        A cubic saddle at the origin (zero gradient and Hessian, lower loss nearby):

        >>> import jax, jax.numpy as jnp
        >>> loss_fn = lambda w, b: w[0] * w[1] * w[2]
        >>> out = probe_lower_loss(jax.random.key(0), loss_fn, jnp.zeros(3), jnp.zeros((10, 1)),
        ...                        init_loss=0.0, nbeta=1e3, localization=1.0, step_size=1e-3)
        >>> out.found, out.loss_drop < -1
        (True, True)
    """
    n = jax.tree.leaves(data)[0].shape[0]
    num_checks = max(1, min(num_checks, num_steps))
    batch = None if batch_size is None or batch_size >= n else int(batch_size)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    cost = 0.0
    for attempt in range(max_retries + 1):
        hyper = tuple(jnp.asarray(v, dtype) for v in (step_size, nbeta, localization))
        values, points = _probe_chains(
            jax.random.fold_in(rng_key, attempt),
            loss_fn,
            params,
            data,
            hyper,
            num_chains,
            num_steps,
            num_checks,
            batch,
            min(chunk, n),
        )
        cost += num_chains * (num_steps + (num_checks + 1) * n / (batch or n))
        out = _lowest(values, points, params, init_loss, nbeta)
        if out[0] or not out[-1]:  # lower loss found, or no chain diverged
            break
        step_size = step_size / 10  # too large for the curvature the chains met
    found, drop, mean, distance, direction, point, diverged = out
    return LowerLoss(
        found=found,
        loss_drop=drop,
        mean_excess=mean,
        distance=distance,
        direction=direction,
        point=point,
        diverged=diverged,
        num_chains=num_chains,
        num_steps=num_checks * (num_steps // num_checks),
        step_size=float(step_size),
        batch_size=batch,
        cost_in_sgld_steps=cost,
    )


def _lowest(values, points, params, init_loss, nbeta):
    """``(found, drop, mean drop, distance, direction, point, diverged)`` of one probe run."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    diverged = int(np.sum(~finite[:, :-1].all(axis=1)))
    drops = np.where(finite, nbeta * (values - init_loss), np.inf)
    c, t = np.unravel_index(int(np.argmin(drops)), drops.shape)
    point = jax.tree.map(lambda x: x[c, t], points)
    flat, unravel = ravel_pytree(params)
    delta = ravel_pytree(point)[0] - flat
    distance = float(jnp.linalg.norm(delta))
    direction = unravel(delta / distance if distance > 0 else delta)
    drop = float(drops[c, t]) if np.isfinite(drops[c, t]) else math.nan
    checks = drops[:, :-1][np.isfinite(drops[:, :-1])]
    mean = float(np.mean(checks)) if checks.size else math.nan
    return bool(drop < -ESCAPE_DROP), drop, mean, distance, direction, point, diverged


class NullSearch(NamedTuple):
    """What :func:`search_null_directions` found.

    Attributes:
        found: some point ``w* + t v`` has ``nbeta (L - L*) + gamma t^2 / 2 <
            -ESCAPE_DROP``: lower loss that the localizer does not outweigh.
        loss_drop: ``nbeta (L - L*)`` at the best such point (or the lowest tried).
        distance: ``|t|`` there.
        direction: the unit direction ``v`` (a parameter pytree), signed.
        num_directions: directions searched.
        num_evaluations: full-data losses evaluated.
    """

    found: bool
    loss_drop: float
    distance: float
    direction: ArrayTree
    num_directions: int
    num_evaluations: int


@partial(jax.jit, static_argnames=("loss_fn", "chunk"))
def _losses_along(loss_fn, params, data, directions, lengths, chunk):
    flat, unravel = ravel_pytree(params)

    def at(v, t):
        return full_loss(loss_fn, unravel(flat + t * v), data, chunk)

    return jax.vmap(lambda v: jax.lax.map(lambda t: at(v, t), lengths))(directions)


def search_null_directions(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    spec: HessianSpectrum,
    *,
    init_loss: float,
    nbeta: float,
    localization: float,
    tolerance: float,
    num_directions: int = 8,
    num_lengths: int = 12,
    chunk: int = 8192,
) -> NullSearch:
    """Lower loss along the Hessian's near-null directions, beyond second order.

    Where the gradient and the curvature vanish, the loss changes at third or fourth
    order, often only when several layers move together: along a mix of near-null
    eigenvectors (the ``k`` smallest Ritz vectors with ``|mu| <= tolerance``, and random
    combinations of them) the loss is evaluated at lengths up to five localizer widths
    ``1 / sqrt(gamma)``, both signs. A point counts when its loss drop outweighs the
    localizer, ``nbeta (L - L*) + gamma t^2 / 2 < -ESCAPE_DROP``: the localized
    posterior puts more weight there than at w*.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from llc.hessian import hessian_spectrum
        >>> loss_fn = lambda w, b: w[0] * w[1] * w[2] + jnp.sum(w**4)
        >>> w0, data = jnp.zeros(3), jnp.zeros((10, 1))
        >>> spec = hessian_spectrum(jax.random.key(0), loss_fn, w0, data, k=3, num_matvecs=3,
        ...                         eigenvectors=True)
        >>> out = search_null_directions(jax.random.key(1), loss_fn, w0, data, spec,
        ...                              init_loss=0.0, nbeta=1e4, localization=1.0,
        ...                              tolerance=1e-3)
        >>> out.found
        True
    """
    null = [
        ravel_pytree(v)[0]
        for v, mu in zip(spec.smallest_eigenvectors, spec.smallest, strict=True)
        if abs(mu) <= tolerance
    ]
    flat, unravel = ravel_pytree(params)
    if not null:
        return NullSearch(False, math.nan, math.nan, unravel(jnp.zeros_like(flat)), 0, 0)
    basis = jnp.stack(null)
    mix = jax.random.normal(rng_key, (max(num_directions - len(null), 0), len(null)), flat.dtype)
    mixed = mix @ basis
    mixed = mixed / jnp.linalg.norm(mixed, axis=1, keepdims=True)
    directions = jnp.concatenate([basis, mixed])[:num_directions]
    width = 1.0 / math.sqrt(max(localization, 1e-12))
    half = jnp.geomspace(0.01 * width, 5.0 * width, num_lengths).astype(flat.dtype)
    lengths = jnp.concatenate([-half[::-1], half])
    values = np.asarray(
        _losses_along(loss_fn, params, data, directions, lengths, chunk), np.float64
    )
    drops = np.where(np.isfinite(values), nbeta * (values - init_loss), np.inf)
    t = np.asarray(lengths, np.float64)
    score = drops + 0.5 * localization * t[None, :] ** 2
    i, j = np.unravel_index(int(np.argmin(score)), score.shape)
    direction = unravel(directions[i] * (1.0 if t[j] >= 0 else -1.0))
    return NullSearch(
        found=bool(score[i, j] < -ESCAPE_DROP),
        loss_drop=float(drops[i, j]),
        distance=float(abs(t[j])),
        direction=direction,
        num_directions=int(directions.shape[0]),
        num_evaluations=int(values.size),
    )
