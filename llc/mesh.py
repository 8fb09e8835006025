"""Laying a run over devices: chains x data x model on a ``jax.sharding.Mesh``.

A mesh's axes are named from ``"chains"``, ``"data"`` and ``"model"`` (any subset, any
sizes). The chains split over ``"chains"``; each chain's minibatch over ``"data"`` (its
gradient is then data-parallel: XLA reduces the loss across the axis); the parameters, the
chains' states and the anchor over ``"model"``, leaf by leaf, by ``param_specs`` (a pytree
of ``PartitionSpec`` matching the parameters; default: replicated). The run is one
program that JAX's SPMD partitioner splits; nothing here is a scheme of its own, and the
numbers are those of one device up to the order of floating-point reductions.

Examples:
    >>> import jax, numpy as np
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("chains", "data"))
    >>> mesh_shape(mesh)
    {'chains': 1, 'data': 1}
"""

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llc._types import ArrayTree

__all__ = [
    "AXES",
    "to_host",
    "chain_mesh",
    "check_mesh",
    "check_param_specs",
    "default_param_specs",
    "mesh_shape",
]

AXES = ("chains", "data", "model")
_MIN_SHARDED = 2**16  # default_param_specs shards leaves with at least this many entries


def mesh_shape(mesh: Mesh | None) -> dict:
    """``{axis: size}`` of ``mesh`` (``{}`` for one device without a mesh)."""
    return {} if mesh is None else {name: int(size) for name, size in mesh.shape.items()}


def chain_mesh(num_chains: int, num_devices: int | None) -> Mesh | None:
    """A one-axis mesh ("chains") over the local devices, or None for a single device.

    ``num_devices=None`` takes the largest number of local devices that divides
    ``num_chains``; an explicit number must divide it and not exceed the devices present.
    """
    devices = jax.local_devices()
    if num_devices is None:
        num_devices = max(k for k in range(1, len(devices) + 1) if num_chains % k == 0)
    if num_devices <= 1:
        return None
    return Mesh(np.array(devices[:num_devices]), ("chains",))


def check_mesh(mesh, *, num_chains: int, batch_size: int | None, num_devices) -> None:
    """The mesh's axes are known and divide what they split; a clear error otherwise."""
    if not isinstance(mesh, Mesh):
        msg = f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}."
        raise TypeError(msg)
    if num_devices is not None:
        msg = "pass mesh or num_devices (the short form of a chains-only mesh), not both."
        raise ValueError(msg)
    unknown = [a for a in mesh.axis_names if a not in AXES]
    if unknown:
        msg = f"mesh axes must be named from {AXES}; got {list(mesh.axis_names)}."
        raise ValueError(msg)
    shape = mesh_shape(mesh)
    if num_chains % shape.get("chains", 1):
        msg = f"the mesh's chains axis ({shape['chains']}) must divide num_chains = {num_chains}."
        raise ValueError(msg)
    if shape.get("data", 1) > 1 and (batch_size is None or batch_size % shape["data"]):
        msg = (
            f"the mesh's data axis ({shape['data']}) splits each minibatch: it needs a "
            f"batch_size that it divides; got batch_size = {batch_size}."
        )
        raise ValueError(msg)


def check_param_specs(param_specs, params, mesh: Mesh | None) -> tuple | None:
    """``param_specs`` as a flat tuple of ``PartitionSpec`` per parameter leaf (or None)."""
    if param_specs is None:
        return None
    if mesh is None:
        msg = "param_specs lay the parameters over a mesh's model axis: pass mesh too."
        raise ValueError(msg)
    treedef = jax.tree.structure(params)
    try:
        specs = treedef.flatten_up_to(param_specs)
    except (ValueError, TypeError):
        msg = "param_specs must be a pytree of PartitionSpec with the structure of params."
        raise ValueError(msg) from None
    for spec, leaf in zip(specs, jax.tree.leaves(params), strict=True):
        if not isinstance(spec, PartitionSpec) or len(spec) > np.ndim(leaf):
            msg = (
                "each param_specs leaf must be a PartitionSpec of at most the leaf's rank; "
                f"got {spec!r} for shape {np.shape(leaf)}."
            )
            raise ValueError(msg)
        for dim, axis in zip(np.shape(leaf), spec, strict=False):
            if axis is not None and (axis != "model" or dim % mesh.shape.get("model", 0)):
                msg = (
                    f"param_specs may only split a dimension over 'model', which must divide "
                    f"it; got {spec!r} for shape {np.shape(leaf)} on mesh {mesh_shape(mesh)}."
                )
                raise ValueError(msg)
    return tuple(specs)


def default_param_specs(params: ArrayTree, mesh: Mesh) -> ArrayTree:
    """Shard every large matrix along its largest axis that the model axis divides.

    Leaves with fewer than 65,536 entries, or no such axis, stay replicated.

    Examples:
        >>> import jax, numpy as np
        >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
        >>> default_param_specs({"w": np.zeros((512, 256)), "b": np.zeros(256)}, mesh)
        {'b': P(), 'w': P('model',)}
    """
    size = mesh.shape.get("model", 1)

    def spec(leaf):
        shape = np.shape(leaf)
        if math.prod(shape) < _MIN_SHARDED:
            return PartitionSpec()
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] % size == 0:
                return PartitionSpec(*[("model" if a == axis else None) for a in range(axis + 1)])
        return PartitionSpec()

    return jax.tree.map(spec, params)


def constrain(mesh: Mesh | None, tree, spec_of):
    """``with_sharding_constraint`` on every leaf, by ``spec_of(leaf)``; no-op without mesh."""
    if mesh is None:
        return tree
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_of(x))), tree
    )


def chain_axis(mesh: Mesh | None) -> str | None:
    """The mesh axis the chains split over, or None."""
    return "chains" if mesh is not None and "chains" in mesh.axis_names else None


def shard_per_chain(mesh, tree):
    """Every leaf's leading (chain) axis over ``"chains"``; the rest replicated."""
    return constrain(mesh, tree, lambda _: PartitionSpec(chain_axis(mesh)))


def shard_batches(mesh, batches):
    """``(chains, batch, ...)`` leaves: chains over ``"chains"``, rows over ``"data"``."""
    data = "data" if mesh is not None and "data" in mesh.axis_names else None
    return constrain(mesh, batches, lambda _: PartitionSpec(chain_axis(mesh), data))


def shard_params(mesh, tree, specs: tuple | None, *, leading_chain: bool):
    """Parameter-shaped leaves by ``specs`` (flat, per leaf), after a chain axis if any."""
    if mesh is None:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    specs = specs or (PartitionSpec(),) * len(leaves)
    out = []
    for leaf, spec in zip(leaves, specs, strict=True):
        full = (chain_axis(mesh), *spec) if leading_chain else tuple(spec)
        out.append(
            jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, PartitionSpec(*full)))
        )
    return jax.tree.unflatten(treedef, out)


def to_host(tree):
    """Every leaf as a host NumPy array, also when it spans other processes' devices.

    On several hosts (``jax.distributed``) a global array is gathered from every process
    (each process gets the whole array); elsewhere this is ``np.asarray``.
    """
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [
        multihost_utils.process_allgather(x, tiled=True)
        if isinstance(x, jax.Array) and not x.is_fully_addressable
        else x
        for x in leaves
    ]
    # one batched device-to-host copy of every leaf (not one blocking copy each)
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in jax.device_get(leaves)])
