"""The stochastic-gradient samplers of :func:`llc.estimate_llc`, behind one kernel interface.

Every sampler targets the same localized, tempered posterior,

    p(w) ~ exp(-U(w)),   U(w) = nbeta L_n(w) + gamma/2 |w - w*|^2  (+ held directions),

with a minibatch estimate of grad U at each step, and is an ``init``/``kernel`` pair:

- ``init(position, options) -> state`` (a NamedTuple with a ``position`` field),
- ``kernel(rng_key, state, loss_fn, batch, *, step_size, nbeta, localization, anchor,
  held, options, mask=None) -> (state, info)`` with ``info.loss = L_B(w_t)`` and
  ``info.distance = |w_t - w*|`` at the pre-step position. ``mask`` (0/1 leaves shaped
  like the parameters) restricts the chain to the weights inside it: the gradient step
  and the noise are zero outside, so those weights stay where they started (w*).

``options`` is a dict of the sampler's own hyperparameters (traced: sweeping them does not
recompile). All step sizes follow the Lau convention: with its extra option at its
"plain" value each sampler reduces to SGLD with noise variance ``step_size`` per step.

- ``"sgld"``: :mod:`llc.sgld`.
- ``"rmsprop_sgld"``: RMSProp-preconditioned SGLD as Hitchcock & Hoogland (2025, Alg. 3)
  describe it: second moment started at 1, bias-corrected, statistics from the loss
  gradient only; per-coordinate step ``eps_t = step_size / (sqrt(v_hat) + eps)``.
  Options ``alpha`` (the second-moment decay b2, 0.99), ``eps`` (the stabiliser, 1e-8)
  and ``adapt_steps`` (inf: the paper's variant adapts forever). The preconditioner is a
  function of the last ~``1 / (1 - alpha)`` positions, and without a correction term that
  makes the chain's law depend on it: on a 5-d Gaussian at a small step (relaxation
  slower than the moment's memory) the estimate came out 56% high. With ``adapt_steps``
  set to the burn-in, ``v`` is frozen after it, and the draws come from SGLD with a
  fixed diagonal preconditioner, which targets the posterior exactly (up to the step).
- ``"sghmc"``: stochastic-gradient HMC (Chen et al. 2014) in the form
  ``v <- (1 - a) v - eta grad U + N(0, 2 a eta)``, ``w <- w + v`` with ``eta = step_size/2``;
  option ``friction`` (a, 0.1). At ``friction = 1`` it is SGLD exactly.
- ``"sgnht"``: the stochastic-gradient Nose-Hoover thermostat (Ding et al. 2014):
  the friction ``xi`` is a state variable, ``v <- (1 - xi) v - eta grad U + N(0, 2 A eta)``,
  ``w <- w + v``, ``xi <- xi + (|v|^2 / d - eta / (1 - xi / 2))`` (the thermostat *is*
  applied: it keeps the kinetic energy at the target temperature whatever the gradient
  noise). The target is the kinetic energy of this discrete chain at the right
  temperature, ``eta / (1 - xi / 2)``, not Ding et al.'s continuous-time ``eta``: with
  the latter the chain runs cold by the factor ``1 - xi / 2`` (measured: -8.5% on a
  Gaussian at xi = 0.5). Option
  ``diffusion`` (A in (0, 1], 0.1), which is also the initial ``xi``; xi settles near
  ``A + eta nbeta^2 sigma^2 / 2`` (sigma^2 the gradient-noise variance). The velocity
  update damps by ``1 - xi`` per step, which dissipates less once xi passes 1 and
  nothing at 2: if the gradient noise needs xi near 1, the step size is too large.

``friction`` and ``diffusion`` are per step (Ding et al.'s ``xi h`` and ``A h`` with
``h = sqrt(eta)``), which is what makes ``friction = 1`` plain SGLD.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> s = SAMPLERS["rmsprop_sgld"]
    >>> options = resolve_options("rmsprop_sgld", None)
    >>> sorted(options)
    ['adapt_steps', 'alpha', 'eps']
    >>> state = s.init(jnp.zeros(3), options)
    >>> state, info = s.kernel(jax.random.key(0), state, lambda w, b: jnp.sum(w**2), None,
    ...                        step_size=1e-3, nbeta=10.0, localization=1.0,
    ...                        anchor=jnp.zeros(3), held=None, options=options)
    >>> int(state.count), float(info.loss)
    (1, 0.0)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llc import sgld
from llc._types import Array, ArrayTree

__all__ = [
    "CAPABILITIES",
    "SAMPLERS",
    "Capabilities",
    "Sampler",
    "log_acceptance",
    "resolve_options",
]


class Sampler(NamedTuple):
    """A sampler: ``init``, ``kernel``, its option defaults, and its proposal scale.

    Attributes:
        name: the name ``estimate_llc(sampler=...)`` takes.
        init: ``init(position, options) -> state``.
        kernel: see the module docstring.
        defaults: option name -> default value.
        proposal_scale: ``proposal_scale(new_state, step_size, options)``, the
            per-coordinate noise variance of the step that produced ``new_state``, for
            the MALA acceptance check; None where the proposal is not a Langevin step
            (the momentum samplers).
    """

    name: str
    init: Callable
    kernel: Callable
    defaults: dict
    proposal_scale: Callable | None


def _sq_norm(tree: ArrayTree) -> Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def _grad_u(loss_fn, position, batch, nbeta, localization, anchor, held, mask=None):
    """``L_B(w)``, ``grad L_B(w)``, ``w - w*`` and ``grad U(w)`` on one batch.

    With a weight ``mask`` (0/1 leaves shaped like the parameters), ``grad U`` is zero
    outside it: the weights outside do not move.
    """
    loss, grad = jax.value_and_grad(loss_fn)(position, batch)
    displacement = jax.tree.map(jnp.subtract, position, anchor)
    pull = sgld._localizer_pull(displacement, localization, held)
    grad_u = sgld.masked(jax.tree.map(lambda g, p: nbeta * g + p, grad, pull), mask)
    return loss, grad, displacement, grad_u


# --- sgld ------------------------------------------------------------------------------

_sgld_kernel = sgld.build_kernel()


def _sgld_init(position, options):
    del options
    return sgld.init(position)


def _sgld_step(rng_key, state, loss_fn, batch, *, options, **settings):
    """The SGLD kernel (``settings``: step_size, nbeta, localization, anchor, held, mask)."""
    del options
    return _sgld_kernel(rng_key, state, loss_fn, batch, **settings)


def _sgld_scale(state, step_size, options):
    del options
    return jax.tree.map(lambda w: jnp.full(w.shape, step_size, w.dtype), state.position)


# --- rmsprop_sgld ----------------------------------------------------------------------


class RMSPropSGLDState(NamedTuple):
    """Position, the loss-gradient second moment ``v`` (started at 1), and the step count."""

    position: ArrayTree
    second_moment: ArrayTree
    count: Array


def _rmsprop_init(position, options):
    del options
    ones = jax.tree.map(jnp.ones_like, position)
    return RMSPropSGLDState(position, ones, jnp.zeros((), jnp.int32))


def _rmsprop_scale(state, step_size, options):
    """``eps_t = step_size / (sqrt(v / (1 - alpha^t)) + eps)`` per coordinate."""
    alpha = jnp.asarray(options["alpha"])
    correction = 1.0 - alpha ** state.count.astype(alpha.dtype)
    return jax.tree.map(
        lambda v: step_size / (jnp.sqrt(v / correction) + options["eps"]), state.second_moment
    )


def _rmsprop_step(
    rng_key,
    state,
    loss_fn,
    batch,
    *,
    step_size,
    nbeta,
    localization,
    anchor,
    held,
    options,
    mask=None,
):
    position = state.position
    loss, grad, displacement, grad_u = _grad_u(
        loss_fn, position, batch, nbeta, localization, anchor, held, mask
    )
    alpha = jnp.asarray(options["alpha"])
    adapting = state.count < options["adapt_steps"]
    moment = jax.tree.map(
        lambda v, g: jnp.where(adapting, alpha * v + (1 - alpha) * jnp.square(g), v),
        state.second_moment,
        grad,
    )
    updated = RMSPropSGLDState(position, moment, state.count + adapting.astype(jnp.int32))
    scale = _rmsprop_scale(updated, step_size, options)
    noise = sgld.masked(sgld._gaussian_like(rng_key, position), mask)

    def move(w, gu, s, xi):
        return (w - 0.5 * s * gu + jnp.sqrt(s) * xi).astype(w.dtype)

    new_position = jax.tree.map(move, position, grad_u, scale, noise)
    info = sgld.step_info(loss, displacement, grad_u)
    return updated._replace(position=new_position), info


# --- sghmc and sgnht -------------------------------------------------------------------


class MomentumState(NamedTuple):
    """Position, velocity ``v`` (in position units) and the friction ``xi``.

    SGNHT's thermostat moves ``xi``; SGHMC keeps it at its fixed friction.
    """

    position: ArrayTree
    velocity: ArrayTree
    friction: Array


def _momentum_init(option):
    def init(position, options):
        dtype = jnp.result_type(*jax.tree.leaves(position))
        zeros = jax.tree.map(jnp.zeros_like, position)
        return MomentumState(position, zeros, jnp.asarray(options[option], dtype))

    return init


def _projected_count(held):
    """How many held directions are projected out of the sampling (strength inf), traced."""
    return 0 if held is None else jnp.sum(jnp.isinf(held[1]))


def _momentum_step(thermostat: bool, option: str):
    def step(
        rng_key,
        state,
        loss_fn,
        batch,
        *,
        step_size,
        nbeta,
        localization,
        anchor,
        held,
        options,
        mask=None,
    ):
        position = state.position
        loss, _, displacement, grad_u = _grad_u(
            loss_fn, position, batch, nbeta, localization, anchor, held, mask
        )
        eta = 0.5 * step_size
        # SGHMC injects noise at its friction; SGNHT at the fixed diffusion A, while its
        # friction xi adapts until the kinetic energy is right.
        injected = options[option]
        friction = state.friction
        noise = sgld.masked(sgld._gaussian_like(rng_key, position), mask)
        velocity = jax.tree.map(
            lambda v, gu, xi: (
                (1 - friction) * v - eta * gu + jnp.sqrt(2 * injected * eta) * xi
            ).astype(v.dtype),
            state.velocity,
            grad_u,
            noise,
        )
        velocity = sgld.project_out(velocity, held)  # move in the projected complement
        new_position = jax.tree.map(jnp.add, position, velocity)
        if thermostat:
            dim = sgld.dimension(velocity, mask) - _projected_count(held)
            # the kinetic energy of the exact discrete chain at friction xi (see above)
            friction = friction + (_sq_norm(velocity) / dim - eta / (1 - 0.5 * friction))
        info = sgld.step_info(loss, displacement, grad_u)
        return MomentumState(new_position, velocity, friction.astype(state.friction.dtype)), info

    return step


SAMPLERS: dict[str, Sampler] = {
    "sgld": Sampler("sgld", _sgld_init, _sgld_step, {}, _sgld_scale),
    "rmsprop_sgld": Sampler(
        "rmsprop_sgld",
        _rmsprop_init,
        _rmsprop_step,
        {"alpha": 0.99, "eps": 1e-8, "adapt_steps": float("inf")},
        _rmsprop_scale,
    ),
    "sghmc": Sampler(
        "sghmc",
        _momentum_init("friction"),
        _momentum_step(False, "friction"),
        {"friction": 0.1},
        None,
    ),
    "sgnht": Sampler(
        "sgnht",
        _momentum_init("diffusion"),
        _momentum_step(True, "diffusion"),
        {"diffusion": 0.1},
        None,
    ),
}


class Capabilities(NamedTuple):
    """What a sampler can do; every entry point checks its arguments against this.

    Attributes:
        minibatches: it can run on minibatches (False: full batch only).
        step_size: it takes a step size (False: it adapts its own).
        options: it takes ``sampler_options``.
        mala_check: the MALA acceptance of its steps can be computed.
        directions: it supports ``escape_direction`` and ``held_directions``.
        auto_burnin: ``num_burnin_steps="auto"`` applies (False: it adapts in warmup).
        step_bias: it records its per-coordinate steps, so the step-size bias model
            (:mod:`llc.step_bias`) applies.
    """

    minibatches: bool
    step_size: bool
    options: bool
    mala_check: bool
    directions: bool
    auto_burnin: bool
    step_bias: bool


CAPABILITIES = {
    **{
        name: Capabilities(
            minibatches=True,
            step_size=True,
            options=True,
            mala_check=sampler.proposal_scale is not None,
            directions=True,
            auto_burnin=True,
            step_bias=True,
        )
        for name, sampler in SAMPLERS.items()
    },
    # full-batch NUTS with window adaptation (llc.nuts): the exact reference
    "nuts": Capabilities(False, False, False, False, False, False, False),
}


def resolve_options(name: str, options: dict | None) -> dict:
    """The sampler's options: its defaults overridden by ``options``, checked.

    Raises:
        ValueError: for an unknown sampler, an unknown option, or a value outside its range.

    Examples:
        >>> resolve_options("sghmc", {"friction": 0.5})
        {'friction': 0.5}
    """
    if name not in SAMPLERS:
        msg = f"sampler must be one of {sorted(SAMPLERS) + ['nuts']}; got {name!r}."
        raise ValueError(msg)
    defaults = SAMPLERS[name].defaults
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        msg = f"sampler_options {unknown} are not options of {name!r} (its options: {known})."
        raise ValueError(msg)
    merged = {**defaults, **options}
    for key, value in merged.items():
        value = float(value)
        upper = key in ("alpha", "friction", "diffusion")
        if not (value > 0 or (key == "alpha" and value == 0)) or (upper and value > 1):
            bound = "in [0, 1)" if key == "alpha" else "in (0, 1]" if upper else "> 0"
            msg = f"sampler_options[{key!r}] for {name!r} must be {bound}; got {value}."
            raise ValueError(msg)
        if key == "alpha" and value >= 1:
            msg = f"sampler_options['alpha'] for {name!r} must be in [0, 1); got {value}."
            raise ValueError(msg)
        merged[key] = value
    return merged


def log_acceptance(
    sampler: Sampler,
    state,
    new_state,
    loss_fn,
    batch,
    *,
    step_size,
    nbeta,
    localization,
    anchor,
    held,
    options,
    mask=None,
    info=None,
) -> Array:
    """Log Metropolis-Hastings ratio of one Langevin step, as a MALA proposal on ``batch``.

    ``info``, the step's own info, supplies ``L_B(w)`` and ``grad U(w)`` (the kernel
    computed them on the same batch); without it they are recomputed.

    ``log a = U(w) - U(w') + log q(w | w') - log q(w' | w)`` with ``U`` on the same
    minibatch and ``q(w' | w) = N(w - s/2 grad U(w), s)``, ``s`` the step's
    per-coordinate variance. ``min(1, exp(log a))`` is the MALA acceptance probability of
    the step: near 1 the discretisation is accurate, and about 0.9 is the usual target.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> s = SAMPLERS["sgld"]
        >>> kw = dict(step_size=1e-4, nbeta=10.0, localization=1.0, anchor=jnp.zeros(2),
        ...           held=None, options={})
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(w**2)
        >>> state = s.init(jnp.array([0.1, -0.2]), {})
        >>> new, _ = s.kernel(jax.random.key(0), state, loss_fn, None, **kw)
        >>> float(jnp.exp(log_acceptance(s, state, new, loss_fn, None, **kw))) > 0.99
        True
    """
    scale = sampler.proposal_scale(new_state, step_size, options)
    w, w_new = state.position, new_state.position
    if info is not None:
        loss0, gu0 = info.loss, info.potential_grad
        dw0 = jax.tree.map(jnp.subtract, w, anchor)
    else:
        loss0, _, dw0, gu0 = _grad_u(loss_fn, w, batch, nbeta, localization, anchor, held, mask)
    loss1, _, dw1, gu1 = _grad_u(loss_fn, w_new, batch, nbeta, localization, anchor, held, mask)

    def localizer(dw):
        energy = 0.5 * localization * _sq_norm(dw)
        if held is not None:
            directions, strengths = held
            coef = sum(
                jnp.tensordot(v, d, axes=d.ndim)
                for v, d in zip(jax.tree.leaves(directions), jax.tree.leaves(dw), strict=True)
            )
            energy = energy + 0.5 * jnp.sum(strengths * coef**2)
        return energy

    delta_u = nbeta * (loss1 - loss0) + localizer(dw1) - localizer(dw0)

    def log_q(to, frm, gu):
        terms = jax.tree.map(
            lambda a, b, g, s: jnp.sum(jnp.square(a - b + 0.5 * s * g) / (2 * s)),
            to,
            frm,
            gu,
            scale,
        )
        return -sum(jax.tree.leaves(terms))

    return -delta_u + log_q(w, w_new, gu1) - log_q(w_new, w, gu0)
