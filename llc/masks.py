"""Weight masks for the refined LLC: which weights a chain may move.

A mask has the pytree structure of the parameters; each leaf is a bool (the whole leaf)
or a boolean array broadcastable to it. Pass one as ``estimate_llc(...,
weight_mask=mask)``, or several as ``estimate_refined_llc(..., masks={name: mask})``.
Paths are the parameters' key paths joined by ``/`` (``"layers/0/kernel"``).
"""

import re

import jax
import numpy as np

from llc._types import ArrayTree

__all__ = ["attention_heads", "by_path", "layers", "path_of"]

_ATTENTION = ("query", "key", "value", "out")


def path_of(key_path) -> str:
    """A JAX key path as ``"a/b/c"``.

    Examples:
        >>> path_of(jax.tree_util.tree_flatten_with_path({"a": [0, 1]})[0][1][0])
        'a/1'
    """
    parts = []
    for k in key_path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def by_path(params: ArrayTree, pattern: str) -> ArrayTree:
    """The leaves whose ``"a/b/c"`` path matches the regular expression ``pattern``.

    Examples:
        >>> params = {"encoder": {"kernel": np.zeros(2)}, "head": {"kernel": np.zeros(3)}}
        >>> by_path(params, "^head/")
        {'encoder': {'kernel': False}, 'head': {'kernel': True}}
    """
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.search(path_of(p))), params)


def layers(params: ArrayTree) -> dict[str, ArrayTree]:
    """One mask per top-level entry of ``params`` (a module, a layer, a tuple element).

    Examples:
        >>> sorted(layers({"dense1": {"w": np.zeros(2)}, "dense2": {"w": np.zeros(2)}}))
        ['dense1', 'dense2']
        >>> list(layers((np.zeros(2), np.zeros(3))))
        ['0', '1']
    """
    tops = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        top = path_of(path[:1])
        if top not in tops:
            tops.append(top)
    if len(tops) < 2:
        msg = "params has a single top-level entry; use llc.masks.by_path to split it."
        raise ValueError(msg)
    return {
        top: jax.tree_util.tree_map_with_path(lambda p, _, t=top: path_of(p[:1]) == t, params)
        for top in tops
    }


def attention_heads(
    params: ArrayTree, num_heads: int, path: str | None = None
) -> dict[str, ArrayTree]:
    """One mask per head of every flax multi-head attention layer in ``params``.

    A layer is a node with ``query``, ``key``, ``value`` and ``out`` entries (flax's
    ``nnx.MultiHeadAttention`` and linen's ``MultiHeadDotProductAttention`` alike): head
    ``h`` owns ``query``/``key``/``value`` kernels ``[:, h]`` and biases ``[h]`` and the
    output kernel ``[h]``. The output bias is shared by all heads and gets a mask of its
    own, ``"<layer>/shared"``, so the masks of one layer partition its attention weights.

    Args:
        params: the parameters (e.g. from :func:`llc.from_nnx`).
        num_heads: heads per layer (the head axis must have this length).
        path: a regular expression; only layers whose path matches (default: all).

    Returns:
        ``{"<layer path>/head_<h>": mask, ..., "<layer path>/shared": mask}``.

    Examples:
        >>> from flax import nnx
        >>> layer = nnx.MultiHeadAttention(2, 8, decode=False, rngs=nnx.Rngs(0))
        >>> params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
        >>> masks = attention_heads(params, 2)
        >>> sorted(masks)
        ['head_0', 'head_1', 'shared']
        >>> masks["head_1"]["query"]["kernel"].shape, masks["head_1"]["out"]["bias"]
        ((8, 2, 4), False)
    """
    found = _attention_layers(params, (), path)
    if not found:
        msg = (
            "no multi-head attention layer (a node with query, key, value and out) was found"
            + (f" at a path matching {path!r}" if path else "")
            + " in params."
        )
        raise ValueError(msg)
    masks = {}
    for where in found:
        prefix = "/".join(where)
        for h in range(num_heads):
            masks[f"{prefix}/head_{h}".lstrip("/")] = _head_mask(params, where, h, num_heads)
        masks[f"{prefix}/shared".lstrip("/")] = _head_mask(params, where, None, num_heads)
    return masks


def _attention_layers(node, where: tuple, path: str | None) -> list[tuple]:
    if not hasattr(node, "keys"):
        return []
    if all(k in node for k in _ATTENTION):
        return [where] if path is None or re.search(path, "/".join(where)) else []
    out = []
    for k in node:
        out += _attention_layers(node[k], (*where, str(k)), path)
    return out


def _head_mask(params, where: tuple, head: int | None, num_heads: int):
    """Head ``head``'s mask in the layer at ``where`` (None: the shared output bias)."""

    def leaf(path, x):
        keys = path_of(path).split("/")
        if tuple(keys[: len(where)]) != where or len(keys) != len(where) + 2:
            return False
        part, name = keys[len(where)], keys[-1]
        if part not in _ATTENTION:
            return False
        shape = np.shape(x)
        if head is None:
            return part == "out" and name == "bias"
        if part == "out" and name == "bias":
            return False
        axis = 0 if part == "out" or name == "bias" else 1
        if shape[axis] != num_heads:
            msg = (
                f"{'/'.join(keys)} has {shape[axis]} heads on axis {axis}, not num_heads = "
                f"{num_heads}."
            )
            raise ValueError(msg)
        mask = np.zeros(shape, bool)
        index = [slice(None)] * len(shape)
        index[axis] = head
        mask[tuple(index)] = True
        return mask

    return jax.tree_util.tree_map_with_path(leaf, params)
