"""Do chains started at w* reach the localized posterior in time, and do dispersed starts help?

An exploratory measurement for issue 29 (the default call at degenerate minima). On the
deep linear networks of ``defaults.py`` (same targets, same seeds, the step the default call
ended with, read from ``results/defaults/defaults.json``), three ways to run SGLD with 4
chains, batch 500:

- ``w*``: from w*, Furman & Lau's proportions (18,000 burn-in steps, 2,000 draws): the
  fixed run ``(c)`` of ``defaults.py``;
- ``long``: from w*, ``--long-steps`` steps (default 100,000), every 10th step a draw; the
  estimate per tenth of the run shows how slowly the chains reach their level, and the
  distance ``||w - w*||`` how far they spread;
- ``laplace``: each chain starts at ``w* + delta``, ``delta`` a draw of the Laplace
  approximation ``N(0, (nbeta H + gamma I)^-1)`` of the localized posterior at w* (dense
  full-data Hessian, so only for small d): exactly flat directions start at their
  equilibrium spread ``1 / sqrt(gamma)``, singular ones wider than it. Then 1,000 burn-in
  steps and 2,000 draws at the same step.
- ``projected``: the same Laplace draws, each first moved to the nearest low-loss point,
  ``argmin_w nbeta (L_n(w) - L_n(w*)) + |w - (w* + delta)|^2 / 2`` (``PROJECT_ITERATIONS``
  L-BFGS iterations, optax): the singular directions collapse onto the set of minima, the
  exactly flat ones keep their spread. Then as ``laplace``.

Each run also records ``E[(w - w*) . grad U] / d`` (``result.virial_ratio``, 1 at
equilibrium; the long runs per tenth), the check behind the ``not_equilibrated`` flag.
The reference is Aoyagi's lambda, as in ``defaults.py``. Nothing here is the library's
default; the numbers decide whether dispersed starts are worth building.

Usage (from the repository root)::

    python benchmarks/equilibration.py            # five DLNs, about 5 minutes on 2 cores
    python benchmarks/equilibration.py --quick    # DLN 3-4-3, short runs

Outputs: a table on stdout and ``results/equilibration/equilibration.json``.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import parse_args, write
from defaults import BATCH, CHAINS, TARGETS, build
from jax.flatten_util import ravel_pytree

from llc import loop
from llc.burnin import segment
from llc.execute import execute_chunks
from llc.plan import make_plan
from llc.report import assemble
from llc.settings import Settings

DEFAULTS_JSON = Path(__file__).resolve().parent / "results" / "defaults" / "defaults.json"
SUITE = ("DLN 3-4-3 r1", "DLN 4-6-4 r2", "DLN 6-5-5-6 r2", "DLN 5-5-5-5-5 r2", "DLN 10-8-8-10 r4")
LONG_SUITE = ("DLN 3-4-3 r1", "DLN 4-6-4 r2", "DLN 6-5-5-6 r2")
SAMPLING_KEY, START_KEY = 1, 101
PROJECT_ITERATIONS = 200


def chosen_steps() -> dict:
    """The step the default call ended with per target (``defaults.py``'s committed run)."""
    rows = json.loads(DEFAULTS_JSON.read_text())["rows"]
    return {row["name"]: row["runs"]["a"]["step_size"] for row in rows}


def laplace_starts(key, target, nbeta: float, gamma: float, chains: int):
    """``chains`` draws of ``N(w*, (nbeta H + gamma I)^-1)``, H the full-data Hessian at w*."""
    flat, unravel = ravel_pytree(target["params"])
    hess = jax.hessian(lambda v: target["loss_fn"](unravel(v), target["data"]))(flat)
    mu, vec = np.linalg.eigh(np.asarray(hess, np.float64))
    z = np.asarray(jax.random.normal(key, (chains, flat.size)), np.float64)
    delta = ((z @ vec) / np.sqrt(nbeta * np.clip(mu, 0, None) + gamma)) @ vec.T
    return jax.vmap(unravel)(jnp.asarray(flat[None] + delta, flat.dtype))


def projected(target, nbeta: float, starts):
    """Each start moved to ``argmin nbeta (L - L*) + |w - start|^2 / 2`` (L-BFGS, optax)."""
    flat, unravel = ravel_pytree(target["params"])
    base = target["loss_fn"](target["params"], target["data"])

    def one(start):
        def objective(v):
            excess = target["loss_fn"](unravel(v), target["data"]) - base
            return nbeta * excess + 0.5 * jnp.sum((v - start) ** 2)

        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(objective)

        def body(_, carry):
            v, state = carry
            value, grad = value_and_grad(v, state=state)
            update, state = opt.update(grad, state, v, value=value, grad=grad, value_fn=objective)
            return optax.apply_updates(v, update), state

        return jax.lax.fori_loop(0, PROJECT_ITERATIONS, body, (start, opt.init(start)))[0]

    moved = jax.jit(jax.vmap(one))(jax.vmap(lambda p: ravel_pytree(p)[0])(starts))
    return jax.vmap(unravel)(moved)


def sample(target, step: float, burnin: int, draws: int, every: int = 1, start=None):
    """One SGLD run (from w*, or ``start``: "laplace", "projected"), its result and wall time."""
    t0 = time.perf_counter()
    settings = Settings.build(
        "estimate_llc",
        step_size=step,
        batch_size=BATCH,
        num_chains=CHAINS,
        num_draws=draws,
        num_burnin_steps=burnin + 1,
        num_steps_bw_draws=every,
        progress_bar=False,
    )
    key = jax.random.key(SAMPLING_KEY)
    plan = make_plan(key, target["loss_fn"], target["params"], target["data"], settings)
    dtype = jnp.result_type(*jax.tree.leaves(plan.params))
    hyper = loop.make_hyper(step, plan.nbeta, plan.localization, plan.init_loss, dtype)
    chunk = plan.config._replace(num_draws=0, chunked=True, progress_total=1)
    resume, first, _, _ = segment(plan, hyper, None, chunk, 0, 1)
    if start:  # the first step from w*, then every chain moved to its own start
        starts = laplace_starts(
            jax.random.key(START_KEY), target, plan.nbeta, plan.localization, CHAINS
        )
        if start == "projected":
            starts = projected(target, plan.nbeta, starts)
        resume = (resume[0]._replace(position=starts), *resume[1:])
    resume, rest, _, _ = segment(plan, hyper, resume, chunk, 1, burnin)
    out = execute_chunks(plan, hyper, plan.config, resume, np.concatenate([first, rest], 1))
    result = assemble(plan, out, t0)
    return result, time.perf_counter() - t0, np.asarray(out.virial, np.float64) / plan.num_params


def record(result, wall: float, virial, reference: float, windows: int = 0) -> dict:
    row = {
        "llc_mean": float(result.llc_mean),
        "llc_stderr": float(result.llc_stderr),
        "rel_error": float(result.llc_mean / reference - 1),
        "flags": list(result.flags),
        "diverged_chains": int(np.sum(result.diverged)),
        "final_distance": float(np.nanmean(np.asarray(result.distance_trace)[:, -1])),
        "virial_ratio": float(np.nanmean(result.virial_ratio)),
        "wall_s": wall,
    }
    if windows:
        trace = (np.asarray(result.loss_trace, np.float64) - result.init_loss) * result.nbeta
        dist = np.asarray(result.distance_trace, np.float64)
        row["window_llc"] = [float(w.mean()) for w in np.array_split(trace, windows, axis=1)]
        row["window_distance"] = [float(w.mean()) for w in np.array_split(dist, windows, axis=1)]
        row["window_virial"] = [float(w.mean()) for w in np.array_split(virial, windows, axis=1)]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long-steps", type=int, default=100_000)
    args, out = parse_args(parser, "equilibration", quick="DLN 3-4-3 r1, short runs")
    steps = chosen_steps()
    suite = SUITE[:1] if args.quick else SUITE
    burnin, draws, long_steps = (1800, 200, 4000) if args.quick else (18000, 2000, args.long_steps)
    payload = {"long_steps": long_steps, "sampling_key": SAMPLING_KEY, "rows": []}
    if args.quick:
        payload["quick"] = True
    start = time.perf_counter()
    for name in suite:
        seed = [t[0] for t in TARGETS].index(name)
        _, kind, spec = TARGETS[seed]
        target, step = build(kind, spec, seed, args.quick), steps[name]
        ref = target["reference"]
        runs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            runs["w*"] = record(*sample(target, step, burnin, draws), ref)
            if name in LONG_SUITE:
                long = sample(target, step, 0, long_steps // 10, every=10)
                runs["long"] = record(*long, ref, windows=10)
            for how in ("laplace", "projected"):
                runs[how] = record(*sample(target, step, burnin // 18, draws, start=how), ref)
        payload["rows"].append(
            {"name": name, "d": target["d"], "reference": ref, "step_size": step, "runs": runs}
        )
        for setting, r in runs.items():
            extra = ""
            if "window_llc" in r:
                extra = " windows " + " ".join(f"{w:.3g}" for w in r["window_llc"])
                extra += " virial " + " ".join(f"{w:.2f}" for w in r["window_virial"])
            print(
                f"{name:<18} {setting:<8} {r['llc_mean']:8.4g} ± {r['llc_stderr']:<7.2g} "
                f"{r['rel_error']:+7.1%} dist {r['final_distance']:5.2f} "
                f"virial {r['virial_ratio']:.2f} "
                f"diverged {r['diverged_chains']} {r['wall_s']:5.1f}s "
                f"{','.join(r['flags']) or '-'}{extra}",
                flush=True,
            )
        payload["total_wall_s"] = time.perf_counter() - start
        path = write(out, "equilibration", payload)
    print(f"total {payload['total_wall_s']:.0f} s; written to {path}")


if __name__ == "__main__":
    main()
