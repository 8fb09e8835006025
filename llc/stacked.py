"""Many runs in one program: a stack of settings (vectorised) or of anchors (in sequence).

Both call :func:`llc.loop.run_one`, the chains of one run, under ``jax.vmap`` (every
setting of a calibration grid, every weight mask of a refined LLC, every temperature)
or ``jax.lax.map`` (every checkpoint of a training run).
"""

from functools import partial

import jax
import jax.numpy as jnp

from llc import loop

__all__ = ["run_checkpoints", "run_grid", "stack_hypers"]


def stack_hypers(hypers: list[loop.Hyper]) -> loop.Hyper:
    """Stack settings on a leading axis, for :func:`run_grid` or :func:`run_checkpoints`."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *hypers)


@partial(jax.jit, static_argnames=("loss_fn", "config", "stacked_masks"))
def run_grid(
    rng_key,
    anchor,
    data,
    hypers: loop.Hyper,
    direction=None,
    held=None,
    mask=None,
    *,
    loss_fn,
    config,
    stacked_masks=False,
):
    """:func:`llc.loop.run_chains` for a stack of settings, vectorised in one program.

    Every ``hypers`` leaf has a leading settings axis, and with ``stacked_masks`` every
    ``mask`` leaf too (one weight mask per setting). All settings share ``rng_key``, so
    they see the same noise and minibatches (common random numbers).
    """
    one = partial(loop.run_one, loss_fn=loss_fn, config=config)
    mask_axis = 0 if stacked_masks else None
    return jax.vmap(
        lambda h, m: one(rng_key, anchor, data, h, direction, held, None, m),
        in_axes=(0, mask_axis),
    )(hypers, mask)


@partial(jax.jit, static_argnames=("loss_fn", "config"))
def run_checkpoints(
    rng_keys, anchors, data, hypers: loop.Hyper, mask=None, *, loss_fn, config, per_checkpoint=None
):
    """:func:`llc.loop.run_chains` at each of a stack of anchors, inside one program.

    ``anchors``, ``hypers`` and ``rng_keys`` share a leading checkpoint axis; the runs go
    one after the other (``lax.map``), so memory stays that of one run.
    ``per_checkpoint``: a dict of data entries stacked on that axis too (the relabelled
    targets of each checkpoint), merged into the dict ``data`` for its checkpoint.
    """
    one = partial(loop.run_one, loss_fn=loss_fn, config=config)
    if per_checkpoint is None:
        return jax.lax.map(
            lambda xs: one(xs[0], xs[1], data, xs[2], None, None, None, mask),
            (rng_keys, anchors, hypers),
        )
    return jax.lax.map(
        lambda xs: one(xs[0], xs[1], {**data, **xs[3]}, xs[2], None, None, None, mask),
        (rng_keys, anchors, hypers, per_checkpoint),
    )
