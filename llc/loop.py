"""The compiled sampling loop: ``lax.scan`` over steps of ``vmap`` over chains.

One jitted program per static configuration. The hyperparameters (step size, nbeta,
localization) and the anchor are traced arguments, so sweeping them reuses the
compiled program. Nothing per draw is stored but the loss difference and the distance
from the anchor: memory is O(chains x params), traces O(chains x draws).

Every recorded loss is a *difference* from a baseline computed on the same footing:
``L_B(w_t) - L_B(w*)`` on the same minibatch (the control variate), or
``L_B(w_t) - L_n(w*)`` with the full-data baseline split into two float32 words so the
subtraction keeps the precision that a large nbeta would otherwise multiply away.
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llc import _chunks, _progress, mesh, samplers, sgld
from llc._batching import gather, sample_indices
from llc._types import Array, ArrayTree, Batch, LossFn, PRNGKey


class RunConfig(NamedTuple):
    """Static (compile-time) settings of a run."""

    num_chains: int
    num_burnin_steps: int
    num_draws: int
    num_steps_bw_draws: int
    num_data: int
    batch_size: int | None
    control_variate: bool
    progress_rate: int = 0
    full_loss_every_draws: int = 0  # 0: no full-batch checks
    eval_chunk: int = 0
    track_direction: bool = False
    sampler: str = "sgld"
    acceptance_every_draws: int = 0  # 0: no MALA acceptance checks
    record_scale: bool = False  # return each chain's per-coordinate step sizes (mean, max)
    blowup_per_param: float = float("inf")  # nbeta (L - L*) above this x d: diverged
    mesh: jax.sharding.Mesh | None = None  # chains x data x model (see llc.mesh)
    param_specs: tuple | None = None  # a PartitionSpec per parameter leaf (flat), or None
    chunked: bool = False  # return the final carry, so a later call can resume from it
    progress_total: int = 0  # steps of the whole run when it is chunked (0: this call's)
    per_sample_loss_fn: Callable | None = None  # (params, batch) -> per-row losses
    project_held: bool = False  # some held direction has strength inf: project it out

    @property
    def total_steps(self) -> int:
        """Steps per chain: the burn-in and the draws."""
        return self.num_burnin_steps + self.num_draws * self.num_steps_bw_draws


class Hyper(NamedTuple):
    """Traced hyperparameters: changing them does not recompile."""

    step_size: Array
    nbeta: Array
    localization: Array
    init_loss_hi: Array
    init_loss_lo: Array
    run_id: Array
    options: dict  # the sampler's own hyperparameters


class RunOutput(NamedTuple):
    """Per-chain traces of one run (all on device)."""

    burnin_delta: Array  # (chains, burnin): L_B(w_t) - baseline
    delta: Array  # (chains, draws)
    distance: Array  # (chains, draws): ||w_t - w*||
    first_nonfinite_step: Array  # (chains,) int32, -1 if the loss stayed finite
    full_delta: Array  # (chains, draws): L_n(w_t) - L_n(w*) at checked draws, NaN elsewhere;
    # (chains, 0) without checks
    projection: Array  # (chains, draws): <w_t - w*, direction>, or (chains, 0)
    acceptance: Array  # (chains, draws): MALA acceptance at checked draws, NaN elsewhere;
    # (chains, 0) without checks
    scale: Array  # (chains, d): per-coordinate step (noise variance) averaged over the
    # draws; the step size everywhere for unpreconditioned samplers; or (chains, 0)
    scale_max: Array  # (chains, d): its maximum over the draws, or (chains, 0)
    final_position: ArrayTree = ()  # each chain's last position (with record_scale), or ()
    final_carry: tuple = ()  # (states, first_nonfinite_step) when config.chunked, or ()
    step_sizes: tuple = ()  # the step sizes the burn-in ran at, when it followed the chains
    spread: tuple = ()  # (step size, steps) of the spread before the burn-in, or ()
    observed: dict = {}  # name -> (chains, draws[, m, ...]): observable minus its value at w*
    virial: Array = ()  # (chains, draws): (w_t - w*) . grad U(w_t), the drift's own gradient
    burnin_virial: Array = ()  # (chains, burnin): the same over this call's burn-in steps
    # (a segmented burn-in reads it per segment; () in the merged output then)


def make_hyper(
    step_size, nbeta, localization, init_loss: float, dtype, run_id: int = 0, options=None
) -> Hyper:
    """Pack the traced hyperparameters in ``dtype`` (the parameters' float type).

    ``init_loss`` is split into two words, ``hi = dtype(init_loss)`` and the rounding
    remainder ``lo``, so ``(L - hi) - lo`` is accurate beyond ``dtype``'s precision.
    """
    hi = jnp.asarray(init_loss, dtype)
    lo = jnp.asarray(init_loss - float(hi), dtype)
    cast = partial(jnp.asarray, dtype=dtype)
    options = {k: cast(v) for k, v in (options or {}).items()}
    return Hyper(
        cast(step_size), cast(nbeta), cast(localization), hi, lo, jnp.int32(run_id), options
    )


def _project_state(state, anchor, held):
    """Keep ``w - w*`` (and a velocity) orthogonal to the projected-out directions."""
    shift = sgld.project_out(jax.tree.map(jnp.subtract, state.position, anchor), held)
    state = state._replace(position=jax.tree.map(jnp.add, anchor, shift))
    if hasattr(state, "velocity"):
        state = state._replace(velocity=sgld.project_out(state.velocity, held))
    return state


def _run(
    rng_key: PRNGKey,
    anchor: ArrayTree,
    data: Batch,
    hyper: Hyper,
    direction: ArrayTree = None,
    held: tuple | None = None,
    resume: tuple | None = None,
    mask: ArrayTree | None = None,
    observe: tuple | None = None,
    *,
    loss_fn: LossFn,
    config: RunConfig,
) -> RunOutput:
    """Run ``config.num_chains`` chains of ``config.sampler`` from ``anchor``.

    ``resume = (states, first_nonfinite_step, first_step, first_draw)`` continues a run
    from its carry: step and draw numbers are global, so the keys, minibatches and check
    schedules are those of one uninterrupted run.

    Every ``config.full_loss_every_draws``-th draw also evaluates the full-data loss of
    every chain (in chunks of ``config.eval_chunk`` rows); every
    ``config.acceptance_every_draws``-th draw the MALA acceptance of that draw's step (on
    its own minibatch); with ``config.track_direction`` each draw records the projection
    of ``w_t - w*`` on ``direction``. ``mask`` (0/1 leaves shaped like ``anchor``, traced)
    moves only the weights inside it (the refined LLC). ``observe = (means, samples)``,
    two dicts of name -> data set, records at every draw each chain's mean loss on every
    ``means`` set and its per-sample losses on every ``samples`` set (each minus its value
    at ``anchor``).
    """
    sampler = samplers.SAMPLERS[config.sampler]
    settings = {
        "step_size": hyper.step_size,
        "nbeta": hyper.nbeta,
        "localization": hyper.localization,
        "anchor": anchor,
        "held": held,
        "options": hyper.options,
        "mask": mask,
    }
    chain_keys = jax.random.split(rng_key, config.num_chains)
    noise_keys, batch_keys = jax.vmap(jax.random.split, out_axes=1)(chain_keys)
    noise_keys, batch_keys = mesh.shard_per_chain(config.mesh, (noise_keys, batch_keys))
    anchor = mesh.shard_params(config.mesh, anchor, config.param_specs, leading_chain=False)
    minibatch = config.batch_size is not None
    blowup = config.blowup_per_param * sgld.dimension(anchor, mask)  # d: the weights that move
    if not minibatch:
        full_batch_ref = loss_fn(anchor, data)

    def chain_step(key, state, batch, accept_now):
        new_state, info = sampler.kernel(key, state, loss_fn, batch, **settings)
        if config.project_held:  # directions of infinite strength: sample their complement
            new_state = _project_state(new_state, anchor, held)
        if config.acceptance_every_draws and sampler.proposal_scale is not None:
            acceptance = jax.lax.cond(
                accept_now,
                lambda: jnp.minimum(
                    1.0,
                    jnp.exp(
                        samplers.log_acceptance(
                            sampler, state, new_state, loss_fn, batch, info=info, **settings
                        )
                    ),
                ),
                lambda: jnp.full((), jnp.nan, info.loss.dtype),
            )
        else:
            acceptance = jnp.full((), jnp.nan, info.loss.dtype)
        if not minibatch:
            delta = info.loss - full_batch_ref
        elif config.control_variate:
            delta = info.loss - loss_fn(anchor, batch)
        else:
            delta = (info.loss - hyper.init_loss_hi) - hyper.init_loss_lo
        return new_state, delta, info.distance, acceptance, info.virial

    def step(carry, t, accept_now=False):
        states, first_bad = carry
        fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        keys = fold(noise_keys, t)
        if minibatch:
            sample = partial(sample_indices, num_data=config.num_data, batch_size=config.batch_size)
            idx = jax.vmap(sample)(fold(batch_keys, t))
            batches = mesh.shard_batches(
                config.mesh, jax.vmap(gather, in_axes=(None, 0))(data, idx)
            )
            states, delta, dist, acc, vir = jax.vmap(chain_step, in_axes=(0, 0, 0, None))(
                keys, states, batches, accept_now
            )
        else:
            states, delta, dist, acc, vir = jax.vmap(chain_step, in_axes=(0, 0, None, None))(
                keys, states, data, accept_now
            )
        states = shard_states(states)
        bad = ~jnp.isfinite(delta) | (hyper.nbeta * delta > blowup)
        first_bad = mesh.shard_per_chain(
            config.mesh, jnp.where((first_bad < 0) & bad, t, first_bad)
        )
        if config.progress_rate:
            jax.lax.cond(
                (t % config.progress_rate == 0)
                | (t == (config.progress_total or config.total_steps) - 1),
                lambda: jax.debug.callback(
                    _progress.update, hyper.run_id, t, jnp.nanmean(delta), hyper.nbeta
                ),
                lambda: None,
            )
        return (states, first_bad), (delta, dist, acc, vir)

    def full_delta(states):
        def one(w):
            loss = full_loss(loss_fn, w, data, config.eval_chunk)
            return (loss - hyper.init_loss_hi) - hyper.init_loss_lo

        return jax.vmap(one)(states.position)

    observe_at, observe_refs = _observers(loss_fn, config, anchor, observe)
    structure = jax.tree.structure(anchor)

    def shard_states(states):
        return _shard_states(config, structure, states)

    def draw(carry, xs):
        carry, (scale_sum, scale_max) = carry
        t0, index = xs
        k = config.num_steps_bw_draws
        carry = jax.lax.fori_loop(0, k - 1, lambda i, c: step(c, t0 + i)[0], carry)
        every = config.acceptance_every_draws
        accept_now = index % every == 0 if every else False
        carry, (delta, dist, acc, vir) = step(carry, t0 + k - 1, accept_now)
        if not every:
            acc = jnp.zeros((config.num_chains, 0), delta.dtype)
        states = carry[0]
        if config.full_loss_every_draws:
            checked = jax.lax.cond(
                index % config.full_loss_every_draws == config.full_loss_every_draws - 1,
                full_delta,
                lambda _: jnp.full((config.num_chains,), jnp.nan, delta.dtype),
                states,
            )
        else:
            checked = jnp.zeros((config.num_chains, 0), delta.dtype)
        if config.track_direction:

            def project(w):
                parts = jax.tree.map(lambda a, b, v: jnp.vdot(a - b, v), w, anchor, direction)
                return sum(jax.tree.leaves(parts))

            proj = jax.vmap(project)(states.position)
        else:
            proj = jnp.zeros((config.num_chains, 0), delta.dtype)
        if config.record_scale:
            scale = jax.vmap(lambda s: step_scale(sampler, s, hyper, anchor, mask))(states)
            scale_sum, scale_max = scale_sum + scale, jnp.maximum(scale_max, scale)
        observed = {
            name: jax.vmap(lambda w, f=f, r=observe_refs[name]: f(w) - r)(states.position)
            for name, f in observe_at.items()
        }
        return (carry, (scale_sum, scale_max)), (delta, dist, checked, proj, acc, vir, observed)

    if resume is None:
        resume = (*_start_carry(anchor, hyper, config), jnp.int32(0), jnp.int32(0))
    carry = (shard_states(resume[0]), resume[1])
    first_step, first_draw = resume[2], resume[3]
    burn = config.num_burnin_steps
    burn_steps = first_step + jnp.arange(burn, dtype=jnp.int32)
    carry, (burnin_delta, _, _, burnin_virial) = _scan(step, carry, burn_steps)
    local = jnp.arange(config.num_draws, dtype=jnp.int32)
    starts = first_step + burn + config.num_steps_bw_draws * local
    index = first_draw + local
    width = sum(x.size for x in jax.tree.leaves(anchor)) if config.record_scale else 0
    dtype = burnin_delta.dtype
    zeros = jnp.zeros((config.num_chains, width), dtype)
    carry, (delta, dist, checked, proj, acc, vir, observed) = _scan(
        draw, (carry, (zeros, zeros)), (starts, index)
    )
    carry, (scale_sum, scale_max) = carry
    return RunOutput(
        burnin_delta.T,
        delta.T,
        dist.T,
        carry[1],
        jnp.moveaxis(checked, 0, 1),
        jnp.moveaxis(proj, 0, 1),
        jnp.moveaxis(acc, 0, 1),
        scale_sum / config.num_draws,
        scale_max,
        carry[0].position if config.record_scale else (),
        carry if config.chunked else (),
        observed={name: jnp.moveaxis(x, 0, 1) for name, x in observed.items()},
        virial=vir.T,
        burnin_virial=burnin_virial.T,
    )


def _scan(body, carry, xs):
    """``jax.lax.scan``, but a scan of length 0 is not compiled (only its shapes traced).

    A burn-in segment runs no draws and a chunk of draws no burn-in: each program then
    compiles one loop body, not two.
    """
    if jax.tree.leaves(xs)[0].shape[0]:
        return jax.lax.scan(body, carry, xs)
    first = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), xs)
    shapes = jax.eval_shape(body, carry, first)[1]
    return carry, jax.tree.map(lambda s: jnp.zeros((0, *s.shape), s.dtype), shapes)


def _shard_states(config: RunConfig, structure, states):
    """Params-shaped state fields by the param specs, the rest per chain (with a mesh)."""
    if config.mesh is None:
        return states
    return type(states)(
        *[
            mesh.shard_params(config.mesh, f, config.param_specs, leading_chain=True)
            if jax.tree.structure(f) == structure
            else mesh.shard_per_chain(config.mesh, f)
            for f in states
        ]
    )


def _start_carry(anchor: ArrayTree, hyper: Hyper, config: RunConfig) -> tuple:
    """``(states, first_nonfinite_step)`` of chains at ``anchor``, sharded as a run's carry."""
    sampler = samplers.SAMPLERS[config.sampler]
    positions = jax.tree.map(lambda p: jnp.broadcast_to(p, (config.num_chains, *p.shape)), anchor)
    states = jax.vmap(lambda p: sampler.init(p, hyper.options))(positions)
    states = _shard_states(config, jax.tree.structure(anchor), states)
    first_bad = mesh.shard_per_chain(config.mesh, jnp.full((config.num_chains,), -1, jnp.int32))
    return states, first_bad


_start_states = jax.jit(_start_carry, static_argnames=("config",))


def start_carry(anchor: ArrayTree, hyper: Hyper, config: RunConfig) -> tuple:
    """The ``resume`` of a chunked run from ``anchor``: ``(states, first_bad, 0, 0)``.

    Sharded as the carry a chunk returns, so that a chunked program is one program whether
    it starts at ``anchor`` or resumes (a ``resume`` of None would trace another).
    """
    states, first_bad = _start_states(anchor, hyper, config)
    return states, first_bad, jnp.int32(0), jnp.int32(0)


def _observers(loss_fn, config: RunConfig, anchor, observe):
    """Per observable, ``f(w)`` (its mean loss or per-sample losses) and ``f(anchor)``."""
    if observe is None:
        return {}, {}
    means, samples = observe
    per_sample = config.per_sample_loss_fn or per_row_loss(loss_fn)
    chunk = config.eval_chunk or 1
    found = {}
    for name, q in means.items():
        found[name] = partial(lambda w, q: full_loss(loss_fn, w, q, chunk), q=q)
    for name, q in samples.items():
        found[name] = partial(lambda w, q: _chunks.rows(lambda b: per_sample(w, b), q, chunk), q=q)
    return found, {name: f(anchor) for name, f in found.items()}


def per_row_loss(loss_fn):
    """``loss_fn`` on single-row batches: one loss per row of a batch."""

    def per_row(params, batch):
        one = lambda row: loss_fn(params, jax.tree.map(lambda a: a[None], row))  # noqa: E731
        return jax.vmap(one)(batch)

    return per_row


def step_scale(sampler, state, hyper, anchor, mask=None):
    """The per-coordinate effective Langevin step at ``state``, raveled.

    The preconditioned step for RMSProp-SGLD, ``step_size`` for SGLD, and
    ``step_size / xi`` for the momentum samplers (friction ``xi`` per step): in the
    high-friction limit SGHMC is SGLD with that step, and at friction 1 it is SGLD
    exactly. (At the SGLD step a friction of 0.1 gave +38% on a 10K-parameter network
    where SGLD gave +5%.)
    """
    if sampler.proposal_scale is None:
        step = hyper.step_size / jnp.maximum(state.friction, 1e-3)
        scale = jax.tree.map(lambda x: jnp.full(x.shape, step, x.dtype), anchor)
    else:
        scale = sampler.proposal_scale(state, hyper.step_size, hyper.options)
    scale = sgld.masked(scale, mask)  # the weights outside the mask take no steps
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(scale)])


run_one = _run  # traceable: the chains of one run, for llc.stacked to vmap or map
run_chains = jax.jit(_run, static_argnames=("loss_fn", "config"))
run_chains.__doc__ = _run.__doc__


def full_loss(loss_fn: LossFn, params: ArrayTree, data: Batch, chunk: int) -> Array:
    """The full-data mean loss at ``params``, evaluated ``chunk`` rows at a time (traceable)."""
    return _chunks.mean(lambda c: loss_fn(params, c), data, chunk)
