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

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llc import _chunks, _progress, sgld
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

    @property
    def total_steps(self) -> int:
        return self.num_burnin_steps + self.num_draws * self.num_steps_bw_draws


class Hyper(NamedTuple):
    """Traced hyperparameters: changing them does not recompile."""

    step_size: Array
    nbeta: Array
    localization: Array
    init_loss_hi: Array
    init_loss_lo: Array
    run_id: Array


class RunOutput(NamedTuple):
    """Per-chain traces of one run (all on device)."""

    burnin_delta: Array  # (chains, burnin): L_B(w_t) - baseline
    delta: Array  # (chains, draws)
    distance: Array  # (chains, draws): ||w_t - w*||
    first_nonfinite_step: Array  # (chains,) int32, -1 if the loss stayed finite
    full_delta: Array  # (chains, draws): L_n(w_t) - L_n(w*) at checked draws, NaN elsewhere;
    # (chains, 0) without checks
    projection: Array  # (chains, draws): <w_t - w*, direction>, or (chains, 0)


def make_hyper(step_size, nbeta, localization, init_loss: float, dtype, run_id: int = 0) -> Hyper:
    """Pack the traced hyperparameters in ``dtype`` (the parameters' float type).

    ``init_loss`` is split into two words, ``hi = dtype(init_loss)`` and the rounding
    remainder ``lo``, so ``(L - hi) - lo`` is accurate beyond ``dtype``'s precision.
    """
    hi = jnp.asarray(init_loss, dtype)
    lo = jnp.asarray(init_loss - float(hi), dtype)
    cast = partial(jnp.asarray, dtype=dtype)
    return Hyper(cast(step_size), cast(nbeta), cast(localization), hi, lo, jnp.int32(run_id))


@partial(jax.jit, static_argnames=("loss_fn", "config"))
def run_chains(
    rng_key: PRNGKey,
    anchor: ArrayTree,
    data: Batch,
    hyper: Hyper,
    direction: ArrayTree = None,
    held: tuple | None = None,
    *,
    loss_fn: LossFn,
    config: RunConfig,
) -> RunOutput:
    """Run ``config.num_chains`` SGLD chains from ``anchor``; see the module docstring.

    Every ``config.full_loss_every_draws``-th draw also evaluates the full-data loss of
    every chain (in chunks of ``config.eval_chunk`` rows); with
    ``config.track_direction`` each draw records the projection of ``w_t - w*`` on
    ``direction``.
    """
    kernel = sgld.build_kernel()
    chain_keys = jax.random.split(rng_key, config.num_chains)
    noise_keys, batch_keys = jax.vmap(jax.random.split, out_axes=1)(chain_keys)
    minibatch = config.batch_size is not None
    if not minibatch:
        full_batch_ref = loss_fn(anchor, data)

    def chain_step(key, state, batch):
        new_state, info = kernel(
            key,
            state,
            loss_fn,
            batch,
            step_size=hyper.step_size,
            nbeta=hyper.nbeta,
            localization=hyper.localization,
            anchor=anchor,
            held=held,
        )
        if not minibatch:
            delta = info.loss - full_batch_ref
        elif config.control_variate:
            delta = info.loss - loss_fn(anchor, batch)
        else:
            delta = (info.loss - hyper.init_loss_hi) - hyper.init_loss_lo
        return new_state, delta, info.distance

    def step(carry, t):
        states, first_bad = carry
        fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        keys = fold(noise_keys, t)
        if minibatch:
            sample = partial(sample_indices, num_data=config.num_data, batch_size=config.batch_size)
            idx = jax.vmap(sample)(fold(batch_keys, t))
            batches = jax.vmap(gather, in_axes=(None, 0))(data, idx)
            states, delta, dist = jax.vmap(chain_step)(keys, states, batches)
        else:
            states, delta, dist = jax.vmap(chain_step, in_axes=(0, 0, None))(keys, states, data)
        first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(delta), t, first_bad)
        if config.progress_rate:
            jax.lax.cond(
                (t % config.progress_rate == 0) | (t == config.total_steps - 1),
                lambda: jax.debug.callback(
                    _progress.update, hyper.run_id, t, jnp.nanmean(delta), hyper.nbeta
                ),
                lambda: None,
            )
        return (states, first_bad), (delta, dist)

    def full_delta(states):
        def one(w):
            loss = full_loss(loss_fn, w, data, config.eval_chunk)
            return (loss - hyper.init_loss_hi) - hyper.init_loss_lo

        return jax.vmap(one)(states.position)

    def draw(carry, xs):
        t0, index = xs
        k = config.num_steps_bw_draws
        carry = jax.lax.fori_loop(0, k - 1, lambda i, c: step(c, t0 + i)[0], carry)
        carry, (delta, dist) = step(carry, t0 + k - 1)
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
        return carry, (delta, dist, checked, proj)

    positions = jax.tree.map(lambda p: jnp.broadcast_to(p, (config.num_chains, *p.shape)), anchor)
    carry = (sgld.init(positions), jnp.full((config.num_chains,), -1, jnp.int32))
    burn = config.num_burnin_steps
    carry, (burnin_delta, _) = jax.lax.scan(step, carry, jnp.arange(burn, dtype=jnp.int32))
    index = jnp.arange(config.num_draws, dtype=jnp.int32)
    starts = burn + config.num_steps_bw_draws * index
    carry, (delta, dist, checked, proj) = jax.lax.scan(draw, carry, (starts, index))
    return RunOutput(
        burnin_delta.T,
        delta.T,
        dist.T,
        carry[1],
        jnp.moveaxis(checked, 0, 1),
        jnp.moveaxis(proj, 0, 1),
    )


def full_loss(loss_fn: LossFn, params: ArrayTree, data: Batch, chunk: int) -> Array:
    """The full-data mean loss at ``params``, evaluated ``chunk`` rows at a time (traceable)."""
    return _chunks.mean(lambda c: loss_fn(params, c), data, chunk)


@partial(jax.jit, static_argnames=("loss_fn",))
def _chunk_means(loss_fn: LossFn, params: ArrayTree, chunks: Batch) -> Array:
    return jax.lax.map(lambda chunk: loss_fn(params, chunk), chunks)


def full_data_loss(loss_fn: LossFn, params: ArrayTree, data: Batch, chunk_size: int) -> float:
    """L_n(params) over all of ``data``, in chunks, combined in float64 on the host.

    Args:
        loss_fn: the mean loss over a batch.
        params: the point.
        data: a pytree of arrays with a leading axis n.
        chunk_size: rows per evaluation (bounds memory).

    Returns:
        The full-data mean loss as a Python float.
    """
    chunk = min(chunk_size, jax.tree.leaves(data)[0].shape[0])
    return _chunks.host_mean(
        partial(_chunk_means, loss_fn, params),
        lambda tail: _chunk_means(loss_fn, params, jax.tree.map(lambda x: x[None], tail))[0],
        data,
        chunk,
    )
