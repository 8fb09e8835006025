"""Shared test helpers: exact targets and standard-error-based tolerances."""

import math

import jax.numpy as jnp
import numpy as np

Z = 4.0
"""Tolerance in standard errors. With independent chains the estimate's error is close
to normal; |z| > 4 happens with probability 6e-5, so a failure means a real bias."""


def assert_within_stderr(result, target, *, z=Z, extra=0.0):
    """|llc_mean - target| <= z * stderr (+ a stated, derived systematic bound)."""
    se = result.llc_stderr
    assert math.isfinite(se) and se > 0, f"no usable standard error: {se}"
    err = result.llc_mean - target
    assert abs(err) <= z * se + extra, (
        f"llc_mean {result.llc_mean:.5g} vs target {target:.5g}: error {err:.4g} is "
        f"{abs(err) / se:.1f} stderr (stderr {se:.3g}, allowed {z} + extra {extra:.3g})"
    )


def quadratic_target(mu, nbeta, localization, step_size=None):
    """E[lambda_hat] for K = 0.5 * sum mu_i w_i^2: exact, or for full-batch ULA (Lau eps).

    slt-reference.md section 3.1: 0.5 * sum nbeta mu / (p (1 - eps p / 4)), p = nbeta mu + gamma.
    """
    mu = np.asarray(mu, np.float64)
    p = nbeta * mu + localization
    factor = 1.0 if step_size is None else 1.0 / (1.0 - step_size * p / 4.0)
    return float(0.5 * np.sum(nbeta * mu / p * factor))


def dummy_data(n):
    """A data set the loss ignores: only its length n matters (for nbeta = n / log n)."""
    return jnp.zeros((n, 1), jnp.float32)
