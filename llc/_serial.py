"""Saving result types to one ``.npz`` file: arrays as arrays, the rest as JSON. No pickle.

A NamedTuple or dataclass becomes ``{"__type__": name, field: value, ...}``, a NumPy array
a reference to an entry of the archive, a tuple ``{"__tuple__": [...]}``; everything else
must be a JSON value (floats may be NaN or inf). :func:`load` rebuilds the objects from the
types it is given by name.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

_META = "__meta__"


def _encode(obj, arrays: dict):
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__") and not np.isscalar(obj):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(obj)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "_fields"):  # NamedTuple
        fields = {k: _encode(getattr(obj, k), arrays) for k in obj._fields}
        return {"__type__": type(obj).__name__, **fields}
    if dataclasses.is_dataclass(obj):
        fields = {f.name: _encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj)}
        return {"__type__": type(obj).__name__, **fields}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _encode(v, arrays) for k, v in obj.items()}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    msg = f"cannot save a value of type {type(obj).__name__}"
    raise TypeError(msg)


def _decode(obj, arrays, types: dict):
    if isinstance(obj, list):
        return [_decode(v, arrays, types) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays, types) for v in obj["__tuple__"])
    fields = {k: _decode(v, arrays, types) for k, v in obj.items() if k != "__type__"}
    if "__type__" in obj:
        return types[obj["__type__"]](**fields)
    return fields


def save(obj, path) -> Path:
    """Write ``obj`` to ``path`` (``.npz`` added if missing); returns the path written."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays: dict = {}
    meta = json.dumps(_encode(obj, arrays))
    with path.open("wb") as f:
        np.savez(f, **arrays, **{_META: np.array(meta)})
    return path


def load(path, types: dict):
    """Read what :func:`save` wrote, rebuilding the objects from ``types`` (name -> type)."""
    with np.load(Path(path), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if k != _META}
        meta = json.loads(str(archive[_META]))
    return _decode(meta, arrays, types)
