"""The quick-start demo: the LLC of a deep linear network, where the answer is known.

Run with ``python -m llc.demo`` (or ``make demo``).
"""

import time

import jax

import llc
from llc import ground_truth


def main() -> None:
    """Estimate the LLC of a deep linear network teacher and compare with Aoyagi's value."""
    problem = ground_truth.make_dln_problem([10, 20, 15, 10], seed=0, num_data=100_000)
    print(f"{problem.name}: d = {problem.num_params} parameters, n = 100,000 samples")
    print("Localized SGLD: step_size 5e-7, localization 1, batch 500, nbeta = n / log n")
    start = time.perf_counter()
    result = llc.estimate_llc(
        jax.random.key(0),
        problem.loss_fn,
        problem.params,
        problem.data,
        step_size=5e-7,
        localization=1.0,
        batch_size=500,
        num_chains=4,
        num_draws=1000,
        num_burnin_steps=9000,
    )
    wall = time.perf_counter() - start
    truth = float(problem.true_lambda)
    print(f"estimated LLC : {result.llc_mean:.2f} +/- {result.llc_stderr:.2f} (standard error)")
    print(f"exact lambda  : {truth:.2f} ({problem.true_lambda}, Aoyagi 2024)")
    print(f"relative error: {(result.llc_mean - truth) / truth:+.1%}")
    print(
        f"chains {result.num_chains}, draws {result.num_draws} per chain after "
        f"{result.num_burnin_steps} burn-in steps, wall time {wall:.1f} s (compilation included)"
    )
    for flag in result.flags:
        print(f"[{flag}] {result.evidence[flag]}")


if __name__ == "__main__":
    main()
