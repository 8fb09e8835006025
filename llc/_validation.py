"""Eager checks of user input: each error names the argument and the fix."""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def check_key(rng_key) -> jax.Array:
    """A typed key or a raw uint32[2] key; anything else is a TypeError."""
    if isinstance(rng_key, jax.Array):
        if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key) and rng_key.shape == ():
            return rng_key
        if rng_key.dtype == jnp.uint32 and rng_key.shape == (2,):
            return rng_key
    msg = (
        f"rng_key must be a single JAX PRNG key, e.g. jax.random.key(0); got "
        f"{type(rng_key).__name__} {getattr(rng_key, 'shape', '')}."
    )
    raise TypeError(msg)


def check_count(name: str, value, *, minimum: int) -> int:
    """An integer >= minimum (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be an integer >= {minimum}; got {value!r}."
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be >= {minimum}; got {value}."
        raise ValueError(msg)
    return int(value)


def check_real(name: str, value, *, allow_zero: bool, hint: str = "") -> float:
    """A finite real number > 0 (or >= 0 when ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | np.ndarray):
        msg = f"{name} must be a real number; got {value!r}."
        raise TypeError(msg)
    value = float(value)
    bad = not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
    if bad:
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a finite number {bound}; got {value}.{hint}"
        raise ValueError(msg)
    return value


def check_data(data) -> int:
    """Every leaf an array with the same leading axis; returns that length n."""
    leaves, treedef = jax.tree.flatten(data)
    if not leaves:
        msg = "data must be a pytree of arrays sharing a leading axis, e.g. (x, y); got no arrays."
        raise ValueError(msg)
    lengths = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        shape = np.shape(leaf)
        where = jax.tree_util.keystr(path) or "data"
        if len(shape) == 0:
            msg = (
                f"data{where if where != 'data' else ''} is a scalar; every leaf of data "
                "needs a leading sample axis (shape (n, ...))."
            )
            raise ValueError(msg)
        lengths[where] = shape[0]
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"data{k}: {v}" for k, v in lengths.items())
        msg = (
            f"every leaf of data must have the same leading (sample) axis; got {listing}. "
            "Pass arrays with one row per sample."
        )
        raise ValueError(msg)
    n = next(iter(lengths.values()))
    if n < 1:
        msg = "data has no samples (leading axis of length 0)."
        raise ValueError(msg)
    return int(n)


def check_params(params) -> int:
    """Floating-point, finite leaves; returns the number of parameters d."""
    if callable(params) and type(params).__module__.startswith("flax"):
        msg = (
            f"params is a flax model ({type(params).__name__}), not its parameters; pass "
            "params, loss_fn = llc.from_nnx(model, criterion) (llc.from_linen for a linen "
            "module and its variables)."
        )
        raise TypeError(msg)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        msg = "params must be a pytree with at least one array leaf."
        raise ValueError(msg)
    size = 0
    for path, leaf in leaves:
        where = "params" + jax.tree_util.keystr(path)
        arr = np.asarray(leaf)
        if arr.dtype in (jnp.bfloat16, np.float16):
            msg = (
                f"{where} has dtype {arr.dtype}, which llc does not support: the estimate "
                "is a difference of losses, nbeta (L(w) - L(w*)), far below 16-bit "
                "resolution. Cast to float32, e.g. jax.tree.map(lambda x: "
                "x.astype(jnp.float32), params), and compute the loss in float32."
            )
            raise TypeError(msg)
        if not np.issubdtype(arr.dtype, np.floating):
            msg = (
                f"{where} has dtype {arr.dtype}; every leaf of params must be a "
                "floating-point array (move integer state out of params, into loss_fn)."
            )
            raise TypeError(msg)
        if not np.all(np.isfinite(arr)):
            msg = f"{where} contains NaN or inf; the LLC is estimated at a finite point w*."
            raise ValueError(msg)
        size += arr.size
    return size


def check_batch_size(batch_size, n: int) -> int | None:
    """None (full batch) or an integer in 1..n."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        msg = f"batch_size must be None (full batch) or an integer in 1..{n}; got {batch_size!r}."
        raise TypeError(msg)
    if not 1 <= batch_size <= n:
        msg = (
            f"batch_size must be in 1..{n} (the number of samples in data); got "
            f"{batch_size}. Use batch_size=None for full-batch SGLD."
        )
        raise ValueError(msg)
    return int(batch_size)


def check_callable(loss_fn) -> None:
    """``loss_fn`` must be a function of ``(params, batch)``."""
    if not callable(loss_fn):
        msg = f"loss_fn must be callable as loss_fn(params, batch); got {type(loss_fn).__name__}."
        raise TypeError(msg)


def check_loss_shape(loss_fn, params, batch) -> None:
    """``loss_fn(params, batch)`` must return a scalar (checked by abstract evaluation)."""
    out = jax.eval_shape(loss_fn, params, batch)
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        msg = (
            f"loss_fn(params, batch) must return a scalar (the mean loss over the batch); "
            f"it returned shape {shape}. Reduce it with jnp.mean."
        )
        raise ValueError(msg)
    if not jnp.issubdtype(out.dtype, jnp.floating):
        msg = f"loss_fn must return a floating-point scalar; got dtype {out.dtype}."
        raise TypeError(msg)


def check_finite_loss(value: float) -> None:
    """The full-data loss at w* must be finite."""
    if not math.isfinite(value):
        msg = (
            f"loss_fn at params (the full-data loss L_n(w*)) is {value}; the LLC needs a "
            "finite loss at w*. Check params and data."
        )
        raise ValueError(msg)


def check_finite_gradient(norm: float) -> None:
    """The full-data gradient at w* must be finite."""
    if not math.isfinite(norm):
        msg = (
            f"the gradient of loss_fn at params (the full-data grad L_n(w*)) has norm {norm}; "
            "the LLC needs a differentiable loss at w*. Check params and data, and "
            "functions like sqrt or log at 0 in loss_fn."
        )
        raise ValueError(msg)


def check_like_params(name: str, tree, params) -> None:
    """``tree`` must have the pytree structure and leaf shapes of ``params``."""
    same = jax.tree.structure(tree) == jax.tree.structure(params) and all(
        np.shape(a) == np.shape(b)
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(params), strict=True)
    )
    if not same:
        msg = f"{name} must be a pytree with the same structure and shapes as params."
        raise ValueError(msg)
