"""The trained networks of ``benchmarks/defaults.py``, each with its reference value.

Their LLCs are known from no formula. A tanh MLP trained on scikit-learn's digits gets
its reference from full-batch NUTS at the trained point; a small causal transformer
trained on a copying task, whose full-batch gradient is too slow here for NUTS, gets
its from long fixed-step SGLD runs at two step sizes that must agree
(:func:`long_run_reference`). Both are trained by full-batch Adam (:func:`adam_trained`).
The references are cached (``_suite.cached``): NUTS's in ``nuts_references.json``, the
long runs' in ``long_runs.json``.
"""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
from _suite import cached, nuts_run, run_summary

import llc

NETWORK_BATCH, NETWORK_TRAIN_STEPS = 64, 3000
NETWORK_NUTS = {"key": 5, "chains": 4, "warmup": 300, "draws": 300}
# the transformer: vocabulary, tokens per half sequence, width, heads, sequences
VOCAB, HALF, WIDTH, HEADS, SEQUENCES = 16, 4, 8, 2, 512
# its long runs: two fixed steps, each 4 chains with the same burn-in time (steps x step)
LONG_RUNS = {
    "key": 5,
    "chains": 4,
    "runs": [
        {"step_size": 4e-4, "num_burnin_steps": 30_000, "num_draws": 10_000},
        {"step_size": 2e-4, "num_burnin_steps": 60_000, "num_draws": 10_000},
    ],
}


def digits_mlp_target(widths, seed, quick=False):
    """A tanh MLP trained on all 1,797 of scikit-learn's digits, at its last Adam step.

    ``widths[0]`` = 64 pixels in, ``widths[-1]`` = 10 classes out, tanh between; flax nnx
    with seed ``seed``, Adam (3e-3, full batch) for ``NETWORK_TRAIN_STEPS`` steps, mean
    cross-entropy. Its LLC is known from no formula: the reference is full-batch NUTS
    from the trained point (``NETWORK_NUTS``; cached like the DLN references).
    """
    import optax
    from flax import nnx
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target, jnp.int32)

    class MLP(nnx.Module):
        def __init__(self, rngs):
            pairs = itertools.pairwise(widths)
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairs])

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = jnp.tanh(layer(h))
            return self.layers[-1](h)

    def criterion(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    params, loss_fn = llc.from_nnx(MLP(nnx.Rngs(seed)), criterion)
    data = (x, y)
    params = adam_trained(loss_fn, params, data)
    name = f"{'-'.join(map(str, widths))} tanh MLP digits seed {seed}"
    return network_target(loss_fn, params, data, name, quick)


def adam_trained(loss_fn, params, data):
    """``params`` after ``NETWORK_TRAIN_STEPS`` full-batch Adam (3e-3) steps on ``loss_fn``."""
    import optax

    optimizer = optax.adam(3e-3)

    @jax.jit
    def train(params):
        def update(carry, _):
            params, state = carry
            grads = jax.grad(loss_fn)(params, data)
            updates, state = optimizer.update(grads, state)
            return (optax.apply_updates(params, updates), state), None

        carry, _ = jax.lax.scan(update, (params, optimizer.init(params)), None, NETWORK_TRAIN_STEPS)
        return carry[0]

    return train(params)


def trained_network(loss_fn, params, data, train_loss: float) -> dict:
    """A trained network's target, less its reference (no exact lambda; batch 64)."""
    return {
        "loss_fn": loss_fn,
        "params": params,
        "data": data,
        "d": sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params)),
        "true_lambda": float("nan"),
        "multiplicity": None,
        "batch_size": NETWORK_BATCH,
        "train_loss": train_loss,
    }


def network_target(loss_fn, params, data, name: str, quick: bool) -> dict:
    """A trained network's target: its reference by full-batch NUTS from ``params``.

    The cache key holds ``name`` and the trained point's loss, so a point trained
    elsewhere (another jax version, another machine) gets its own reference.
    """
    target = trained_network(loss_fn, params, data, float(loss_fn(params, data)))
    if quick:
        return {**target, "reference": float("nan"), "reference_kind": "none (--quick)"}
    key = f"{name} adam {NETWORK_TRAIN_STEPS} loss {target['train_loss']:.4e}"
    nuts = cached(key, NETWORK_NUTS, lambda: nuts_run(loss_fn, params, data, NETWORK_NUTS))
    return {
        **target,
        "reference": nuts["llc_mean"],
        "reference_stderr": nuts["llc_stderr"],
        "reference_nuts": nuts,
        "reference_kind": "full-batch NUTS at the trained point (no exact value)",
    }


def transformer_target(seed, quick=False):
    """A one-block causal transformer trained to copy, relabelled (KL) at its trained point.

    Data: ``SEQUENCES`` sequences of ``2 HALF`` tokens, the first half uniform over
    ``VOCAB`` tokens and the second a copy of it (``np.random.default_rng(seed)``). Model
    (flax nnx, seed ``seed``): token and learned positional embeddings of width ``WIDTH``,
    one pre-LayerNorm block (``nnx.MultiHeadAttention`` with ``HEADS`` causal heads, a
    GELU MLP of width ``4 WIDTH``), a final LayerNorm and the unembedding: 1,224
    parameters. Trained by :func:`adam_trained` on the next-token cross-entropy, it is not
    at a minimum of that loss (its gradient is not ~0), so the target is the relabelled
    problem (``llc.relabel(..., divergence="kl")``: the KL to the trained model's own
    next-token distributions), of which the trained point is a global minimum. Reference:
    :func:`long_run_reference`.
    """
    import optax
    from flax import nnx

    half = np.random.default_rng(seed).integers(0, VOCAB, (SEQUENCES, HALF))
    tokens = jnp.asarray(np.concatenate([half, half], axis=1), jnp.int32)

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1 = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, rngs=rngs)
            self.ln2 = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.fc1 = nnx.Linear(WIDTH, 4 * WIDTH, rngs=rngs)
            self.fc2 = nnx.Linear(4 * WIDTH, WIDTH, rngs=rngs)

        def __call__(self, x):
            x = x + self.attn(self.ln1(x), is_causal=True)
            return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))

    class Transformer(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
            self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (2 * HALF, WIDTH)))
            self.block = Block(rngs)
            self.ln_f = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.unembed = nnx.Linear(WIDTH, VOCAB, rngs=rngs)

        def __call__(self, t):
            x = self.block(self.embed(t) + self.pos[: t.shape[-1]])
            return self.unembed(self.ln_f(x))[:, :-1]  # the last position predicts nothing

    params, predict_fn = llc.predict_from_nnx(Transformer(nnx.Rngs(seed)))

    def next_token_loss(params, inputs):
        logits = predict_fn(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, inputs[:, 1:]).mean()

    params = adam_trained(next_token_loss, params, tokens)
    loss_fn, data = llc.relabel(predict_fn, params, tokens, divergence="kl")
    target = trained_network(loss_fn, params, data, float(next_token_loss(params, tokens)))
    if quick:
        return {**target, "reference": float("nan"), "reference_kind": "none (--quick)"}
    name = f"transformer copy seed {seed} adam {NETWORK_TRAIN_STEPS}"
    key = f"{name} loss {target['train_loss']:.4e}"
    ref = cached(key, LONG_RUNS, lambda: long_run_reference(loss_fn, params, data), "long_runs")
    return {
        **target,
        "reference": ref["llc_mean"],
        "reference_stderr": ref["llc_stderr"],
        "reference_long_runs": ref,
        "reference_kind": "long fixed-step SGLD runs at two steps that agree (no exact value)",
    }


def long_run_reference(loss_fn, params, data) -> dict:
    """The LLC from the long fixed-step runs of ``LONG_RUNS``, checked for step bias.

    Each run: 4 chains, batch ``NETWORK_BATCH``, the library's other defaults. The
    reference is the smaller step's estimate; the larger step's must agree with it within
    two combined standard errors (SGLD's bias is first order in the step, so agreement
    bounds it), and neither run may be flagged. Otherwise this raises: a reference that
    fails its own checks is not one.
    """
    runs = []
    for i, settings in enumerate(LONG_RUNS["runs"]):
        start = time.perf_counter()
        r = llc.estimate_llc(
            jax.random.fold_in(jax.random.key(LONG_RUNS["key"]), i),
            loss_fn,
            params,
            data,
            num_chains=LONG_RUNS["chains"],
            batch_size=NETWORK_BATCH,
            progress_bar=False,
            **settings,
        )
        runs.append({**settings, **run_summary(r, start)})
    coarse, fine = runs
    gap = coarse["llc_mean"] - fine["llc_mean"]
    bound = 2 * np.hypot(coarse["llc_stderr"], fine["llc_stderr"])
    if coarse["flags"] or fine["flags"] or abs(gap) > bound:
        raise RuntimeError(f"long runs disagree or are flagged: {runs}")
    return {
        "llc_mean": fine["llc_mean"],
        "llc_stderr": fine["llc_stderr"],
        "step_gap": gap,
        "runs": runs,
        "wall_s": sum(r["wall_s"] for r in runs),
    }
