"""The quick-start demo: the LLC of a deep linear network, where the answer is known.

Run with ``python -m llc.demo`` (or ``make demo``).
"""

import time

import jax

import llc
from llc import ground_truth
from llc.hessian import largest_eigenvalue_magnitude


def main() -> None:
    """Estimate the LLC of a deep linear network teacher and compare with its exact value."""
    # Full-rank teacher layers: the teacher is a Morse-Bott point, so the LLC *at* the
    # teacher is known exactly, and here it equals Aoyagi's global learning coefficient.
    problem = ground_truth.make_dln_problem(
        [10, 20, 15, 10], seed=0, num_data=100_000, prop_rank_reduce=0.0
    )
    n = problem.data[0].shape[0]
    nbeta, localization = llc.default_nbeta(n), 1.0
    print(f"{problem.name}: d = {problem.num_params} parameters, n = {n:,} samples")

    start = time.perf_counter()
    # Step size from the curvature: SGLD's discretisation inflates the variance of a
    # direction of precision p by 1 / (1 - step p / 4); step * (nbeta mu_max + gamma) = 0.2
    # keeps that at 5% in the stiffest direction and far less on average.
    mu_max = float(
        largest_eigenvalue_magnitude(
            jax.random.key(1), problem.loss_fn, problem.params, problem.data
        )
    )
    step_size = 0.2 / (nbeta * mu_max + localization)
    print(
        f"largest Hessian eigenvalue {mu_max:.1f} -> step_size {step_size:.2e}; "
        f"localization {localization}, batch 500, nbeta = n / log n = {nbeta:.0f}"
    )
    result = llc.estimate_llc(
        jax.random.key(0),
        problem.loss_fn,
        problem.params,
        problem.data,
        step_size=step_size,
        localization=localization,
        nbeta=nbeta,
        batch_size=500,
        num_chains=4,
        num_draws=2000,
        num_burnin_steps=8000,
    )
    wall = time.perf_counter() - start
    truth = float(problem.local_lambda)
    print(f"estimated LLC : {result.llc_mean:.2f} +/- {result.llc_stderr:.2f} (standard error)")
    print(
        f"exact LLC     : {truth:.2f} (the LLC at this teacher; Aoyagi's lambda "
        f"{problem.true_lambda})"
    )
    print(f"relative error: {(result.llc_mean - truth) / truth:+.1%}")
    print(
        f"chains {result.num_chains}, draws {result.num_draws} per chain after "
        f"{result.num_burnin_steps} burn-in steps, wall time {wall:.1f} s (compilation included)"
    )
    for flag in result.flags:
        print(f"[{flag}] {result.evidence[flag]}")


if __name__ == "__main__":
    main()
