"""llc against devinterp 2.0.1 (PyTorch) on a small causal transformer, in one run.

Workload: a 2-layer pre-LayerNorm causal transformer in flax nnx (token embedding plus a
learned positional embedding; per layer 4-head causal self-attention
``nnx.MultiHeadAttention`` and a GELU MLP of width 4 d_model; a final LayerNorm and an
unembedding), vocab 16, sequences of 16 tokens, d_model 32: 27,024 parameters. The data:
n = 1,024 sequences whose second half repeats their first half (8 uniform random tokens,
twice), so the second half can be predicted by copying. The model is trained with optax
adam (lr 3e-3, batch 64, 400 steps: to the copying floor of the loss, (7 log 16) / 15, or
a little below it where it memorises some of the random halves); its weights
are then ported to an equivalent torch module (one fused qkv ``Linear`` per layer and
``scaled_dot_product_attention``), and the two models' losses on the same sequences must
agree to 1e-5 before anything is sampled.

Loss: the mean next-token cross-entropy over the batch and the 15 predicted positions
(devinterp's default language-model loss, which the torch side uses: the model sees all 16
tokens and the last position's logits are unused, in both libraries). Sampling settings,
the same in both: SGLD with lr 3e-4, gamma = 100, nbeta = n / log n, batch 32, 4 chains x
1,000 steps, no burn-in (devinterp 2.0.1 averages every step, burn-in included);
devinterp's L(w*) comes from ``num_init_loss_batches`` minibatches covering the whole data
set. Otherwise each library runs as in benchmarks/peers.py (ours: the control variate on,
the periodic full-loss and acceptance checks off, every other setting its default). torch
gets the faster of 1 and 2 threads on a short probe (on a loaded machine 2 threads can be
ten times slower).

Reported: wall time of a warm run (ours: compilation separately), chain-steps per second,
the throughput ratio, each estimate with its standard error across chains, and whether the
two agree within two standard errors (|difference| <= 2 sqrt(se_llc^2 + se_devinterp^2)).
Where the time goes: our warm call split into its sampling program, its step-size-bias
prediction at the chains' ends and the rest (set-up and report); the FLOPs of one
chain-step (XLA's cost analysis) and the rate the sampling program reaches; and a bare
torch SGLD loop on the same torch module (devinterp's compute without its bookkeeping).
Every timing of both libraries is measured in this run, on this machine.

devinterp and torch are an optional extra (``pip install -e '.[peers]'``); without them the
script says so and exits with status 0. Usage: ``python benchmarks/transformer.py``;
``--quick``: n = 256, 100 training steps, 100 sampling steps, one timing repeat. Outputs:
a table and ``results/transformer/transformer.json``.
"""

import argparse
import contextlib
import importlib.util
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import best_of, parse_args, write
from flax import nnx

import llc

VOCAB, HALF, D_MODEL, HEADS, LAYERS = 16, 8, 32, 4, 2
SEQ = 2 * HALF  # tokens per sequence: a random half, then the same half again
QKV = ("query", "key", "value")  # nnx.MultiHeadAttention's projections
NUM_DATA, TRAIN_STEPS, TRAIN_BATCH, TRAIN_LR = 1024, 400, 64, 3e-3
CHAINS, BATCH, GAMMA, LR = 4, 32, 100.0, 3e-4
STEPS, REPEATS = 1000, 2  # --quick: the QUICK_ values and one repeat
QUICK_NUM_DATA, QUICK_STEPS, QUICK_TRAIN_STEPS = 256, 100, 100
BARE_STEPS = 250  # per chain, for the bare torch loop's rate


class Block(nnx.Module):
    """Pre-LayerNorm block: causal multi-head self-attention, then a GELU MLP."""

    def __init__(self, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(D_MODEL, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(HEADS, D_MODEL, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(D_MODEL, rngs=rngs)
        self.fc1 = nnx.Linear(D_MODEL, 4 * D_MODEL, rngs=rngs)
        self.fc2 = nnx.Linear(4 * D_MODEL, D_MODEL, rngs=rngs)

    def __call__(self, x):  # noqa: D102
        x = x + self.attn(self.ln1(x), is_causal=True)
        return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))  # tanh-approximate GELU


class Transformer(nnx.Module):
    """Token and learned positional embeddings, the blocks, a LayerNorm, the unembedding."""

    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, D_MODEL, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (SEQ, D_MODEL)))
        self.blocks = nnx.List([Block(rngs) for _ in range(LAYERS)])
        self.ln_f = nnx.LayerNorm(D_MODEL, rngs=rngs)
        self.unembed = nnx.Linear(D_MODEL, VOCAB, rngs=rngs)

    def __call__(self, tokens):  # noqa: D102
        x = self.embed(tokens) + self.pos[: tokens.shape[-1]]
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))


def next_token_loss(logits, tokens):
    """Mean cross-entropy of the logits at positions 0..T-2 against tokens 1..T-1."""
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


def make_data(num_data: int, seed: int = 0) -> np.ndarray:
    """``num_data`` sequences: ``HALF`` uniform random tokens, then the same tokens again."""
    half = np.random.default_rng(seed).integers(0, VOCAB, (num_data, HALF))
    return np.concatenate([half, half], axis=1).astype(np.int32)


def train(loss_fn, params, data, steps: int, seed: int = 0):
    """Adam on random minibatches; returns the trained parameters and the loss curve."""
    opt = optax.adam(TRAIN_LR)
    idx = jax.random.randint(jax.random.key(seed), (steps, TRAIN_BATCH), 0, data[0].shape[0])

    @jax.jit
    def run(params):
        def step(carry, rows):
            p, state = carry
            loss, g = jax.value_and_grad(loss_fn)(p, jax.tree.map(lambda a: a[rows], data))
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), idx)
        return p, losses

    return run(params)


def torch_module(params: dict):
    """The same transformer in torch, with the trained weights copied in."""
    import torch
    from torch import nn

    def t(a):
        return torch.tensor(np.asarray(a), dtype=torch.float32)

    def linear(p, fan_in, fan_out):
        lin = nn.Linear(fan_in, fan_out)
        lin.weight.data = t(p["kernel"]).reshape(fan_in, fan_out).T.contiguous()
        lin.bias.data = t(p["bias"]).reshape(fan_out)
        return lin

    def layer_norm(p):
        ln = nn.LayerNorm(D_MODEL, eps=1e-6)  # nnx's default epsilon
        ln.weight.data, ln.bias.data = t(p["scale"]), t(p["bias"])
        return ln

    class TorchBlock(nn.Module):
        def __init__(self, p):
            super().__init__()
            a = p["attn"]
            qkv = [np.asarray(a[k]["kernel"]).reshape(D_MODEL, D_MODEL) for k in QKV]
            self.ln1, self.ln2 = layer_norm(p["ln1"]), layer_norm(p["ln2"])
            self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
            self.qkv.weight.data = t(np.concatenate(qkv, axis=1).T.copy())
            self.qkv.bias.data = t(np.concatenate([np.ravel(a[k]["bias"]) for k in QKV]))
            self.out = linear(a["out"], D_MODEL, D_MODEL)
            self.fc1 = linear(p["fc1"], D_MODEL, 4 * D_MODEL)
            self.fc2 = linear(p["fc2"], 4 * D_MODEL, D_MODEL)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
            att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(att.transpose(1, 2).reshape(b, s, D_MODEL))
            h = nn.functional.gelu(self.fc1(self.ln2(x)), approximate="tanh")
            return x + self.fc2(h)

    class TorchTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, D_MODEL)
            self.embed.weight.data = t(params["embed"]["embedding"])
            self.pos = nn.Parameter(t(params["pos"]))
            self.blocks = nn.ModuleList([TorchBlock(params["blocks"][i]) for i in range(LAYERS)])
            self.ln_f = layer_norm(params["ln_f"])
            self.unembed = linear(params["unembed"], D_MODEL, VOCAB)

        def forward(self, input_ids):
            x = self.embed(input_ids) + self.pos[: input_ids.shape[-1]]
            for block in self.blocks:
                x = block(x)
            return self.unembed(self.ln_f(x))

    return TorchTransformer()


def check_same_loss(loss_fn, params, data, torch_model) -> dict:
    """The jax and torch losses on the same batch (devinterp's own per-token loss)."""
    import torch
    from devinterp.slt.lm_loss import compute_per_token_loss

    tokens = np.asarray(data[0][:512])
    ours = float(loss_fn(params, (jnp.asarray(tokens), jnp.asarray(tokens))))
    with torch.no_grad():
        theirs = float(compute_per_token_loss(torch_model, torch.tensor(tokens).long()).mean())
    diff = abs(ours - theirs)
    print(
        f"loss on the same {len(tokens)} sequences: jax {ours:.7f}, torch {theirs:.7f} "
        f"(|diff| {diff:.1e})"
    )
    assert diff < 1e-5, f"the jax and torch models disagree: {ours} vs {theirs}"
    return {"jax": ours, "torch": theirs, "abs_diff": diff, "rows": len(tokens)}


def llc_kwargs(nbeta: float, steps: int, **over) -> dict:
    return {
        "step_size": LR,
        "localization": GAMMA,
        "nbeta": nbeta,
        "num_chains": CHAINS,
        "num_draws": steps,
        "num_burnin_steps": 0,
        "batch_size": BATCH,
        "progress_bar": False,
        "full_loss_every": 0,
        "acceptance_checks": 0,
    } | over


@contextlib.contextmanager
def timed_parts():
    """Time two parts of every ``estimate_llc`` call made inside.

    The parts: the sampling program (``execute``) and the step-size-bias prediction at the
    chains' ends (``end_step_bias``); the rest of a call is its set-up (L_n(w*) over the
    data) and the report.
    """
    from llc import estimator

    seconds = {"execute": [], "end_step_bias": []}
    saved = {name: getattr(estimator, name) for name in seconds}

    def wrap(name):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = saved[name](*args, **kwargs)
            seconds[name].append(time.perf_counter() - start)
            return out

        return timed

    for name in seconds:
        setattr(estimator, name, wrap(name))
    try:
        yield seconds
    finally:
        for name, fn in saved.items():
            setattr(estimator, name, fn)


def run_ours(loss_fn, params, data, nbeta, steps: int, repeats: int) -> dict:
    kw = llc_kwargs(nbeta, steps)
    with warnings.catch_warnings(), timed_parts() as parts:
        warnings.simplefilter("ignore", RuntimeWarning)
        first = llc.estimate_llc(jax.random.key(0), loss_fn, params, data, **kw)
        runs, walls = [], []

        def again():
            runs.append(llc.estimate_llc(jax.random.key(0), loss_fn, params, data, **kw))
            walls.append(runs[-1].wall_time)

        warm = best_of(again, repeats)
    r = runs[-1]
    best = 1 + int(np.argmin(walls))  # the warm call timed, its parts
    sampling, step_bias = parts["execute"][best], parts["end_step_bias"][best]
    return {
        "llc_mean": r.llc_mean,
        "llc_stderr": r.llc_stderr,
        "init_loss": float(r.init_loss),
        "wall_s": warm,
        "first_call_s": first.wall_time,
        "compile_s": first.wall_time - warm,
        "chain_steps_per_s": CHAINS * steps / warm,
        "flags": list(r.flags),
        "warm_parts_s": {
            "sampling_program": sampling,
            "step_bias_prediction": step_bias,
            "set_up_and_report": warm - sampling - step_bias,
        },
        "first_call_parts_s": {
            "sampling_program": parts["execute"][0],
            "step_bias_prediction": parts["end_step_bias"][0],
        },
    }


def step_flops(loss_fn, params, data) -> dict:
    """XLA's FLOP count of one chain-step.

    A chain-step is a gradient on a batch and the control variate's forward pass at w* on
    the same batch.
    """
    batch = jax.tree.map(lambda a: a[:BATCH], data)

    def flops(fn):
        cost = jax.jit(fn).lower(params, batch).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost["flops"])

    grad = flops(jax.value_and_grad(loss_fn))
    forward = flops(loss_fn)
    return {"value_and_grad": grad, "forward": forward, "chain_step": grad + forward}


def dataset_of(tokens: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": tokens.tolist()}).with_format("torch")


def run_devinterp(torch_model, tokens, nbeta, steps: int, repeats: int) -> dict:
    from devinterp.slt.llc import llc as devinterp_llc

    dataset = dataset_of(tokens)
    n = len(tokens)

    def once():
        with tempfile.TemporaryDirectory() as tmp:  # its zarr store of every step's losses
            out = devinterp_llc(
                torch_model,
                dataset,
                {},
                lr=LR,
                n_beta=nbeta,
                num_chains=CHAINS,
                num_draws=steps,
                batch_size=BATCH,
                num_burnin_steps=0,
                localization=GAMMA,
                num_init_loss_batches=math.ceil(n / BATCH),
                output_path=Path(tmp) / "samples.zarr",
            )
            return out.load()

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
        "init_loss": float(out["init_loss"]),
        "wall_s": warm,
        "first_call_s": first_s,
        "chain_steps_per_s": CHAINS * steps / warm,
        "first_run_llc": float(first["llc_mean"]),
    }


def bare_torch_sgld(torch_model, tokens, nbeta, steps: int, chains: int = CHAINS) -> float:
    """Wall time of the same SGLD written directly in torch on the same module.

    The chains run one after another, on random minibatches, recording nothing:
    devinterp's compute without its bookkeeping.
    """
    import copy

    import torch

    data = torch.tensor(tokens).long()
    start = time.perf_counter()
    for chain in range(chains):
        torch.manual_seed(chain)
        model = copy.deepcopy(torch_model)
        params = list(model.parameters())
        anchor = [p.detach().clone() for p in params]
        for _ in range(steps):
            ids = data[torch.randint(0, len(data), (BATCH,))]
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
            )
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g, a in zip(params, grads, anchor, strict=True):
                    p.add_(-0.5 * LR * (nbeta * g + GAMMA * (p - a)))
                    p.add_(torch.randn_like(p), alpha=math.sqrt(LR))
    return time.perf_counter() - start


def torch_threads(torch_model, tokens) -> dict:
    """Give torch the faster of 1 and 2 threads (a short probe of the bare loop).

    On a loaded machine two threads can be many times slower than one: the peer gets
    whichever is faster here.
    """
    import torch

    rates = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        bare_torch_sgld(torch_model, tokens, 1.0, 2, chains=1)  # warm-up
        rates[threads] = 8 / bare_torch_sgld(torch_model, tokens, 1.0, 8, chains=1)
    best = max(rates, key=rates.get)
    torch.set_num_threads(best)
    print(
        "torch threads: "
        + ", ".join(f"{t}: {r:.0f} steps/s" for t, r in rates.items())
        + f" (probe); using {best}"
    )
    return {"used": best, "probe_steps_per_s": {str(t): r for t, r in rates.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, out = parse_args(
        parser,
        "transformer",
        quick=f"{QUICK_TRAIN_STEPS} training steps, {QUICK_STEPS} sampling steps, one repeat",
    )
    missing = [m for m in ("torch", "devinterp", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        print("skipped: devinterp/torch not installed (pip install -e .[peers])")
        print(f"  missing: {', '.join(missing)}")
        return
    n, steps, repeats, train_steps = (
        (QUICK_NUM_DATA, QUICK_STEPS, 1, QUICK_TRAIN_STEPS)
        if args.quick
        else (NUM_DATA, STEPS, REPEATS, TRAIN_STEPS)
    )
    os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp's per-chain progress bars
    import devinterp  # noqa: F401  (imported here so its import time is not timed below)
    import torch

    tokens = make_data(n)
    model = Transformer(nnx.Rngs(0))
    # from_nnx's batch is (inputs, targets); a language model's targets are its inputs
    params, loss_fn = llc.from_nnx(model, next_token_loss)
    data = (jnp.asarray(tokens), jnp.asarray(tokens))
    start = time.perf_counter()
    params, losses = train(loss_fn, params, data, train_steps)
    losses = np.asarray(losses)
    train_s = time.perf_counter() - start
    d = int(sum(np.size(w) for w in jax.tree.leaves(params)))
    floor = (HALF - 1) * math.log(VOCAB) / (SEQ - 1)  # copies the second half, no more
    print(
        f"transformer {LAYERS} layers x {HEADS} heads, d_model {D_MODEL}, vocab {VOCAB}, "
        f"{SEQ} tokens, d = {d:,}: trained {train_steps} adam steps in {train_s:.1f} s, "
        f"loss {losses[0]:.3f} -> {losses[-10:].mean():.3f} (copying floor {floor:.3f})"
    )
    torch_model = torch_module(jax.tree.map(np.asarray, params))
    same_loss = check_same_loss(loss_fn, params, data, torch_model)
    threads = torch_threads(torch_model, tokens)

    nbeta = n / math.log(n)
    ours = run_ours(loss_fn, params, data, nbeta, steps, repeats)
    peer = run_devinterp(torch_model, tokens, nbeta, steps, repeats)
    bare_steps = min(steps, BARE_STEPS)
    bare_s = bare_torch_sgld(torch_model, tokens, nbeta, bare_steps)
    flops = step_flops(loss_fn, params, data)
    se = math.hypot(ours["llc_stderr"], peer["llc_stderr"])
    diff = ours["llc_mean"] - peer["llc_mean"]
    ratio = ours["chain_steps_per_s"] / peer["chain_steps_per_s"]
    parts = ours["warm_parts_s"]
    where = {
        # ours: the compiled sampling program alone, and the FLOP rate it runs at
        "llc_sampling_program_chain_steps_per_s": CHAINS * steps / parts["sampling_program"],
        "llc_sampling_program_gflop_per_s": flops["chain_step"]
        * (CHAINS * steps / parts["sampling_program"])
        / 1e9,
        "llc_step_bias_share": parts["step_bias_prediction"] / ours["wall_s"],
        "control_variate_flop_share": flops["forward"] / flops["chain_step"],
        "ratio_without_step_bias_prediction": CHAINS
        * steps
        / (ours["wall_s"] - parts["step_bias_prediction"])
        / peer["chain_steps_per_s"],
        # devinterp: the same SGLD on the same torch module, without its bookkeeping
        "bare_torch_sgld_steps_per_chain": bare_steps,
        "bare_torch_sgld_wall_s": bare_s,
        "bare_torch_sgld_chain_steps_per_s": CHAINS * bare_steps / bare_s,
        # its FLOP rate, counting a torch step as XLA counts our gradient on a batch
        "bare_torch_sgld_gflop_per_s": flops["value_and_grad"] * CHAINS * bare_steps / bare_s / 1e9,
        "devinterp_share_outside_compute": 1 - (bare_s * steps / bare_steps) / peer["wall_s"],
    }
    row = {
        "workload": f"causal transformer {LAYERS}x{HEADS} heads, d_model {D_MODEL}",
        "d": d,
        "model": {
            "vocab": VOCAB,
            "seq": SEQ,
            "d_model": D_MODEL,
            "heads": HEADS,
            "layers": LAYERS,
            "mlp": 4 * D_MODEL,
        },
        "data": {"num_data": n, "task": f"{HALF} random tokens, repeated once"},
        "training": {
            "steps": train_steps,
            "batch": TRAIN_BATCH,
            "lr": TRAIN_LR,
            "first_loss": float(losses[0]),
            "final_loss": float(losses[-10:].mean()),
            "copying_floor": floor,
            "seconds": train_s,
        },
        "same_loss": same_loss,
        "settings": {
            "lr": LR,
            "gamma": GAMMA,
            "nbeta": nbeta,
            "batch": BATCH,
            "chains": CHAINS,
            "steps": steps,
        },
        "llc": ours,
        "devinterp": peer,
        "torch_threads": threads,
        "throughput_ratio": ratio,
        "difference": diff,
        "combined_stderr": se,
        "within_2se": bool(abs(diff) <= 2 * se),
        "flops": flops,
        "where_the_time_goes": where,
    }
    print(f"{row['workload']}, d = {d:,}, {CHAINS} chains x {steps} steps, batch {BATCH}")
    for label, r in (("llc", ours), ("devinterp 2.0.1", peer)):
        print(
            f"  {label:>16}: λ̂ = {r['llc_mean']:.2f} ± {r['llc_stderr']:.2f}"
            f"; warm {r['wall_s']:.2f} s = {r['chain_steps_per_s']:.0f} chain-steps/s "
            f"(first call {r['first_call_s']:.1f} s)"
        )
    print(f"  throughput ratio llc / devinterp: {ratio:.1f}x")
    print(
        f"  difference {diff:+.2f} = {diff / se:+.1f} combined SE: "
        f"{'within' if row['within_2se'] else 'outside'} 2 SE"
    )
    print(
        f"  where llc's warm time goes: sampling program {parts['sampling_program']:.2f} s "
        f"({where['llc_sampling_program_chain_steps_per_s']:.0f} chain-steps/s, "
        f"{flops['chain_step'] / 1e6:.1f} MFLOP each = "
        f"{where['llc_sampling_program_gflop_per_s']:.1f} GFLOP/s; the control variate's "
        f"forward pass is {where['control_variate_flop_share']:.0%} of the FLOPs), "
        f"step-size-bias prediction {parts['step_bias_prediction']:.2f} s, "
        f"set-up and report {parts['set_up_and_report']:.2f} s; "
        f"ratio without the prediction {where['ratio_without_step_bias_prediction']:.1f}x"
    )
    print(
        f"  devinterp: a bare torch SGLD loop on the same module runs "
        f"{where['bare_torch_sgld_chain_steps_per_s']:.0f} chain-steps/s "
        f"(about {where['bare_torch_sgld_gflop_per_s']:.1f} GFLOP/s; "
        f"{where['devinterp_share_outside_compute']:.0%} of devinterp's time is outside it)",
        flush=True,
    )
    payload = {"rows": [row], "devinterp_version": "2.0.1", "torch": torch.__version__}
    path = write(out, "transformer", {**payload, "quick": True} if args.quick else payload)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
