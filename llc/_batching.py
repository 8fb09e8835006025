"""Per-chain minibatches drawn inside the compiled loop.

At every step each chain draws ``batch_size`` row indices uniformly at random from its
own key stream: no two chains share a batch sequence, and the batch ``B_t`` is
independent of the position ``w_t``. That independence is what makes the recorded
``L_B(w_t)`` (and the control variate ``L_B(w_t) - L_B(w*)``) unbiased for
``L_n(w_t) - L_n(w*)``.

Epoch-wise shuffling (without replacement within an epoch) breaks it: ``B_t`` is then
drawn from the samples the chain has *not* just been fitted to, so ``L_B(w_t)`` reads
like a held-out loss and overestimates ``L_n(w_t)``. On a 6-parameter regression
(n = 10^4, batch 500, step 1e-4) that bias was +5% of the LLC, against a prediction
matched to within one standard error by independent draws. Hence independent draws.
"""

import jax
import jax.numpy as jnp

from llc._types import Array, Batch, PRNGKey


def sample_indices(key: PRNGKey, num_data: int, batch_size: int) -> Array:
    """``batch_size`` row indices drawn uniformly from ``range(num_data)``: O(batch)."""
    return jax.random.randint(key, (batch_size,), 0, num_data)


def gather(data: Batch, idx: Array) -> Batch:
    """Rows ``idx`` of every leaf of ``data``."""
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
