"""Statistics of the chains' traces: R-hat, ESS, rise tests and lower-loss escapes.

Everything here runs in NumPy on host traces, so a result costs no compilation after its
run. :func:`rhat` and :func:`ess_bulk` follow Vehtari et al. (2021) exactly as blackjax
does (rank-normalised split R-hat, the maximum of its bulk and folded parts; bulk ESS with
Geyer's initial monotone sequence), in float64.
"""

import math
import warnings

import numpy as np
from scipy import fft, special, stats

__all__ = [
    "ESCAPE_DROP",
    "RHAT_LIMIT",
    "convergence",
    "draws_rise",
    "escapes",
    "ess_bulk",
    "rhat",
    "rise",
    "rising",
    "settled",
    "standard_error",
    "virial_ratio",
]

RHAT_LIMIT = 1.05
RISE_T = 3.0  # not_stationary: the rise must exceed this many standard errors ...
RISE_REL = 0.02  # ... and this fraction of the estimate


def standard_error(std: float, chains: int) -> float:
    """Standard error of a mean over ``chains`` independent chains (NaN below two).

    Examples:
        >>> standard_error(2.0, 4)
        1.0
    """
    return std / math.sqrt(chains) if chains > 1 else math.nan


def convergence(trace: np.ndarray) -> tuple[float, float]:
    """Rank-normalised split R-hat and bulk ESS of a ``(chains, draws)`` trace.

    NaN for both with fewer than 2 chains or 4 draws, or a non-finite value.
    """
    if trace.shape[0] < 2 or trace.shape[1] < 4 or not np.all(np.isfinite(trace)):
        return math.nan, math.nan
    x = np.asarray(trace, np.float64)
    return rhat(x), ess_bulk(x)


def _split(x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, half : 2 * half]], axis=0)


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    """Blom's normal scores of the pooled average ranks."""
    ranks = stats.rankdata(x, method="average").reshape(x.shape)
    return special.ndtri((ranks - 3.0 / 8) / (x.size + 1.0 / 4))


def _psrf(x: np.ndarray) -> float:
    """Gelman and Rubin's potential scale reduction of ``(chains, draws)``."""
    n = x.shape[1]
    between = n * np.var(x.mean(axis=1), ddof=1)
    within = np.mean(np.var(x, axis=1, ddof=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sqrt((between / within + n - 1) / n))


def rhat(x: np.ndarray) -> float:
    """Rank-normalised split R-hat: the maximum of its bulk and folded (tail) parts.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(4, 1000))
        >>> round(rhat(x), 2)
        1.0
        >>> rhat(x + np.arange(4)[:, None]) > 1.05
        True
    """
    s = _split(np.asarray(x, np.float64))
    bulk = _psrf(_rank_normalize(s))
    tail = _psrf(_rank_normalize(np.abs(s - np.median(s))))
    return max(bulk, tail)


def ess_bulk(x: np.ndarray) -> float:
    """Bulk effective sample size of ``(chains, draws)`` (rank-normalised, split).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(4, 1000))
        >>> 3000 < ess_bulk(x) < 5000
        True
    """
    return _ess(_rank_normalize(_split(np.asarray(x, np.float64))))


def _ess(x: np.ndarray) -> float:
    """Stan's ESS with Geyer's initial positive and monotone sequences."""
    m, n = x.shape
    if np.isnan(x).any():
        return math.nan
    if not np.any(x != x[0, 0]):
        return 0.0
    means = x.mean(axis=1)
    length = fft.next_fast_len(2 * n)
    f = np.fft.rfft(x - means[:, None], n=length, axis=1)
    acov = (np.fft.irfft(f * np.conjugate(f), n=length, axis=1)[:, :n] / n).mean(axis=0)
    var0 = acov[0] * n / (n - 1.0)
    if var0 <= 0:
        return 0.0
    weighted = var0 * (n - 1.0) / n + (np.var(means, ddof=1) if m > 1 else 0.0)
    rho = np.concatenate([[1.0], 1.0 - (var0 - acov[1 : n - n % 2]) / weighted])
    even, odd = rho[0::2].copy(), rho[1::2].copy()
    positive = np.logical_and.accumulate(even + odd > 0)
    last = int(np.flatnonzero(positive)[-1]) if positive.any() else 0
    nxt = min(last + 1, even.size - 1)  # blackjax gathers with clamping
    mask_even = positive.copy()
    if last + 1 < even.size:
        mask_even[last + 1] = even[last + 1] > 0
    odd = np.where(positive, odd, 0.0)
    even = np.where(mask_even, even, 0.0)
    pair = even + odd
    carry, update, value = pair[0], np.zeros(pair.size, bool), np.zeros(pair.size)
    for t in range(pair.size):  # the initial monotone sequence
        update[t] = pair[t] > carry
        carry = carry if update[t] else pair[t]
        value[t] = carry
    even = np.where(update, value / 2.0, even)
    odd = np.where(update, value / 2.0, odd)
    tau = -1.0 + 2.0 * np.sum(even + odd) - even[nxt]
    tau = max(tau, 1.0 / np.log10(m * n))
    return float(m * n / tau)


def rise(earlier: np.ndarray, later: np.ndarray):
    """How much the chains' mean of ``nbeta (L - L*)`` rose from one window to a later one.

    ``earlier`` and ``later`` are ``(chains, steps)`` traces (lengths may differ).
    Returns ``(rise, stderr)``: the mean over chains of each chain's rise and its
    standard error across chains; None with fewer than two chains, windows shorter than
    four steps, or non-finite values.
    """
    chains = later.shape[0]
    if chains < 2 or min(earlier.shape[1], later.shape[1]) < 4:
        return None
    diff = later.mean(axis=1) - earlier.mean(axis=1)
    if not np.all(np.isfinite(diff)):
        return None
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(chains))


def draws_rise(burnin: np.ndarray, draws: np.ndarray):
    """:func:`rise` from the second half of the burn-in to the draws, and its wording.

    If the burn-in is shorter than 8 steps: from the first to the second half of the
    draws.
    """
    steps = burnin.shape[1]
    if steps >= 8:
        where = f"from the last {steps - steps // 2} burn-in steps to the draws"
        return rise(burnin[:, steps // 2 :], draws), where
    half = draws.shape[1] // 2
    return rise(draws[:, :half], draws[:, half:]), "from the first to the second half of the draws"


def settled(rise, level: float, last: np.ndarray) -> bool:
    """Whether a burn-in has stopped rising: its rise is bounded below the tolerance.

    ``rise`` from :func:`rise`, ``level`` the mean of the later window, ``last`` the
    chains' means over the last ``W`` steps (the draws' span). The upper bound
    ``rise + 2 stderr`` must be below ``max(2% of the level, 2 stderr of last)``: the
    trend left is then within two standard errors of what the draws will estimate, and
    a comparison too noisy to tell (short windows early on) does not pass for a flat one.
    """
    precision = float(np.std(last, ddof=1) / np.sqrt(last.size))
    return rise[0] + 2 * rise[1] <= max(RISE_REL * abs(level), 2 * precision)


def rising(rise, level: float) -> bool:
    """Whether :func:`rise`'s result is a real rise: 3 stderr and 2% of ``level``."""
    return (
        rise is not None
        and level != 0
        and rise[0] > RISE_T * rise[1]
        and rise[0] > RISE_REL * abs(level)
    )


def virial_ratio(virial: np.ndarray, dimension: int):
    """Each chain's mean of ``(w - w*) . grad U(w)`` over its draws, divided by ``dimension``.

    At stationarity of any density ``exp(-U)`` with enough decay, integration by parts
    gives ``E[(w - c) . grad U(w)] = d`` for every point c (here c = w*, d the number of
    weights that move): the ratio is 1 whatever the loss. Its mean and standard error
    across chains: ``(per_chain, mean, stderr)``; stderr NaN with fewer than two chains.

    Examples:
        A standard normal in 3 dimensions, ``U = |w|^2 / 2``: ``w . grad U = |w|^2``.

        >>> import numpy as np
        >>> w = np.random.default_rng(0).normal(size=(4, 20000, 3))
        >>> per_chain, mean, stderr = virial_ratio(np.sum(w**2, axis=2), 3)
        >>> abs(mean - 1) < 4 * stderr
        True
    """
    per_chain = np.asarray(virial, np.float64).mean(axis=1) / max(dimension, 1)
    chains = per_chain.size
    mean = float(per_chain.mean()) if chains else math.nan
    stderr = standard_error(float(per_chain.std(ddof=1)), chains) if chains > 1 else math.nan
    return per_chain, mean, stderr


ESCAPE_DROP = 1.0
"""A chain escaped when ``nbeta (L_n(w) - L_n(w*)) < -ESCAPE_DROP`` (a unit of temperature)."""


def escapes(out, nbeta, burnin, steps_bw_draws, diverged) -> dict:
    """Per-chain lower-loss statistics from the full-batch checks (or the minibatch trace)."""
    checked = np.flatnonzero(np.isfinite(out.full_delta).all(axis=0)) if out.full_delta.size else []
    steps = burnin + steps_bw_draws * (np.asarray(checked, np.int64) + 1) - 1
    if len(checked):
        drops = nbeta * out.full_delta[:, checked].astype(np.float64)
        below = drops < -ESCAPE_DROP
        first = np.where(below.any(axis=1), steps[np.argmax(below, axis=1)], -1)
        escaped = below.any(axis=1)
    else:
        drops = nbeta * out.delta.astype(np.float64)
        half = drops[:, drops.shape[1] // 2 :]
        with warnings.catch_warnings():  # a diverged chain's trace is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            escaped = np.nanmean(half, axis=1) < -ESCAPE_DROP
        draw_steps = burnin + steps_bw_draws * np.arange(1, drops.shape[1] + 1) - 1
        first = np.where(escaped, draw_steps[np.argmax(drops < -ESCAPE_DROP, axis=1)], -1)
    escaped = escaped & ~diverged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "full_loss_trace": (drops / nbeta) if len(checked) else np.zeros((len(diverged), 0)),
            "full_loss_steps": steps if len(checked) else np.zeros(0, np.int64),
            "escaped": escaped,
            "escaped_at_step": np.where(escaped, first, -1).astype(np.int64),
            "min_loss_drop": np.nanmin(drops, axis=1),
            "share_below_init": np.mean(drops < -1e-2, axis=1),
        }
