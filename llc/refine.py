"""Move w* off a saddle to a nearby minimum, so that the LLC is defined there."""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from llc import _validation as check
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.curvature import resolve_smallest
from llc.hessian import checked_point
from llc.loop import full_loss
from llc.saddle_probe import probe_lower_loss
from llc.settings import default_nbeta

__all__ = ["RefineResult", "refine_to_minimum"]


class RefineResult(NamedTuple):
    """What :func:`refine_to_minimum` returns.

    Attributes:
        params: the refined point (same pytree structure as the input).
        reached_minimum: True when the last probe found neither resolved negative
            curvature nor lower loss with short chains (the tests of
            :func:`llc.diagnose`); False when ``max_saddle_steps`` ran out first.
        distance: ``||w_refined - w*||``.
        loss_before: ``L_n(w*)``.
        loss_after: ``L_n`` at the refined point.
        grad_norm: the full-data gradient norm at the refined point.
        min_eigenvalue_before: the smallest Hessian eigenvalue at w*.
        min_eigenvalue_after: the smallest Hessian eigenvalue at the refined point.
        saddle_steps: how many times the point was pushed off a saddle.
        higher_order_steps: how many of those pushes went to lower loss found by short
            chains (no negative curvature: a higher-order saddle).
        descent_steps: optimizer steps taken.
        note: what the move means for the estimate, and whether a minimum was reached.
    """

    params: ArrayTree
    reached_minimum: bool
    distance: float
    loss_before: float
    loss_after: float
    grad_norm: float
    min_eigenvalue_before: float
    min_eigenvalue_after: float
    saddle_steps: int
    higher_order_steps: int
    descent_steps: int
    note: str


_full_loss = jax.jit(full_loss, static_argnames=("loss_fn", "chunk"))


@partial(jax.jit, static_argnames=("loss_fn", "optimizer", "num_steps", "chunk"))
def _descend(params, data, loss_fn, optimizer, num_steps, chunk):
    """``num_steps`` optimizer steps on the full-data loss."""

    def step(carry, _):
        p, state = carry
        grads = jax.grad(full_loss, argnums=1)(loss_fn, p, data, chunk)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, num_steps)
    return params


def refine_to_minimum(
    rng_key: PRNGKey,
    loss_fn: LossFn,
    params: ArrayTree,
    data: Batch,
    *,
    nbeta: float | None = None,
    localization: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 2000,
    step_off: float | None = None,
    max_saddle_steps: int = 5,
    num_matvecs: int = 40,
    max_matvecs: int = 320,
    probe_steps: int = 200,
    eval_batch_size: int = 8192,
) -> RefineResult:
    """Leave a saddle of any order and descend to a point that passes diagnose's tests.

    Repeats, at most ``max_saddle_steps`` times: probe the Hessian at the resolution
    that matters for an LLC at ``nbeta`` and ``localization`` (see :func:`llc.diagnose`);
    if it proves negative curvature, move along that direction (the sign that lowers the
    loss) by ``step_off``; if not, run short localized chains, and if they find lower
    loss (a higher-order saddle: zero gradient, no negative curvature) move to the lowest
    point they found; if neither, stop: a minimum by those tests. After each move, run
    ``num_steps`` steps of ``optimizer`` on the full-data loss. The LLC at the refined
    point describes a different point than w*: compare estimates only with that in mind.

    Args:
        rng_key: a JAX PRNG key (for the Hessian probes and the short chains).
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
        params: the starting point w*.
        data: the data (the full-data loss is minimised).
        nbeta: the nbeta of the LLC to be estimated (default n / log n): it sets the
            resolution of the curvature test and the short chains' temperature.
        localization: likewise, its gamma.
        optimizer: an optax optimizer (default ``optax.adam(1e-3)``).
        num_steps: optimizer steps after each push.
        step_off: length of a push along negative curvature (default
            ``sqrt(2 * 1e-3 / |mu_min|)``, which lowers a quadratic saddle's loss by 1e-3).
        max_saddle_steps: pushes at most.
        num_matvecs: Lanczos steps of each probe's first run (doubled until decided).
        max_matvecs: the longest Lanczos run.
        probe_steps: steps of each short chain (0: curvature only).
        eval_batch_size: rows per chunk of the full-data loss.

    Returns:
        A :class:`RefineResult`; ``reached_minimum`` says whether the last point passed.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> loss_fn = lambda w, b: 0.5 * (w[0] ** 2 - w[1] ** 2) + 0.25 * w[1] ** 4
        >>> out = refine_to_minimum(jax.random.key(0), loss_fn, jnp.zeros(2),
        ...                         jnp.zeros((1, 1)), optimizer=__import__("optax").sgd(0.1))
        >>> round(out.loss_after, 4), round(out.distance, 3), out.saddle_steps, out.reached_minimum
        (-0.25, 1.0, 1, True)
    """
    params, n, d, chunk, loss_before, _ = checked_point(
        rng_key, loss_fn, params, data, eval_batch_size
    )
    data = jax.tree.map(jnp.asarray, data)
    num_steps = check.check_count("num_steps", num_steps, minimum=0)
    nbeta = check.check_real(
        "nbeta", default_nbeta(max(n, 2)) if nbeta is None else nbeta, allow_zero=False
    )
    gamma = check.check_real("localization", localization, allow_zero=True)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    start, unravel = ravel_pytree(params)

    def loss(point):
        return float(_full_loss(loss_fn=loss_fn, params=point, data=data, chunk=chunk))

    def probe(point, round_):
        """The next push from ``point``: ``(new point or None, spectrum, higher order)``."""
        key = jax.random.fold_in(rng_key, round_)
        spec, _, _, cert, *_ = resolve_smallest(
            key,
            loss_fn,
            point,
            data,
            nbeta=nbeta,
            localization=gamma,
            k=1,
            num_matvecs=min(num_matvecs, d),
            max_matvecs=max_matvecs,
            num_probes=1,
            chunk=chunk,
        )
        if cert is not None:
            mu = abs(cert.rayleigh_quotient)
            length = step_off if step_off is not None else math.sqrt(2e-3 / mu)
            v, w = ravel_pytree(cert.direction)[0], ravel_pytree(point)[0]
            return min([unravel(w + length * v), unravel(w - length * v)], key=loss), spec, False
        if not probe_steps:
            return None, spec, False
        eps = 0.1 / (nbeta * max(spec.max_eigenvalue, 0.0) + max(gamma, 1e-12))
        lower = probe_lower_loss(
            jax.random.fold_in(key, 1),
            loss_fn,
            point,
            data,
            init_loss=loss(point),
            nbeta=nbeta,
            localization=gamma,
            step_size=eps,
            num_steps=probe_steps,
            batch_size=min(n, 1024),
            chunk=chunk,
        )
        return (lower.point if lower.found else None), spec, True

    current, pushes, higher, steps = params, 0, 0, 0
    nxt, spec, beyond = probe(current, 0)
    mu_before = spec.min_eigenvalue
    while nxt is not None and pushes < max_saddle_steps:
        pushes += 1
        higher += beyond
        current = _descend(nxt, data, loss_fn, optimizer, num_steps, chunk)
        steps += num_steps
        nxt, spec, beyond = probe(current, pushes)
    if pushes == 0 and num_steps:
        current = _descend(current, data, loss_fn, optimizer, num_steps, chunk)
        steps += num_steps
        nxt, spec, beyond = probe(current, 1)
    reached = nxt is None
    distance = float(jnp.linalg.norm(ravel_pytree(current)[0] - start))
    loss_after = loss(current)
    status = (
        "it passes diagnose's tests (no resolved negative curvature"
        + (", no lower loss for short chains)" if probe_steps else ")")
        if reached
        else f"it is NOT a minimum: max_saddle_steps={max_saddle_steps} ran out at another "
        + ("higher-order saddle" if beyond else "saddle")
        + f" (mu_min {spec.min_eigenvalue:.3g}); raise max_saddle_steps or num_steps"
    )
    return RefineResult(
        params=current,
        reached_minimum=reached,
        distance=distance,
        loss_before=loss_before,
        loss_after=loss_after,
        grad_norm=float(checked_point(rng_key, loss_fn, current, data, chunk)[5]),
        min_eigenvalue_before=float(mu_before),
        min_eigenvalue_after=float(spec.min_eigenvalue),
        saddle_steps=pushes,
        higher_order_steps=higher,
        descent_steps=steps,
        note=(
            f"Moved {distance:.4g} from w* (loss {loss_before:.6g} -> {loss_after:.6g}); "
            f"{status}. An LLC estimated here describes this nearby point, not the original w*."
        ),
    )
