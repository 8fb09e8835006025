"""Flax and equinox models in, the canonical ``(params, loss_fn)`` out.

:func:`llc.estimate_llc` works on any ``loss_fn(params, batch)`` over any parameter pytree.
These adapters turn a model into that pair (and :func:`predict_from_nnx` an NNX module into
``(params, predict_fn)``, what :func:`llc.relabel` takes): the trainable parameters become
the pytree that is sampled, everything else (batch statistics, RNG streams, other
collections, integer and static fields) stays frozen at w* inside ``loss_fn``. The batch
is ``(inputs, targets)`` and the loss is ``criterion(model(inputs), targets)``, a scalar
mean over the batch.

flax and equinox are imported only when an adapter is called (equinox is optional:
``pip install 'llc[equinox]'``).
"""

from collections.abc import Callable

import jax

from llc._types import ArrayTree, LossFn

__all__ = ["from_equinox", "from_linen", "from_nnx", "predict_from_nnx"]


def _nnx():
    try:
        from flax import nnx
    except ImportError as err:  # pragma: no cover - flax is a dependency
        msg = "llc.from_nnx needs flax (pip install 'flax>=0.12')."
        raise ImportError(msg) from err
    return nnx


def _eqx():
    try:
        import equinox as eqx  # noqa: PLC0415 (optional dependency)
    except ImportError as err:
        msg = "llc.from_equinox needs equinox: pip install 'llc[equinox]' (or 'equinox>=0.11')."
        raise ImportError(msg) from err
    return eqx


def _check_criterion(criterion) -> None:
    if not callable(criterion):
        msg = (
            "criterion must be callable as criterion(outputs, targets) -> scalar mean loss; "
            f"got {type(criterion).__name__}."
        )
        raise TypeError(msg)


def predict_from_nnx(model) -> tuple[ArrayTree, Callable]:
    """A flax NNX module as ``(params, predict_fn)``, for :func:`llc.relabel`.

    The module is cloned and put in evaluation mode (``model.eval()``: dropout off,
    batch norm on its running statistics), so its outputs are a deterministic function
    of the parameters. Only ``nnx.Param`` variables are parameters; batch statistics, RNG
    state and every other variable stay as they are at w*.

    Args:
        model: an ``nnx.Module`` at w*.

    Returns:
        ``(params, predict_fn)``: ``params`` a nested dict of arrays (``nnx.to_pure_dict``
        of the parameters), ``predict_fn(params, inputs) -> model(inputs)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> params, predict_fn = predict_from_nnx(model)
        >>> x = jnp.ones((5, 3))
        >>> bool(jnp.allclose(predict_fn(params, x), model(x)))
        True
    """
    nnx = _nnx()
    if not isinstance(model, nnx.Module):
        msg = f"model must be a flax nnx.Module; got {type(model).__name__}."
        raise TypeError(msg)
    model = nnx.clone(model)
    model.eval()
    graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)

    def predict_fn(p, inputs):
        state = jax.tree.map(lambda x: x, param_state)  # a fresh copy to fill in
        nnx.replace_by_pure_dict(state, p)
        return nnx.merge(graphdef, state, rest)(inputs)

    return nnx.to_pure_dict(param_state), predict_fn


def from_nnx(model, criterion: Callable) -> tuple[ArrayTree, LossFn]:
    """A flax NNX module as ``(params, loss_fn)``.

    The module's outputs are :func:`predict_from_nnx`'s: a clone in evaluation mode,
    only its ``nnx.Param`` variables sampled, every other variable held at w*.

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
    _check_criterion(criterion)
    params, predict_fn = predict_from_nnx(model)

    def loss_fn(p, batch):
        inputs, targets = batch
        return criterion(predict_fn(p, inputs), targets)

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


def from_equinox(model, criterion: Callable, *, batched: bool = False) -> tuple[ArrayTree, LossFn]:
    """An equinox module as ``(params, loss_fn)``.

    The module is put in inference mode (``eqx.nn.inference_mode``: dropout off), so the
    loss is a deterministic function of the parameters. Its floating-point array leaves
    (``eqx.is_inexact_array``) are sampled; every other leaf (integer arrays, Python
    numbers, activation functions, static fields) stays as it is at w*, closed over in
    ``loss_fn`` (``eqx.partition`` / ``eqx.combine``). A stateful model (one called with
    an ``eqx.nn.State``) needs a ``loss_fn`` of its own.

    Args:
        model: an ``eqx.Module`` at the trained point w*.
        criterion: ``criterion(outputs, targets) -> scalar``, the mean loss over a batch.
        batched: whether ``model`` takes a whole batch. Default False: it maps one
            sample, as equinox's layers do, and is ``jax.vmap``-ed over the batch's
            leading axis (for a sequence model: one ``(positions,)`` row of tokens).

    Returns:
        ``(params, loss_fn)``: ``params`` the module with only its floating-point arrays
        (``eqx.partition(model, eqx.is_inexact_array)[0]``, ``None`` elsewhere),
        ``loss_fn(params, (inputs, targets))``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import equinox as eqx
        >>> model = eqx.nn.MLP(3, 1, width_size=4, depth=1, key=jax.random.key(0))
        >>> params, loss_fn = from_equinox(model, lambda out, y: jnp.mean((out - y) ** 2))
        >>> [p.shape for p in jax.tree.leaves(params)]
        [(4, 3), (4,), (1, 4), (1,)]
        >>> x, y = jnp.ones((5, 3)), jnp.zeros((5, 1))
        >>> bool(jnp.isclose(loss_fn(params, (x, y)), jnp.mean(jax.vmap(model)(x) ** 2)))
        True
    """
    eqx = _eqx()
    if not isinstance(model, eqx.Module):
        msg = f"model must be an equinox eqx.Module; got {type(model).__name__}."
        raise TypeError(msg)
    _check_criterion(criterion)
    model = eqx.nn.inference_mode(model, True)
    params, frozen = eqx.partition(model, eqx.is_inexact_array)
    if not jax.tree.leaves(params):
        msg = (
            f"model ({type(model).__name__}) has no floating-point array to sample "
            "(eqx.is_inexact_array is false for every leaf)."
        )
        raise ValueError(msg)

    def loss_fn(p, batch):
        inputs, targets = batch
        net = eqx.combine(p, frozen)
        outputs = net(inputs) if batched else jax.vmap(net)(inputs)
        return criterion(outputs, targets)

    return params, loss_fn
