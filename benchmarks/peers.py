"""llc against devinterp 2.0.1 (PyTorch) on the same workloads, in one run.

Workloads (the same data, weights, loss and settings in both libraries):
1. peers.md section 9: DLN 10-10-10-10 without bias, first teacher layer of rank 5,
   n = 10,000, unit noise, loss 0.5 |f(x) - y|^2, nbeta = n / log n, lr 1e-4, gamma = 100,
   batch 500, 4 chains x 1,000 steps; Aoyagi's lambda = 46.
2. a small tanh MLP 8-32-32-4 (1,472 parameters) fitted to a random teacher of the same
   shape, same settings with lr 1e-5 (no known lambda: the two estimates are compared).

Both samplers are the same SGLD in the same convention (lr = step_size = epsilon). devinterp
2.0.1 averages every step, burn-in included, so both run without burn-in; its L(w*) comes
from ``num_init_loss_batches`` minibatches, set here to cover the whole data set. devinterp
works on language-model datasets: the rows are passed as ``input_ids = [[i, i]]`` and a
custom per-token loss looks the samples up (the trick its own docs suggest).

Reported: wall time of a warm run (ours: compilation separately), chain-steps per second,
the ratio, and the estimates (with the error against lambda where it is known). Every
timing of both libraries is measured in this run, on this machine.

devinterp and torch are an optional extra (``pip install -e '.[peers]'``); without them the
script says so and exits with status 0. Usage: ``python benchmarks/peers.py``; ``--quick``:
the DLN workload only, 100 steps, one timing repeat. Outputs: a table and
``results/peers/peers.json``.
"""

import argparse
import importlib.util
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _common import best_of, parse_args, peer_dln_problem, write

import llc

CHAINS, BATCH, GAMMA = 4, 500, 100.0
STEPS, REPEATS = 1000, 3  # --quick: QUICK_STEPS, one repeat
QUICK_STEPS = 100


def mlp_problem(num_data: int = 10_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = (8, 32, 32, 4)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        params += [rng.standard_normal((a, b)) / np.sqrt(a), 0.1 * rng.standard_normal(b)]
    x = rng.standard_normal((num_data, sizes[0]))
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i < len(params) - 2:
            h = np.tanh(h)
    y = h + 0.1 * rng.standard_normal(h.shape)

    def loss_fn(p, batch):
        out = batch[0]
        for i in range(0, len(p), 2):
            out = out @ p[i] + p[i + 1]
            if i < len(p) - 2:
                out = jnp.tanh(out)
        return 0.5 * jnp.mean(jnp.sum((out - batch[1]) ** 2, axis=-1))

    params = tuple(jnp.asarray(w, jnp.float32) for w in params)
    data = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    return loss_fn, params, data, sizes


def run_ours(loss_fn, params, data, nbeta, lr, steps: int, repeats: int) -> dict:
    kw = {
        "step_size": lr,
        "localization": GAMMA,
        "nbeta": nbeta,
        "num_chains": CHAINS,
        "num_draws": steps,
        "num_burnin_steps": 0,
        "batch_size": BATCH,
        "progress_bar": False,
        "full_loss_every": 0,
        "acceptance_checks": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = llc.estimate_llc(jax.random.key(0), loss_fn, params, data, **kw)
        runs = []

        def again():
            runs.append(llc.estimate_llc(jax.random.key(0), loss_fn, params, data, **kw))

        warm = best_of(again, repeats)
    r = runs[-1]
    return {
        "llc_mean": r.llc_mean,
        "llc_stderr": r.llc_stderr,
        "wall_s": warm,
        "first_call_s": first.wall_time,
        "compile_s": first.wall_time - warm,
        "chain_steps_per_s": CHAINS * steps / warm,
        "flags": list(r.flags),
    }


def run_devinterp(params, data, nbeta, lr, activation, steps: int, repeats: int) -> dict:
    import torch
    from datasets import Dataset
    from devinterp.slt.llc import llc as devinterp_llc

    torch.set_num_threads(2)
    x = torch.tensor(np.asarray(data[0]))
    y = torch.tensor(np.asarray(data[1]))
    n = x.shape[0]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.tensor(np.asarray(w))) for w in params]
            )

        def forward(self, rows):
            out = x[rows]
            ws = list(self.weights)
            step = 2 if activation else 1
            for i in range(0, len(ws), step):
                out = out @ ws[i] + (ws[i + 1] if activation else 0)
                if activation and i < len(ws) - 2:
                    out = torch.tanh(out)
            return out

    def per_token_loss(model, input_ids):  # devinterp's contract: (batch, seq - 1)
        rows = input_ids[:, 0]
        residual = model(rows) - y[rows]
        return 0.5 * (residual**2).sum(-1, keepdim=True)

    dataset = Dataset.from_dict({"input_ids": [[i, i] for i in range(n)]}).with_format("torch")

    def once():
        return devinterp_llc(
            Net(),
            dataset,
            {},
            lr=lr,
            n_beta=nbeta,
            loss_fn=per_token_loss,
            num_chains=CHAINS,
            num_draws=steps,
            batch_size=BATCH,
            num_burnin_steps=0,
            localization=GAMMA,
            num_init_loss_batches=math.ceil(n / BATCH),
        )

    start = time.perf_counter()
    first = once()
    first_s = time.perf_counter() - start
    results = []
    warm = best_of(lambda: results.append(once()), max(1, repeats - 1))
    out = results[-1]
    per_chain = np.asarray(out["llc_per_chain"])
    return {
        "llc_mean": float(out["llc_mean"]),
        "llc_stderr": float(np.std(per_chain, ddof=1) / np.sqrt(per_chain.size)),
        "wall_s": warm,
        "first_call_s": first_s,
        "chain_steps_per_s": CHAINS * steps / warm,
        "first_run_llc": float(first["llc_mean"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, out = parse_args(
        parser, "peers", quick=f"the DLN workload only, {QUICK_STEPS} steps, one timing repeat"
    )
    missing = [m for m in ("torch", "devinterp", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        print("skipped: devinterp/torch not installed (pip install -e .[peers])")
        print(f"  missing: {', '.join(missing)}")
        return
    steps, repeats = (QUICK_STEPS, 1) if args.quick else (STEPS, REPEATS)
    os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp's per-chain progress bars
    import devinterp  # noqa: F401  (imported here so its import time is not timed below)

    dln = peer_dln_problem()
    n = dln.data[0].shape[0]
    nbeta = n / math.log(n)
    mlp_loss, mlp_params, mlp_data, sizes = mlp_problem()
    workloads = [
        (
            "DLN 10-10-10-10 (peers.md 9)",
            dln.loss_fn,
            dln.params,
            dln.data,
            1e-4,
            False,
            float(dln.true_lambda),
        ),
        (f"tanh MLP {'-'.join(map(str, sizes))}", mlp_loss, mlp_params, mlp_data, 1e-5, True, None),
    ]
    if args.quick:
        workloads = workloads[:1]
    rows = []
    for name, loss_fn, params, data, lr, activation, lam in workloads:
        ours = run_ours(loss_fn, params, data, nbeta, lr, steps, repeats)
        peer = run_devinterp(params, data, nbeta, lr, activation, steps, repeats)
        row = {
            "workload": name,
            "d": int(sum(np.size(w) for w in params)),
            "true_lambda": lam,
            "settings": {
                "lr": lr,
                "gamma": GAMMA,
                "nbeta": nbeta,
                "batch": BATCH,
                "chains": CHAINS,
                "steps": steps,
            },
            "llc": ours,
            "devinterp": peer,
            "throughput_ratio": ours["chain_steps_per_s"] / peer["chain_steps_per_s"],
        }
        rows.append(row)
        print(f"{name}, d = {row['d']}")
        for label, r in (("llc", ours), ("devinterp 2.0.1", peer)):
            vs = f" ({(r['llc_mean'] - lam) / lam:+.1%} vs λ = {lam:g})" if lam else ""
            print(
                f"  {label:>16}: λ̂ = {r['llc_mean']:.2f} ± {r['llc_stderr']:.2f}{vs}"
                f"; warm {r['wall_s']:.2f} s = {r['chain_steps_per_s']:.0f} chain-steps/s "
                f"(first call {r['first_call_s']:.1f} s)"
            )
        print(f"  throughput ratio llc / devinterp: {row['throughput_ratio']:.1f}x", flush=True)
    payload = {"rows": rows, "devinterp_version": "2.0.1"}
    path = write(out, "peers", {**payload, "quick": True} if args.quick else payload)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
