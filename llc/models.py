"""Flax models in, the canonical ``(params, loss_fn)`` out.

:func:`llc.estimate_llc` works on any ``loss_fn(params, batch)`` over any parameter pytree.
These adapters turn a flax model into that pair: the trainable parameters become a plain
nested dict, everything else (batch statistics, RNG streams, other collections) stays
frozen at w* inside ``loss_fn``. The batch is ``(inputs, targets)`` and the loss is
``criterion(model(inputs), targets)``, a scalar mean over the batch.

flax is imported only when an adapter is called.
"""

from collections.abc import Callable

import jax

from llc._types import ArrayTree, LossFn

__all__ = ["from_linen", "from_nnx"]


def _nnx():
    try:
        from flax import nnx
    except ImportError as err:  # pragma: no cover - flax is a dependency
        msg = "llc.from_nnx needs flax (pip install 'flax>=0.12')."
        raise ImportError(msg) from err
    return nnx


def _check_criterion(criterion) -> None:
    if not callable(criterion):
        msg = (
            "criterion must be callable as criterion(outputs, targets) -> scalar mean loss; "
            f"got {type(criterion).__name__}."
        )
        raise TypeError(msg)


def from_nnx(model, criterion: Callable) -> tuple[ArrayTree, LossFn]:
    """A flax NNX module as ``(params, loss_fn)``.

    The module is cloned and put in evaluation mode (``model.eval()``: dropout off,
    batch norm on its running statistics), so the loss is a deterministic function of
    the parameters. Only ``nnx.Param`` variables are sampled; batch statistics, RNG
    state and every other variable stay as they are at w*.

    Args:
        model: an ``nnx.Module`` at the trained point w*.
        criterion: ``criterion(outputs, targets) -> scalar``, the mean loss over a batch.

    Returns:
        ``(params, loss_fn)``: ``params`` a nested dict of arrays (``nnx.to_pure_dict``
        of the parameters), ``loss_fn(params, (inputs, targets))``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        >>> params, loss_fn = from_nnx(model, lambda out, y: jnp.mean((out - y) ** 2))
        >>> sorted(params)
        ['bias', 'kernel']
        >>> x, y = jnp.ones((5, 3)), jnp.zeros((5, 1))
        >>> bool(jnp.isclose(loss_fn(params, (x, y)), jnp.mean(model(x) ** 2)))
        True
    """
    nnx = _nnx()
    if not isinstance(model, nnx.Module):
        msg = f"model must be a flax nnx.Module; got {type(model).__name__}."
        raise TypeError(msg)
    _check_criterion(criterion)
    model = nnx.clone(model)
    model.eval()
    graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)

    def loss_fn(p, batch):
        inputs, targets = batch
        state = jax.tree.map(lambda x: x, param_state)  # a fresh copy to fill in
        nnx.replace_by_pure_dict(state, p)
        return criterion(nnx.merge(graphdef, state, rest)(inputs), targets)

    return params, loss_fn


def from_linen(
    apply_fn: Callable, variables, criterion: Callable, **apply_kwargs
) -> tuple[ArrayTree, LossFn]:
    """A flax Linen model as ``(params, loss_fn)``.

    Args:
        apply_fn: the model's ``apply`` (e.g. ``model.apply``).
        variables: its variables at w*, a mapping with a ``"params"`` collection; every
            other collection (e.g. ``"batch_stats"``) is held fixed.
        criterion: ``criterion(outputs, targets) -> scalar``, the mean loss over a batch.
        **apply_kwargs: passed to every ``apply`` call, e.g. ``train=False`` so batch
            norm uses its running statistics and dropout is off (the model must not
            try to mutate a collection).

    Returns:
        ``(params, loss_fn)`` with ``params = variables["params"]`` and
        ``loss_fn(params, (inputs, targets))``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import flax.linen as nn
        >>> model = nn.Dense(2)
        >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> params, loss_fn = from_linen(model.apply, variables,
        ...                              lambda out, y: jnp.mean((out - y) ** 2))
        >>> sorted(params)
        ['bias', 'kernel']
        >>> float(loss_fn(params, (jnp.zeros((4, 3)), jnp.zeros((4, 2)))))
        0.0
    """
    if not callable(apply_fn):
        msg = f"apply_fn must be the model's apply function; got {type(apply_fn).__name__}."
        raise TypeError(msg)
    _check_criterion(criterion)
    try:
        collections = dict(variables)
    except (TypeError, ValueError):
        collections = None
    if collections is None or "params" not in collections:
        msg = (
            "variables must be the model's variables, a mapping with a 'params' collection "
            "(what model.init returns)."
        )
        raise ValueError(msg)
    params = collections.pop("params")

    def loss_fn(p, batch):
        inputs, targets = batch
        outputs = apply_fn({"params": p, **collections}, inputs, **apply_kwargs)
        return criterion(outputs, targets)

    return params, loss_fn
