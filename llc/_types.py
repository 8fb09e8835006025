"""Type aliases shared across the library."""

from collections.abc import Callable
from typing import Any

import jax

PRNGKey = jax.Array
Array = jax.Array
ArrayTree = Any
ArrayLikeTree = Any
Batch = Any
LossFn = Callable[[ArrayTree, Batch], Array]
"""``loss_fn(params, batch) -> scalar``: the mean loss over a batch."""
