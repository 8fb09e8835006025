"""The default call's compilations, and what JAX's persistent compilation cache does to them.

On small problems the default ``estimate_llc`` call (``step_size="auto"``) and
``llc.diagnose`` spend most of their wall time compiling XLA programs: the calibration
grid, the probes, the run programs, the diagnosis's Lanczos. JAX can keep compiled
programs on disk between processes (its persistent compilation cache); the library leaves
that choice to the user (no ``jax.config.update`` inside it), and this script measures
what it is worth.

Each measurement is a fresh Python process that builds a target of
``benchmarks/defaults.py`` and times, in order: (a) the default call (``step_size="auto"``,
4 chains x 2,000 draws, batch 500), ``llc.diagnose(..., result=a)`` right after it, and (c)
the fixed-step Furman & Lau run at (a)'s step (18,000 burn-in steps, 2,000 draws). Three
conditions per target: no cache; the cache switched on in an empty folder (the first
process fills it); the same folder again (a second process finds the programs there). The
cache is switched on by environment variables only (``JAX_COMPILATION_CACHE_DIR``, and a
minimum compile time and entry size of 0 so that every program is kept).

Reported per condition: the three wall times, (a)/(c), diagnose/(a), and the estimates
(which must not change with the cache). Usage: ``python benchmarks/compile_cache.py``;
``--quick``: the crossing only. Output: a table and
``results/compile_cache/compile_cache.json``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _common import parse_args, write

CASES = ("crossing w1^2 w2^6", "DLN 5-4-4-5 r1")  # targets of defaults.TARGETS
QUICK_CASES = ("crossing w1^2 w2^6",)
CONDITIONS = ("no cache", "cache, first process", "cache, second process")
_CACHE_VARIABLES = ("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "JAX_ENABLE_COMPILATION_CACHE")


def child(name: str) -> dict:
    """In this process: build ``name``, time (a), diagnose after it, and (c)."""
    import jax
    from defaults import BATCH, CHAINS, DRAWS, TARGETS, build, fixed_settings

    import llc

    warnings.simplefilter("ignore", RuntimeWarning)
    seed, kind, spec = next((i, k, s) for i, (n, k, s) in enumerate(TARGETS) if n == name)
    target = build(kind, spec, seed, quick=True)  # the reference is not needed here
    args = (target["loss_fn"], target["params"], target["data"])
    start = time.perf_counter()
    a = llc.estimate_llc(
        jax.random.key(1),
        *args,
        batch_size=BATCH,
        num_chains=CHAINS,
        num_draws=DRAWS,
        progress_bar=False,
    )
    t_a = time.perf_counter() - start
    start = time.perf_counter()
    llc.diagnose(jax.random.key(0), *args, result=a)
    t_diag = time.perf_counter() - start
    start = time.perf_counter()
    c = llc.estimate_llc(
        jax.random.key(1),
        *args,
        batch_size=BATCH,
        progress_bar=False,
        **fixed_settings(a.step_size, DRAWS),
    )
    t_c = time.perf_counter() - start
    return {
        "a_s": t_a,
        "diagnose_s": t_diag,
        "c_s": t_c,
        "a_llc": float(a.llc_mean),
        "c_llc": float(c.llc_mean),
    }


def measure(name: str, cache: str | None) -> dict:
    """:func:`child` in a fresh process, with the persistent cache in ``cache`` (or none)."""
    # the caller's own cache settings are dropped: "no cache" means none
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CACHE_VARIABLES)}
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    out = subprocess.run(
        [sys.executable, __file__, "--child", name],
        env=env,
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    if "--child" in sys.argv:
        print(json.dumps(child(parser.parse_known_args()[0].child)))
        return
    args, out = parse_args(parser, "compile_cache", quick=", ".join(QUICK_CASES))
    rows = []
    print(f"{'target':<20} {'condition':<24} {'(a)':>6} {'diag':>6} {'(c)':>6} {'a/c':>6} "
          f"{'diag/a':>7}  estimates (a), (c)")  # fmt: skip
    for name in QUICK_CASES if args.quick else CASES:
        with tempfile.TemporaryDirectory() as folder:
            caches = (None, folder, folder)
            for condition, cache in zip(CONDITIONS, caches, strict=True):
                r = measure(name, cache)
                r.update(target=name, condition=condition)
                r["a_over_c"] = r["a_s"] / r["c_s"]
                r["diagnose_over_a"] = r["diagnose_s"] / r["a_s"]
                rows.append(r)
                print(
                    f"{name:<20} {condition:<24} {r['a_s']:5.1f}s {r['diagnose_s']:5.1f}s "
                    f"{r['c_s']:5.1f}s {r['a_over_c']:5.2f}x {r['diagnose_over_a']:6.0%}  "
                    f"{r['a_llc']:.5g}, {r['c_llc']:.5g}",
                    flush=True,
                )
    path = write(out, "compile_cache", {"conditions": list(CONDITIONS), "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
