"""Per-layer (refined) LLCs of a deep linear network against exact values, and their cost.

Question: does ``estimate_refined_llc`` give each layer's LLC, and what does running k masks
in one compiled call cost against k single ``estimate_llc`` calls (time and memory)?

Exact values: at a teacher point (realisable targets), with every other layer held, the loss
of a deep linear network is exactly quadratic in one layer ``l``, with Hessian
``(2 / e) (P' Sx P) kron (Q Q')`` (``P = W_1 ... W_{l-1}``, ``Q = W_{l+1} ... W_L``, ``Sx``
the inputs' second moment, ``e`` outputs). Full-batch SGLD on a quadratic is ULA, whose
expectation at any step is known in closed form (slt-reference 3.1), so every layer's
target is exact. The teacher's last layer has rank 2, so the layers' targets differ from d/2.

A second part draws what the docs show: per-layer LLCs of a tanh MLP (flax NNX) along its
training on scikit-learn's digits (all layers' masks in one call per checkpoint), and the loss
kernel of eight held-out digits at the last checkpoint (``refined_mlp.png``).

Usage: ``python benchmarks/refined.py [--quick] [--out DIR]``; results in
``benchmarks/results/refined/`` (``refined.json``, ``refined_mlp.png``).
"""

import argparse
import itertools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine, parse_args, write

import llc

WIDTHS, QUICK_WIDTHS = (8, 12, 12, 12, 8), (4, 5, 5, 4)


def chain_mse(params, batch):
    out = batch[0]
    for w in params:
        out = out @ w
    return jnp.mean((out - batch[1]) ** 2)


def network(widths, n, seed=0):
    """A teacher with a rank-2 last layer, realisable targets, float32 parameters."""
    rng = np.random.default_rng(seed)
    layers = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in itertools.pairwise(widths)]
    last = layers[-1]
    u, s, vt = np.linalg.svd(last, full_matrices=False)
    layers[-1] = (u[:, :2] * s[:2]) @ vt[:2]
    x = rng.standard_normal((n, widths[0]))
    y = np.linalg.multi_dot([x, *layers]) if len(layers) > 1 else x @ layers[0]
    params = tuple(jnp.asarray(w, jnp.float32) for w in layers)
    return params, (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)), (x, layers)


def layer_eigenvalues(x, layers, index):
    """Eigenvalues of the loss's Hessian in layer ``index`` (the others held), float64."""
    eye_in, eye_out = np.eye(layers[0].shape[0]), np.eye(layers[-1].shape[1])
    p = np.linalg.multi_dot([eye_in, *layers[:index], np.eye(layers[index].shape[0])])
    q = np.linalg.multi_dot([np.eye(layers[index].shape[1]), *layers[index + 1 :], eye_out])
    sx = x.T @ x / len(x)
    outputs = layers[-1].shape[1]
    mu = (2 / outputs) * np.outer(np.linalg.eigvalsh(p.T @ sx @ p), np.linalg.eigvalsh(q @ q.T))
    return np.clip(mu.ravel(), 0, None)


def ula_target(mu, nbeta, gamma, step):
    p = nbeta * mu + gamma
    return float(0.5 * np.sum(nbeta * mu / (p * (1 - step * p / 4))))


def memory(plan, num_masks):
    """Bytes of the compiled program (arguments + temporaries + outputs), 1 and k masks."""
    hyper = llc.loop.make_hyper(
        plan.step_size, plan.nbeta, plan.localization, plan.init_loss, jnp.float32, 0, plan.options
    )
    single = (
        llc.loop.run_chains.lower(
            plan.rng_key,
            plan.params,
            plan.data,
            hyper,
            None,
            None,
            None,
            plan.mask,
            loss_fn=plan.loss_fn,
            config=plan.config,
        )
        .compile()
        .memory_analysis()
    )
    masks = jax.tree.map(lambda m: jnp.stack([m] * num_masks), plan.mask)
    grid = (
        llc.stacked.run_grid.lower(
            plan.rng_key,
            plan.params,
            plan.data,
            llc.stacked.stack_hypers([hyper] * num_masks),
            None,
            None,
            masks,
            loss_fn=plan.loss_fn,
            config=plan.config,
            stacked_masks=True,
        )
        .compile()
        .memory_analysis()
    )

    def total(m):
        if m is None:
            return None
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)

    return total(single), total(grid)


def mlp_along_training(quick: bool) -> dict:
    """Per-layer LLCs of a digits MLP at checkpoints of its training, and a loss kernel."""
    import optax
    from flax import nnx
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target, jnp.int32)
    train, held = (x[:1500], y[:1500]), (x[1500:1508], y[1500:1508])

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 16 if quick else 32, rngs=rngs)
            self.out = nnx.Linear(16 if quick else 32, 10, rngs=rngs)

        def __call__(self, inputs):
            return self.out(jnp.tanh(self.hidden(inputs)))

    def criterion(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    params, loss_fn = llc.from_nnx(MLP(nnx.Rngs(0)), criterion)
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)

    @jax.jit
    def update(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params, train)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    every, total = (50, 100) if quick else (100, 800)
    checkpoints, steps = [], []
    for step in range(total + 1):
        if step % every == 0 and step > 0:
            checkpoints.append(params)
            steps.append(step)
        params, state, _ = update(params, state)
    masks = llc.masks.layers(params)
    settings = dict(
        step_size=1e-5,
        localization=100.0,
        batch_size=100,
        num_chains=4,
        num_draws=100 if quick else 1000,
        num_burnin_steps=100 if quick else 1000,
        progress_bar=False,
    )
    per_layer = {name: [] for name in masks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for params in checkpoints:
            out = llc.estimate_refined_llc(
                jax.random.key(1), loss_fn, params, train, masks=masks, **settings
            )
            for name, r in out.items():
                per_layer[name].append((r.llc_mean, r.llc_stderr, list(r.flags)))
        last = llc.estimate_llc(
            jax.random.key(2),
            loss_fn,
            checkpoints[-1],
            train,
            per_sample_observables={"held": held},
            **settings,
        )
    kernel = llc.loss_kernel(last, "held")
    return {
        "steps": steps,
        "per_layer": per_layer,
        "kernel": kernel.tolist(),
        "kernel_labels": np.asarray(held[1]).tolist(),
        "settings": settings,
    }


def plot_mlp(mlp: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in mlp["per_layer"].items():
        mean = np.array([r[0] for r in rows])
        err = np.array([r[1] for r in rows])
        left.errorbar(mlp["steps"], mean, yerr=err, marker="o", capsize=3, label=f"layer {name}")
    left.set(xlabel="training step", ylabel="refined LLC", title="per-layer LLC along training")
    left.legend()
    kernel = np.array(mlp["kernel"])
    scale = np.sqrt(np.clip(np.diag(kernel), 1e-300, None))
    image = right.imshow(kernel / np.outer(scale, scale), cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [str(v) for v in mlp["kernel_labels"]]
    right.set_xticks(range(len(labels)), labels)
    right.set_yticks(range(len(labels)), labels)
    right.set(
        title="loss kernel of 8 held-out digits, as correlations", xlabel="digit", ylabel="digit"
    )
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(path) -> None:
    """Redraw ``refined_mlp.png`` beside a saved ``refined.json``."""
    import json

    plot_mlp(json.loads(path.read_text())["mlp"], path.parent / "refined_mlp.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, out = parse_args(parser, "refined", "a 4-5-5-4 network, 2 chains, 200 draws")
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    n = 200 if args.quick else 2000
    chains, draws = (2, 200) if args.quick else (8, 4000)
    params, data, (x, layers) = network(widths, n)
    nbeta, gamma = llc.default_nbeta(n), 10.0
    mus = [layer_eigenvalues(x, layers, i) for i in range(len(layers))]
    step = 0.1 / (nbeta * max(m.max() for m in mus) + gamma)
    masks = llc.masks.layers(params)
    settings = dict(
        step_size=step,
        localization=gamma,
        num_chains=chains,
        num_draws=draws,
        num_burnin_steps=draws,
        progress_bar=False,
    )
    key = jax.random.key(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start = time.perf_counter()
        refined = llc.estimate_refined_llc(key, chain_mse, params, data, masks=masks, **settings)
        together_cold = time.perf_counter() - start
        start = time.perf_counter()
        llc.estimate_refined_llc(key, chain_mse, params, data, masks=masks, **settings)
        together = time.perf_counter() - start
        singles, singles_cold = 0.0, 0.0
        for mask in masks.values():
            start = time.perf_counter()
            llc.estimate_llc(key, chain_mse, params, data, weight_mask=mask, **settings)
            singles_cold += time.perf_counter() - start
            start = time.perf_counter()
            llc.estimate_llc(key, chain_mse, params, data, weight_mask=mask, **settings)
            singles += time.perf_counter() - start
    plan = llc.plan.make_plan(
        key,
        chain_mse,
        params,
        data,
        llc.settings.Settings.build(
            "estimate_llc", weight_mask=next(iter(masks.values())), **settings
        ),
    )
    one_mask, all_masks = memory(plan, len(masks))
    rows = []
    for (name, r), mu in zip(refined.items(), mus, strict=True):
        exact = ula_target(mu, nbeta, gamma, step)
        z = (r.llc_mean - exact) / r.llc_stderr
        rows.append(
            {
                "layer": name,
                "d": r.num_params,
                "exact": exact,
                "llc_mean": r.llc_mean,
                "llc_stderr": r.llc_stderr,
                "z": z,
                "flags": list(r.flags),
            }
        )
        print(
            f"layer {name}: d = {r.num_params:4d}  exact {exact:8.4f}  estimate "
            f"{r.llc_mean:8.4f} +- {r.llc_stderr:.4f}  ({z:+.1f} s.e.)  {list(r.flags)}"
        )
    print(
        f"{len(masks)} masks in one call: {together:.2f} s warm ({together_cold:.2f} s cold); "
        f"{len(masks)} single calls: {singles:.2f} s warm ({singles_cold:.2f} s cold); "
        f"ratio {together / singles:.2f} warm, {together_cold / singles_cold:.2f} cold"
    )
    if one_mask and all_masks:
        print(
            f"compiled memory: one mask {one_mask / 2**20:.2f} MiB, {len(masks)} masks "
            f"{all_masks / 2**20:.2f} MiB ({all_masks / len(masks) / 2**20:.2f} MiB per mask)"
        )
    mlp = mlp_along_training(args.quick)
    plot_mlp(mlp, out / "refined_mlp.png")
    for name, rows in mlp["per_layer"].items():
        print(
            f"MLP layer {name}: "
            + ", ".join(f"{m:.1f}" for m, _, _ in rows)
            + f" at steps {mlp['steps']}"
        )
    write(
        out,
        "refined",
        {
            "mlp": mlp,
            "settings": {
                "widths": widths,
                "n": n,
                "chains": chains,
                "draws": draws,
                "step": step,
                "nbeta": nbeta,
                "localization": gamma,
            },
            "layers": rows,
            "time_s": {
                "together_warm": together,
                "together_cold": together_cold,
                "singles_warm": singles,
                "singles_cold": singles_cold,
            },
            "memory_bytes": {"one_mask": one_mask, "all_masks": all_masks, "masks": len(masks)},
            "machine": machine(),
            "quick": args.quick,
        },
    )


if __name__ == "__main__":
    main()
