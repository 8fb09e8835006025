"""Localized, tempered SGLD in the convention of Lau et al., as a blackjax-style kernel.

One step moves every parameter leaf by

    w <- w - eps/2 * (nbeta * grad L_B(w) + gamma * (w - w*)) + sqrt(eps) * xi,

with ``eps = step_size``, ``gamma = localization``, ``nbeta`` the inverse temperature
times the data-set size, ``w*`` the anchor and ``xi ~ N(0, I)``. This is blackjax's
overdamped Langevin step with ``step_size_blackjax = eps / 2`` (see
:func:`to_blackjax_step_size`); the noise is drawn exactly as blackjax draws it (one
normal vector over the raveled parameters), so the same key gives the same chain.

The kernel is pure: ``kernel(rng_key, state, loss_fn, batch, *, step_size, nbeta,
localization, anchor) -> (state, info)``. All hyperparameters are call arguments, so
they can be traced and swept without recompiling.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from llc._types import Array, ArrayTree, Batch, LossFn, PRNGKey

__all__ = [
    "SGLDState",
    "SGLDInfo",
    "SamplingAlgorithm",
    "init",
    "build_kernel",
    "sgld",
    "step_info",
    "to_blackjax_step_size",
]


class SGLDState(NamedTuple):
    """State of one SGLD chain.

    Attributes:
        position: the current parameters, a pytree shaped like the anchor.
    """

    position: ArrayTree


class SGLDInfo(NamedTuple):
    """Per-step diagnostics, computed at the position *before* the step.

    Attributes:
        loss: ``L_B(w_t)``, the minibatch loss at the pre-step position (free: it comes
            out of the same ``value_and_grad`` call as the drift).
        distance: ``||w_t - w*||``, the Euclidean distance from the anchor.
        potential_grad: ``grad U(w_t) = nbeta grad L_B(w_t) + localizer pull``, the
            drift's gradient (reused by the MALA acceptance check).
        virial: ``(w_t - w*) . grad U(w_t)``, an unbiased estimate of its full-data value:
            at stationarity its mean is the number of weights that move
            (:func:`llc.flags.not_equilibrated`).
    """

    loss: Array
    distance: Array
    potential_grad: ArrayTree
    virial: Array


def step_info(loss: Array, displacement: ArrayTree, grad_u: ArrayTree) -> SGLDInfo:
    """The :class:`SGLDInfo` of a step from ``w_t - w*`` and the drift's gradient."""
    sq = sum(jnp.sum(jnp.square(dw)) for dw in jax.tree.leaves(displacement))
    dots = jax.tree.leaves(jax.tree.map(jnp.vdot, displacement, grad_u))
    return SGLDInfo(loss, jnp.sqrt(sq), grad_u, sum(dots).astype(loss.dtype))


class SamplingAlgorithm(NamedTuple):
    """An ``init``/``step`` pair with the hyperparameters closed over."""

    init: callable
    step: callable


def init(position: ArrayTree) -> SGLDState:
    """Start a chain at ``position`` (normally the anchor w*).

    Args:
        position: a pytree of floating-point arrays.

    Returns:
        The initial :class:`SGLDState`.

    Examples:
        >>> import jax.numpy as jnp
        >>> init({"w": jnp.zeros(3)}).position["w"].shape
        (3,)
    """
    return SGLDState(position)


def _gaussian_like(rng_key: PRNGKey, tree: ArrayTree) -> ArrayTree:
    """Standard normal noise shaped like ``tree``, drawn as one vector (blackjax's way)."""
    flat, unravel = ravel_pytree(tree)
    return unravel(jax.random.normal(rng_key, flat.shape, flat.dtype))


def build_kernel():
    """Build the SGLD transition kernel.

    Returns:
        ``kernel(rng_key, state, loss_fn, batch, *, step_size, nbeta, localization,
        anchor, held=None, mask=None) -> (SGLDState, SGLDInfo)``. ``held =
        (directions, strengths)`` adds ``c_i / 2 <v_i, w - w*>^2`` to the localizer
        along k orthonormal directions (leaves with a leading axis k). ``mask`` (0/1
        leaves shaped like the parameters) moves only the weights inside it.

    Examples:
        A quadratic loss, one step from the anchor: the drift vanishes there, so the
        move is pure noise of standard deviation ``sqrt(step_size)``.

        >>> import jax, jax.numpy as jnp
        >>> kernel = build_kernel()
        >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(w**2)
        >>> w0 = jnp.zeros(2)
        >>> state, info = kernel(jax.random.key(0), init(w0), loss_fn, None,
        ...                      step_size=1e-2, nbeta=100.0, localization=1.0,
        ...                      anchor=w0)
        >>> float(info.loss), float(info.distance)
        (0.0, 0.0)
    """

    def kernel(
        rng_key: PRNGKey,
        state: SGLDState,
        loss_fn: LossFn,
        batch: Batch,
        *,
        step_size,
        nbeta,
        localization,
        anchor: ArrayTree,
        held: tuple | None = None,
        mask: ArrayTree | None = None,
    ) -> tuple[SGLDState, SGLDInfo]:
        position = state.position
        loss, grad = jax.value_and_grad(loss_fn)(position, batch)
        noise = masked(_gaussian_like(rng_key, position), mask)
        displacement = jax.tree.map(jnp.subtract, position, anchor)
        pull = _localizer_pull(displacement, localization, held)
        half_eps = 0.5 * step_size
        sqrt_eps = jnp.sqrt(step_size)

        grad_u = masked(jax.tree.map(lambda g, pull_w: nbeta * g + pull_w, grad, pull), mask)

        def move(w, gu, xi):
            return (w - half_eps * gu + sqrt_eps * xi).astype(w.dtype)

        new_position = jax.tree.map(move, position, grad_u, noise)
        return SGLDState(new_position), step_info(loss, displacement, grad_u)

    return kernel


def masked(tree: ArrayTree, mask: ArrayTree | None) -> ArrayTree:
    """``tree`` with every entry outside ``mask`` (0/1 leaves) set to 0; None: unchanged."""
    if mask is None:
        return tree
    return jax.tree.map(lambda x, m: (x * m).astype(x.dtype), tree, mask)


def dimension(tree: ArrayTree, mask: ArrayTree | None = None):
    """The number of entries of ``tree`` that move: all, or those inside ``mask``."""
    if mask is None:
        return sum(x.size for x in jax.tree.leaves(tree))
    return sum(jnp.sum(m) for m in jax.tree.leaves(mask))


def _localizer_pull(displacement, localization, held):
    """``gamma dw + sum_i c_i <v_i, dw> v_i``: the gradient of the localizer potential.

    ``held = (directions, strengths)``: ``directions`` a pytree like the parameters
    whose leaves carry a leading axis k (k orthonormal directions), ``strengths`` the
    k extra localizations ``c_i`` along them (None: isotropic).
    """
    pull = jax.tree.map(lambda dw: localization * dw, displacement)
    if held is None:
        return pull
    directions, strengths = held
    weights = jnp.where(jnp.isinf(strengths), 0.0, strengths) * _coefficients(
        directions, displacement
    )
    return jax.tree.map(lambda p, v: p + jnp.tensordot(weights, v, axes=1), pull, directions)


def _coefficients(directions, tree):
    """``<v_i, tree>`` for each of the k stacked directions."""
    return sum(
        jnp.tensordot(v, x, axes=x.ndim)
        for v, x in zip(jax.tree.leaves(directions), jax.tree.leaves(tree), strict=True)
    )


def project_out(tree: ArrayTree, held: tuple | None) -> ArrayTree:
    """``tree`` less its components along the held directions of infinite strength.

    A direction held with strength ``inf`` is projected out of the sampling: the chains
    move in its orthogonal complement (:func:`llc.estimate_llc`'s ``held_directions``).
    """
    if held is None:
        return tree
    directions, strengths = held
    coef = jnp.where(jnp.isinf(strengths), _coefficients(directions, tree), 0.0)
    return jax.tree.map(
        lambda x, v: (x - jnp.tensordot(coef, v, axes=1)).astype(x.dtype), tree, directions
    )


def sgld(loss_fn: LossFn, *, anchor: ArrayTree, step_size, nbeta, localization=1.0):
    """The SGLD kernel with its hyperparameters closed over (blackjax's top-level API).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over a batch.
        anchor: w*, the centre of the localizer.
        step_size: epsilon in the Lau convention (noise variance per step).
        nbeta: n times the inverse temperature.
        localization: gamma, the strength of the Gaussian localizer.

    Returns:
        A :class:`SamplingAlgorithm` with ``init(position)`` and
        ``step(rng_key, state, batch) -> (state, info)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> algo = sgld(lambda w, b: jnp.mean((b - w) ** 2), anchor=jnp.zeros(()),
        ...             step_size=1e-3, nbeta=50.0)
        >>> state = algo.init(jnp.zeros(()))
        >>> state, info = algo.step(jax.random.key(1), state, jnp.ones(8))
        >>> info.loss.shape
        ()
    """
    kernel = build_kernel()

    def step(rng_key: PRNGKey, state: SGLDState, batch: Batch):
        return kernel(
            rng_key,
            state,
            loss_fn,
            batch,
            step_size=step_size,
            nbeta=nbeta,
            localization=localization,
            anchor=anchor,
        )

    return SamplingAlgorithm(init, step)


def to_blackjax_step_size(step_size):
    """Convert a Lau-convention step size to blackjax's (``eps_blackjax = eps / 2``).

    Examples:
        >>> to_blackjax_step_size(1e-4)
        5e-05
    """
    return step_size / 2
