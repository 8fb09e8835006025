"""Probes of a point for lower loss beyond second order.

(The curvature half, certificates and resolution, is :mod:`llc.curvature`.)

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

from llc import _validation as check
from llc._batching import gather, sample_indices
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.hessian import HessianSpectrum
from llc.loop import full_loss
from llc.sgld import build_kernel, init
from llc.trace_stats import ESCAPE_DROP

__all__ = ["LowerLoss", "NullSearch", "probe_lower_loss", "search_null_directions"]


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
        num_evaluations: losses evaluated (on the subset, and on all the data).
        full_losses: their cost in full-data losses (a subset loss counts ``rows / n``).
    """

    found: bool
    loss_drop: float
    distance: float
    direction: ArrayTree
    num_directions: int
    num_evaluations: int
    full_losses: float


@partial(jax.jit, static_argnames=("loss_fn", "chunk"))
def _losses_along(loss_fn, params, data, directions, lengths, chunk):
    flat, unravel = ravel_pytree(params)

    def at(v, t):
        return full_loss(loss_fn, unravel(flat + t * v), data, chunk)

    return jax.vmap(lambda v: jax.lax.map(lambda t: at(v, t), lengths))(directions)


@partial(jax.jit, static_argnames=("loss_fn", "chunk"))
def _losses_at(loss_fn, params, data, directions, lengths, chunk):
    """``L(w* + t_i v_i)`` for pairs ``(v_i, t_i)``."""
    flat, unravel = ravel_pytree(params)
    pairs = (directions, lengths)
    return jax.lax.map(
        lambda p: full_loss(loss_fn, unravel(flat + p[1] * p[0]), data, chunk), pairs
    )


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
    rows: int | None = None,
    num_confirm: int = 4,
) -> NullSearch:
    """Lower loss along the Hessian's near-null directions, beyond second order.

    Where the gradient and the curvature vanish, the loss changes at third or fourth
    order, often only when several layers move together: along a mix of near-null
    eigenvectors (the ``k`` smallest Ritz vectors with ``|mu| <= tolerance``, and random
    combinations of them) the loss is evaluated at lengths up to five localizer widths
    ``1 / sqrt(gamma)``, both signs. A point counts when its loss drop outweighs the
    localizer, ``nbeta (L - L*) + gamma t^2 / 2 < -ESCAPE_DROP``: the localized
    posterior puts more weight there than at w*.

    With ``rows`` below n the grid is evaluated on a random subset of that many rows
    (measured against the subset's own loss at w*), and the ``num_confirm`` best points
    are evaluated again on all the data: only a full-data drop counts as found.

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
        return NullSearch(False, math.nan, math.nan, unravel(jnp.zeros_like(flat)), 0, 0, 0.0)
    mix_key, rows_key = jax.random.split(rng_key)
    basis = jnp.stack(null)
    mix = jax.random.normal(mix_key, (max(num_directions - len(null), 0), len(null)), flat.dtype)
    mixed = mix @ basis
    mixed = mixed / jnp.linalg.norm(mixed, axis=1, keepdims=True)
    directions = jnp.concatenate([basis, mixed])[:num_directions]
    width = 1.0 / math.sqrt(max(localization, 1e-12))
    half = jnp.geomspace(0.01 * width, 5.0 * width, num_lengths).astype(flat.dtype)
    lengths = jnp.concatenate([-half[::-1], half])
    t = np.asarray(lengths, np.float64)
    n = jax.tree.leaves(data)[0].shape[0]
    rows = None if rows is None else check.check_count("rows", rows, minimum=1)
    subset = rows is not None and rows < n
    probe, base, cost = data, init_loss, 0.0
    if subset:
        probe = gather(data, jax.random.choice(rows_key, n, (rows,), replace=False))
        base, cost = float(full_loss(loss_fn, params, probe, min(chunk, rows))), rows / n
    grid = _losses_along(loss_fn, params, probe, directions, lengths, min(chunk, n))
    score = _scores(grid, base, nbeta, localization, t[None, :])
    evaluations, cost = score.size + subset, cost + score.size * (rows / n if subset else 1.0)
    if subset:  # the best points again, on all the data: only a full-data drop counts
        best = np.argsort(score, axis=None)[: min(num_confirm, score.size)]
        i, j = np.unravel_index(best, score.shape)
        full = _losses_at(loss_fn, params, data, directions[i], lengths[j], min(chunk, n))
        score = np.full(score.shape, np.inf)
        score[i, j] = _scores(full, init_loss, nbeta, localization, t[j])
        evaluations, cost = evaluations + best.size, cost + best.size
    i, j = np.unravel_index(int(np.argmin(score)), score.shape)
    direction = unravel(directions[i] * (1.0 if t[j] >= 0 else -1.0))
    return NullSearch(
        found=bool(score[i, j] < -ESCAPE_DROP),
        loss_drop=float(score[i, j] - 0.5 * localization * t[j] ** 2),
        distance=float(abs(t[j])),
        direction=direction,
        num_directions=int(directions.shape[0]),
        num_evaluations=int(evaluations),
        full_losses=float(cost),
    )


def _scores(values, base, nbeta, localization, t):
    """``nbeta (L - L*) + gamma t^2 / 2`` (inf where the loss is not finite)."""
    values = np.asarray(values, np.float64)
    drops = np.where(np.isfinite(values), nbeta * (values - base), np.inf)
    return drops + 0.5 * localization * t**2
