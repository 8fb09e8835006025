"""Throughput and memory against model size and chain count.

A two-layer linear network (widths w-w-w, d = 2 w^2 parameters, from ~1K to ~1M; larger with
``--max-params`` on a big device), n = 10,000 Gaussian inputs, batch 100, SGLD with the
control variate. For each (d, chains): chain-steps per second of the compiled run
(compilation excluded: measured separately) and the memory of the compiled program from
XLA's own accounting (arguments + outputs + temporaries), which is what bounds the model
size on a device. Chains: 1, 4, 16.

With ``--meshes chains=2,model=2 data=4 ...`` it also lays one model size (``--mesh-width``)
over each device mesh (axes from chains, data, model; the product must not exceed the devices
present) and reports the memory per device of the compiled SPMD program and its throughput,
so a run can be sized before it starts (docs: "Devices and long runs"). A one-device mesh
always runs, so the path is exercised everywhere.

Outputs: a table, ``results/scaling/scaling.json`` (or ``--name``) and
``results/scaling/scaling.png``. Usage: ``python benchmarks/scaling.py`` (a few minutes on 2
CPU cores); ``--quick``: d up to ~10K, 1 and 4 chains, about 0.2 s of sampling each.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import parse_args, plan_for, write
from jax.sharding import Mesh, PartitionSpec

from llc import loop

N, BATCH = 10_000, 100
SECONDS = 4.0  # of sampling per configuration (--quick: QUICK_SECONDS)
QUICK_SECONDS, QUICK_MAX_PARAMS, QUICK_CHAINS = 0.2, 11_000, [1, 4]


def problem(width: int):
    k1, k2, k3 = jax.random.split(jax.random.key(width), 3)
    params = (
        jax.random.normal(k1, (width, width)) / jnp.sqrt(width),
        jax.random.normal(k2, (width, width)) / jnp.sqrt(width),
    )
    x = jax.random.normal(k3, (N, width))
    y = x @ params[0] @ params[1]

    def loss_fn(p, batch):
        return 0.5 * jnp.mean(jnp.sum((batch[0] @ p[0] @ p[1] - batch[1]) ** 2, axis=-1))

    return loss_fn, params, (x, y)


def measure(
    width: int, chains: int, flops_per_s: float, seconds: float = SECONDS, mesh=None
) -> dict:
    loss_fn, params, data = problem(width)
    d = 2 * width * width
    # about `seconds` of sampling per configuration: a chain-step costs ~ 12 * batch * d flops
    steps = int(np.clip(seconds * flops_per_s / (12 * BATCH * d * chains), 20, 2000))
    plan = plan_for(
        jax.random.key(0),
        loss_fn,
        params,
        data,
        step_size=1e-6,
        localization=1.0,
        nbeta=None,
        sampler="sgld",
        sampler_options=None,
        num_chains=chains,
        num_draws=steps,
        num_burnin_steps=0,
        num_steps_bw_draws=1,
        batch_size=BATCH,
        control_variate=True,
        progress_bar=False,
        eval_batch_size=None,
        full_loss_every=0,
        escape_direction=None,
        held_directions=None,
        acceptance_checks=0,
        **_layout(mesh),
    )
    hyper = loop.make_hyper(1e-6, plan.nbeta, 1.0, plan.init_loss, jnp.float32)
    args = (plan.rng_key, plan.params, plan.data, hyper)
    start = time.perf_counter()
    compiled = loop.run_chains.lower(*args, loss_fn=loss_fn, config=plan.config).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    jax.block_until_ready(compiled(*args))  # warm
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - start
    total = None
    if memory is not None:
        total = int(
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )
    return {
        "d": d,
        "width": width,
        "chains": chains,
        "steps": steps,
        "chain_steps_per_s": chains * steps / run_s,
        "run_s": run_s,
        "compile_s": compile_s,
        "memory_bytes": total,
        "params_bytes": 4 * d,
        "mesh": {} if mesh is None else {k: int(v) for k, v in mesh.shape.items()},
    }


def _layout(mesh) -> dict:
    """``estimate_llc``'s mesh settings: both matrices split by columns over "model"."""
    if mesh is None:
        return {}
    if "model" in mesh.axis_names:
        return {"mesh": mesh, "param_specs": (PartitionSpec(None, "model"),) * 2}
    return {"mesh": mesh}


def parse_mesh(text: str) -> dict:
    """``"chains=2,model=2"`` -> ``{"chains": 2, "model": 2}``."""
    return {k: int(v) for k, v in (part.split("=") for part in text.split(","))}


def measure_meshes(shapes: list[dict], width: int, chains: int, flops: float, seconds: float):
    """Each mesh shape that fits the devices present, at one model size."""
    rows = []
    for shape in [{"chains": 1, "data": 1, "model": 1}, *shapes]:
        size = int(np.prod(list(shape.values())))
        if size > jax.device_count():
            print(f"mesh {shape}: needs {size} devices, {jax.device_count()} present; skipped")
            continue
        mesh = Mesh(np.array(jax.devices()[:size]).reshape(*shape.values()), tuple(shape))
        r = measure(width, chains, flops, seconds, mesh=mesh)
        rows.append(r)
        mem = "-" if r["memory_bytes"] is None else f"{r['memory_bytes'] / 2**20:.1f} MiB"
        print(
            f"mesh {shape}: d = {r['d']}, {chains} chains: {r['chain_steps_per_s']:.1f} "
            f"chain-steps/s, {mem} per device",
            flush=True,
        )
    return rows


def plot(rows: list[dict], out, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for chains in sorted({r["chains"] for r in rows}):
        sel = [r for r in rows if r["chains"] == chains]
        d = [r["d"] for r in sel]
        axes[0].plot(d, [r["chain_steps_per_s"] for r in sel], "o-", label=f"{chains} chains")
        if all(r["memory_bytes"] for r in sel):
            axes[1].plot(
                d, [r["memory_bytes"] / 2**20 for r in sel], "o-", label=f"{chains} chains"
            )
    d = sorted({r["d"] for r in rows})
    axes[1].plot(d, [4 * x / 2**20 for x in d], "k:", label="one copy of the parameters")
    axes[0].set(xscale="log", yscale="log", xlabel="parameters d", ylabel="chain-steps / s")
    axes[1].set(xscale="log", yscale="log", xlabel="parameters d", ylabel="compiled program, MiB")
    for ax in axes:
        ax.legend(fontsize=8)
    device = jax.devices()[0]
    fig.suptitle(f"SGLD throughput and memory ({device.platform}: {device.device_kind})")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close("all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-params", type=int, default=1_100_000)
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--flops", type=float, default=2e10, help="rough device flop/s")
    parser.add_argument("--name", default="scaling")
    parser.add_argument("--meshes", nargs="*", default=[], help="e.g. chains=2,model=2 data=4")
    parser.add_argument("--mesh-width", type=int, default=707, help="model width for --meshes")
    args, out = parse_args(
        parser,
        "scaling",
        quick=f"d up to {QUICK_MAX_PARAMS:,}, chains {QUICK_CHAINS}, {QUICK_SECONDS} s of "
        "sampling each",
    )
    seconds = SECONDS
    if args.quick:
        args.max_params, args.chains, seconds = QUICK_MAX_PARAMS, QUICK_CHAINS, QUICK_SECONDS
    widths = [w for w in (22, 71, 224, 707, 2236) if 2 * w * w <= args.max_params]
    print(
        f"{'d':>9} {'chains':>6} {'steps':>6} {'chain-steps/s':>14} {'compile':>8} {'memory':>10}"
    )
    rows = []
    for width in widths:
        for chains in args.chains:
            r = measure(width, chains, args.flops, seconds)
            rows.append(r)
            mem = "-" if r["memory_bytes"] is None else f"{r['memory_bytes'] / 2**20:.1f} MiB"
            print(
                f"{r['d']:9d} {chains:6d} {r['steps']:6d} {r['chain_steps_per_s']:14.1f} "
                f"{r['compile_s']:7.1f}s {mem:>10}",
                flush=True,
            )
    mesh_width = 22 if args.quick else args.mesh_width
    mesh_rows = measure_meshes(
        [parse_mesh(m) for m in args.meshes], mesh_width, 4, args.flops, seconds
    )
    payload = {"rows": rows, "mesh_rows": mesh_rows, "batch": BATCH, "n": N}
    path = write(out, args.name, {**payload, "quick": True} if args.quick else payload)
    plot(rows, out, args.name)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
