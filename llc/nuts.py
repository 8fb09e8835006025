"""The gold standard for small models: full-batch NUTS on the localized tempered posterior.

NUTS (blackjax, with its window adaptation of step size and diagonal mass matrix) samples

    p(w) ~ exp(-nbeta L_n(w) - gamma/2 |w - w*|^2)

exactly up to Monte Carlo error: no minibatch noise, no discretisation bias (every
trajectory passes a Metropolis test). It costs a full-data gradient per leapfrog step, so
it is for models and data sets small enough to check SGLD against it; select it with
``estimate_llc(..., sampler="nuts")``.
"""

from functools import partial

import blackjax
import jax
import jax.numpy as jnp

from llc import sgld
from llc._types import ArrayTree, Batch, LossFn, PRNGKey
from llc.loop import RunOutput


@partial(jax.jit, static_argnames=("loss_fn", "num_chains", "num_warmup", "num_draws"))
def run_nuts(
    rng_key: PRNGKey,
    anchor: ArrayTree,
    data: Batch,
    nbeta,
    localization,
    init_loss_hi,
    init_loss_lo,
    *,
    loss_fn: LossFn,
    num_chains: int,
    num_warmup: int,
    num_draws: int,
    starts: ArrayTree | None = None,
) -> RunOutput:
    """``num_chains`` NUTS chains from the anchor, each with its own window adaptation.

    ``starts`` (every leaf with a leading chain axis) starts the chains elsewhere, e.g. where
    another sampler's chains ended; the target is still the one localized at the anchor.

    Returns a :class:`llc.loop.RunOutput` whose ``burnin_delta`` is empty (the warm-up
    adapts the kernel, so its draws are not from the target) and whose ``acceptance``
    is NUTS's mean acceptance statistic per draw.
    """

    def logdensity(w):
        dw = jax.tree.map(jnp.subtract, w, anchor)
        sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(dw))
        return -nbeta * loss_fn(w, data) - 0.5 * localization * sq

    def one_chain(key, start):
        warm_key, sample_key = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, parameters), _ = warmup.run(warm_key, start, num_steps=num_warmup)
        step = blackjax.nuts(logdensity, **parameters).step

        def body(state, key):
            state, info = step(key, state)
            dw = jax.tree.map(jnp.subtract, state.position, anchor)
            loss = loss_fn(state.position, data)
            grad_u = jax.tree.map(jnp.negative, state.logdensity_grad)  # grad U = -grad log p
            at = sgld.step_info(loss, dw, grad_u)
            delta = (loss - init_loss_hi) - init_loss_lo
            return state, (delta, at.distance, info.acceptance_rate, at.virial)

        keys = jax.random.split(sample_key, num_draws)
        _, (delta, dist, acc, vir) = jax.lax.scan(body, state, keys)
        return delta, dist, acc, vir

    if starts is None:
        starts = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains, *x.shape)), anchor)
    delta, dist, acc, vir = jax.vmap(one_chain)(jax.random.split(rng_key, num_chains), starts)
    empty = jnp.zeros((num_chains, 0), delta.dtype)
    first_bad = jnp.where(
        jnp.all(jnp.isfinite(delta), axis=1), -1, num_warmup + jnp.argmax(~jnp.isfinite(delta), 1)
    ).astype(jnp.int32)
    acc = acc.astype(delta.dtype)
    vir = vir.astype(delta.dtype)
    return RunOutput(empty, delta, dist, first_bad, empty, empty, acc, empty, empty, virial=vir)
