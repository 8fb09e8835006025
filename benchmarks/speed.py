"""SGLD throughput of ``estimate_llc`` against a bare hand-written JAX loop, same run.

Workload (issue 2, and the devinterp comparison of peers.md section 9): deep linear
network 10-10-10-10 (d = 300, true lambda 46), n = 10,000, batch 500, 4 chains x 1,000
draws (no burn-in), nbeta = n / log n, step 1e-4, localization 100.

The bare loop is the same SGLD update written directly: ``lax.scan`` over steps of
``vmap`` over chains, minibatch indices from ``randint``, noise from one normal draw,
recording the minibatch loss. Compile time is measured separately (first call minus a
warm call). Also measured: the control variate's cost (time ratio) and its effect on
the standard error across chains, over repeated seeds, on this workload and on a
6-parameter linear regression with batch 500 (where the issue reports about 14x).

The DLN estimate printed here is not an accuracy figure: at step 1e-4 this workload has
step_size * (nbeta * mu_max + gamma) = 2.1, a large step-size bias (the peer's 46.4 is a
coincidence of that bias and the finite-n shrinkage; small steps converge to ~36). See
benchmarks/accuracy.py for accuracy.

Outputs: a table on stdout and ``results/speed/speed.json``.

Usage: ``python benchmarks/speed.py [--repeats 5]``; ``--quick``: one timing repeat and two
seeds per stderr comparison (the same workload).
"""

import argparse
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from _common import best_of, parse_args, peer_dln_problem, write
from jax.flatten_util import ravel_pytree

import llc
from llc import ground_truth

N, BATCH, CHAINS, DRAWS = 10_000, 500, 4, 1_000
STEP, GAMMA = 1e-4, 100.0


@partial(jax.jit, static_argnames=("loss_fn",))
def bare_sgld(key, anchor, data, nbeta, loss_fn):
    """The same SGLD, hand-written: the baseline."""
    flat0, unravel = ravel_pytree(anchor)

    def chain(key):
        def step(w, k):
            kb, kn = jax.random.split(k)
            idx = jax.random.randint(kb, (BATCH,), 0, N)
            batch = jax.tree.map(lambda x: x[idx], data)
            loss, g = jax.value_and_grad(lambda f: loss_fn(unravel(f), batch))(w)
            noise = jax.random.normal(kn, w.shape, w.dtype)
            w = w - 0.5 * STEP * (nbeta * g + GAMMA * (w - flat0)) + jnp.sqrt(STEP) * noise
            return w, loss

        return jax.lax.scan(step, flat0, jax.random.split(key, DRAWS))[1]

    return jax.vmap(chain)(jax.random.split(key, CHAINS))


def run_library(problem, key, control_variate):
    return llc.estimate_llc(
        key,
        problem.loss_fn,
        problem.params,
        problem.data,
        step_size=STEP,
        localization=GAMMA,
        batch_size=BATCH,
        num_chains=CHAINS,
        num_draws=DRAWS,
        num_burnin_steps=0,
        control_variate=control_variate,
        progress_bar=False,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=8, help="seeds for the stderr comparison")
    args, out = parse_args(parser, "speed", quick="one timing repeat, two seeds")
    if args.quick:
        args.repeats, args.seeds = 1, 2
    warnings.simplefilter("ignore", RuntimeWarning)
    problem = peer_dln_problem(N)
    nbeta = N / np.log(N)
    steps = CHAINS * DRAWS
    key = jax.random.key(0)

    t0 = time.perf_counter()
    jax.block_until_ready(bare_sgld(key, problem.params, problem.data, nbeta, problem.loss_fn))
    bare_first = time.perf_counter() - t0
    bare = best_of(
        lambda: jax.block_until_ready(
            bare_sgld(key, problem.params, problem.data, nbeta, problem.loss_fn)
        ),
        args.repeats,
    )

    timings = {}
    for cv in (False, True):
        t0 = time.perf_counter()
        run_library(problem, key, cv)
        first = time.perf_counter() - t0
        warm = best_of(lambda cv=cv: run_library(problem, key, cv), args.repeats)
        timings[cv] = (first, warm)

    errors = {}
    for cv in (False, True):
        runs = [run_library(problem, jax.random.key(100 + s), cv) for s in range(args.seeds)]
        errors[cv] = {
            "llc_mean": float(np.mean([r.llc_mean for r in runs])),
            "mean_stderr_across_chains": float(np.mean([r.llc_stderr for r in runs])),
            "std_of_llc_mean_across_seeds": float(np.std([r.llc_mean for r in runs], ddof=1)),
        }

    regression = ground_truth.make_regular_problem(6, seed=0, num_data=N)
    reg = {}
    for cv in (False, True):
        runs = [
            llc.estimate_llc(
                jax.random.key(200 + s),
                regression.loss_fn,
                regression.params,
                regression.data,
                step_size=STEP,
                localization=1.0,
                batch_size=BATCH,
                num_chains=CHAINS,
                num_draws=DRAWS,
                num_burnin_steps=200,
                control_variate=cv,
                progress_bar=False,
            )
            for s in range(args.seeds)
        ]
        reg[cv] = float(np.mean([r.llc_stderr for r in runs]))

    plain, with_cv = timings[False][1], timings[True][1]
    result = {
        "workload": {
            "widths": [10, 10, 10, 10],
            "d": problem.num_params,
            "n": N,
            "batch_size": BATCH,
            "chains": CHAINS,
            "draws": DRAWS,
            "step_size": STEP,
            "localization": GAMMA,
            "nbeta": nbeta,
            "true_lambda": float(problem.true_lambda),
        },
        "bare_loop": {"wall_s": bare, "steps_per_s": steps / bare, "compile_s": bare_first - bare},
        "estimate_llc_no_cv": {
            "wall_s": plain,
            "steps_per_s": steps / plain,
            "compile_and_setup_s": timings[False][0] - plain,
            "ratio_to_bare": bare / plain,
        },
        "estimate_llc_cv": {
            "wall_s": with_cv,
            "steps_per_s": steps / with_cv,
            "compile_and_setup_s": timings[True][0] - with_cv,
            "ratio_to_bare": bare / with_cv,
        },
        "control_variate": {
            "time_cost": with_cv / plain,
            "accuracy": {"off": errors[False], "on": errors[True]},
            "stderr_reduction": errors[False]["mean_stderr_across_chains"]
            / errors[True]["mean_stderr_across_chains"],
            "regression_d6_stderr": {
                "off": reg[False],
                "on": reg[True],
                "reduction": reg[False] / reg[True],
            },
        },
    }
    print(
        f"workload: DLN 10-10-10-10 (d = {problem.num_params}), n = {N}, batch {BATCH}, "
        f"{CHAINS} chains x {DRAWS} draws"
    )
    print(
        f"bare JAX loop          : {bare:.3f} s  ({steps / bare:,.0f} chain-steps/s), "
        f"compile {bare_first - bare:.2f} s"
    )
    for name, cv in (("estimate_llc (no CV)", False), ("estimate_llc (CV)", True)):
        first, warm = timings[cv]
        print(
            f"{name:23s}: {warm:.3f} s  ({steps / warm:,.0f} chain-steps/s), "
            f"ratio to bare {bare / warm:.2f}, compile+setup {first - warm:.2f} s"
        )
    print(
        f"control variate: time x{with_cv / plain:.2f}; stderr across chains "
        f"{errors[False]['mean_stderr_across_chains']:.3f} -> "
        f"{errors[True]['mean_stderr_across_chains']:.3f} "
        f"(x{result['control_variate']['stderr_reduction']:.1f} smaller); "
        f"LLC {errors[True]['llc_mean']:.2f} vs true {float(problem.true_lambda):.2f}"
    )
    print(
        f"control variate on a 6-parameter regression (batch {BATCH}): stderr "
        f"{reg[False]:.3f} -> {reg[True]:.3f} (x{reg[False] / reg[True]:.1f} smaller)"
    )
    print(f"written to {write(out, 'speed', result)}")


if __name__ == "__main__":
    main()
