"""Figures of results: each function takes a result and returns a matplotlib figure.

matplotlib is imported when a function is called (``pip install llc[plot]``).

Examples:
    >>> import jax, jax.numpy as jnp, llc
    >>> r = llc.estimate_llc(jax.random.key(0), lambda w, b: 0.5 * jnp.sum(w**2),
    ...                      jnp.zeros(3), jnp.zeros((100, 1)), step_size=1e-2,
    ...                      num_draws=1000, num_burnin_steps=200)
    >>> fig = loss_traces(r)
    >>> len(fig.axes)
    1
"""

import numpy as np

__all__ = ["calibration", "hessian_spectrum", "llc_per_chain", "loss_traces", "trajectory"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        msg = "llc.plot needs matplotlib (pip install 'llc[plot]' or pip install matplotlib)."
        raise ImportError(msg) from err
    return plt


def _axes(ax, figsize):
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def loss_traces(result, *, ax=None, relative: bool = True):
    """Loss per chain over the whole run, burn-in included.

    ``L_n(w*)`` is the horizontal line, the burn-in is shaded, chains that escaped to
    lower loss are drawn in red and diverged chains dashed. With ``relative`` the y axis
    is ``nbeta * (L - L_n(w*))``, whose mean over the draws is each chain's estimate.

    Args:
        result: an :class:`llc.LLCResult`.
        ax: an existing matplotlib axis (default: a new figure).
        relative: plot ``nbeta * (L - L*)`` rather than the loss.

    Returns:
        The figure.

    Examples:
        >>> import jax, jax.numpy as jnp, llc
        >>> r = llc.estimate_llc(jax.random.key(0), lambda w, b: 0.5 * jnp.sum(w**2),
        ...                      jnp.zeros(3), jnp.zeros((100, 1)), step_size=1e-2,
        ...                      num_chains=2, num_draws=500, num_burnin_steps=100)
        >>> len(loss_traces(r).axes[0].lines)  # 2 per chain, L_n(w*), the mean
        6
    """
    fig, ax = _axes(ax, (7, 3.6))
    burn = result.num_burnin_steps
    k = result.num_steps_bw_draws
    draw_steps = burn + k * np.arange(1, result.num_draws + 1) - 1
    scale = result.nbeta if relative else 1.0
    base = result.init_loss if relative else 0.0
    for c in range(result.num_chains):
        escaped, diverged = bool(result.escaped[c]), bool(result.diverged[c])
        color = "tab:red" if escaped else f"C{c % 10}" if c % 10 != 3 else "C9"
        style = "--" if diverged else "-"
        label = (
            f"chain {c}" + (" (escaped)" if escaped else "") + (" (diverged)" if diverged else "")
        )
        ax.plot(
            np.arange(burn),
            scale * (result.burnin_loss_trace[c] - base),
            style,
            color=color,
            lw=0.6,
            alpha=0.5,
        )
        ax.plot(
            draw_steps,
            scale * (result.loss_trace[c] - base),
            style,
            color=color,
            lw=0.7,
            label=label if result.num_chains <= 8 else None,
        )
    ax.axhline(0.0 if relative else result.init_loss, color="k", lw=1, label="L_n(w*)")
    if burn:
        ax.axvspan(0, burn, color="0.9", zorder=-1, label="burn-in")
    if relative and np.isfinite(result.llc_mean):
        ax.axhline(result.llc_mean, color="k", ls=":", lw=1, label=f"λ̂ = {result.llc_mean:.3g}")
    ax.set(
        xlabel="step",
        ylabel="nβ (L − L_n(w*))" if relative else "loss",
        title=f"{result.sampler}: loss per chain",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def llc_per_chain(result, *, ax=None):
    """Each chain's estimate, with the mean and its standard error (diverged: omitted).

    Args:
        result: an :class:`llc.LLCResult`.
        ax: an existing axis (default: a new figure).

    Returns:
        The figure.

    Examples:
        >>> import jax, jax.numpy as jnp, llc
        >>> r = llc.estimate_llc(jax.random.key(0), lambda w, b: 0.5 * jnp.sum(w**2),
        ...                      jnp.zeros(3), jnp.zeros((100, 1)), step_size=1e-2,
        ...                      num_chains=3, num_draws=500, num_burnin_steps=100)
        >>> llc_per_chain(r).axes[0].collections[0].get_offsets().shape
        (3, 2)
    """
    fig, ax = _axes(ax, (5, 3.2))
    chains = np.arange(result.num_chains)
    ok = ~result.diverged
    colors = np.where(result.escaped[ok], "tab:red", "tab:blue")
    ax.scatter(chains[ok], result.llc_per_chain[ok], c=colors, zorder=3)
    if np.isfinite(result.llc_mean):
        se = result.llc_stderr if np.isfinite(result.llc_stderr) else 0.0
        ax.axhline(result.llc_mean, color="k", lw=1, label=f"mean {result.llc_mean:.4g}")
        ax.axhspan(
            result.llc_mean - 2 * se, result.llc_mean + 2 * se, color="0.85", label="± 2 s.e."
        )
    for c in chains[~ok]:
        ax.axvline(c, color="tab:red", ls="--", lw=0.8)
    ax.set(xlabel="chain", ylabel="λ̂", title="estimate per chain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration(cal, *, axes=None):
    """A calibration grid: the estimate and the predicted bias against the step size.

    One line per localization; healthy settings filled, the others hollow with their
    reason in the table (``cal.table()``); the recommended setting starred.

    Args:
        cal: an :class:`llc.CalibrationResult`.
        axes: two existing axes (default: a new figure).

    Returns:
        The figure.

    Examples:
        >>> import jax, jax.numpy as jnp, llc
        >>> cal = llc.calibrate(jax.random.key(0), lambda w, b: 0.5 * jnp.sum(w**2),
        ...                     jnp.zeros(3), jnp.zeros((100, 1)), num_draws=100)
        >>> [ax.get_xscale() for ax in calibration(cal).axes]
        ['log', 'log']
    """
    plt = _pyplot()
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    else:
        fig = axes[0].figure
    ax_llc, ax_bias = axes
    eps = cal.step_sizes
    for g, gamma in enumerate(cal.localizations):
        color = f"C{g}"
        se = cal.llc_std[g] / np.sqrt(max(cal.results[g][0].num_chains, 1))
        ax_llc.errorbar(
            eps, cal.llc_mean[g], yerr=2 * se, color=color, lw=1, capsize=2, label=f"γ = {gamma:g}"
        )
        healthy = cal.healthy[g]
        ax_llc.scatter(eps[healthy], cal.llc_mean[g][healthy], color=color, zorder=3)
        ax_llc.scatter(
            eps[~healthy], cal.llc_mean[g][~healthy], facecolor="white", edgecolor=color, zorder=3
        )
        ax_bias.plot(
            eps,
            100 * cal.predicted_bias[g],
            "o-",
            color=color,
            ms=3,
            label=f"predicted bias, γ = {gamma:g}",
        )
        accept = cal.acceptance[g]
        if np.isfinite(accept).any():
            ax_bias.plot(
                eps,
                100 * (1 - accept),
                "s:",
                color=color,
                ms=3,
                label=f"1 − MALA acceptance, γ = {gamma:g}",
            )
    g = list(cal.localizations).index(cal.recommended["localization"])
    s = list(eps).index(cal.recommended["step_size"])
    ax_llc.scatter(
        [eps[s]],
        [cal.llc_mean[g, s]],
        marker="*",
        s=250,
        color="gold",
        edgecolor="k",
        zorder=4,
        label="recommended",
    )
    ax_llc.set(
        xscale="log",
        xlabel="step size ε",
        ylabel="λ̂ (± 2 s.e.)",
        title="calibration runs (hollow: fails a check)",
    )
    ax_llc.legend(fontsize=8)
    ax_bias.set(
        xscale="log",
        yscale="log",
        xlabel="step size ε",
        ylabel="%",
        title="predicted step-size bias",
    )
    ax_bias.axhline(100 * cal.max_bias, color="k", ls="--", lw=1)
    ax_bias.legend(fontsize=7)
    fig.tight_layout()
    return fig


def hessian_spectrum(spectrum, *, nbeta=None, localization=None, ax=None, grid_size=400):
    """The Hessian's spectral density (SLQ), its negative part shaded.

    With ``nbeta`` and ``localization``, the confinement threshold is marked: a
    direction of curvature ``mu < -localization / nbeta`` is not held by the localizer
    (``nbeta |mu_min|`` against ``localization`` is in the title).

    Args:
        spectrum: an :class:`llc.HessianSpectrum` (or a :class:`llc.Diagnosis`, whose
            spectrum, nbeta and localization are used).
        nbeta: the sampler's nbeta.
        localization: the sampler's gamma.
        ax: an existing axis (default: a new figure).
        grid_size: points on the eigenvalue axis.

    Returns:
        The figure.

    Examples:
        >>> import jax, jax.numpy as jnp, llc
        >>> loss_fn = lambda w, b: 0.5 * jnp.sum(jnp.array([1.0, 2.0, -0.1]) * w**2)
        >>> spectrum = llc.hessian_spectrum(jax.random.key(0), loss_fn, jnp.zeros(3),
        ...                                 jnp.zeros((10, 1)))
        >>> fig = hessian_spectrum(spectrum, nbeta=100.0, localization=1.0)
        >>> fig.axes[0].get_title().splitlines()[1]
        'nβ|λ_min| = 10 vs γ = 1'
    """
    if hasattr(spectrum, "spectrum"):  # a Diagnosis
        nbeta = spectrum.nbeta if nbeta is None else nbeta
        localization = spectrum.localization if localization is None else localization
        spectrum = spectrum.spectrum
    fig, ax = _axes(ax, (6, 3.6))
    lo, hi = spectrum.min_eigenvalue, spectrum.max_eigenvalue
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, grid_size)
    density = spectrum.density(grid)
    ax.plot(grid, density, color="k", lw=1)
    neg = grid < 0
    ax.fill_between(
        grid[neg],
        density[neg],
        color="tab:red",
        alpha=0.4,
        label=f"negative: {spectrum.negative_fraction():.1%}",
    )
    ax.fill_between(grid[~neg], density[~neg], color="tab:blue", alpha=0.25)
    title = f"Hessian spectrum, λ_min = {lo:.3g}, λ_max = {hi:.3g}"
    if nbeta is not None and localization is not None:
        threshold = -localization / nbeta
        ax.axvline(
            threshold,
            color="tab:red",
            ls="--",
            lw=1,
            label=f"−γ/nβ = {threshold:.3g} (confinement)",
        )
        title += f"\nnβ|λ_min| = {nbeta * max(-lo, 0):.3g} vs γ = {localization:g}"
    ax.set(yscale="log", xlabel="eigenvalue", ylabel="density", title=title)
    ax.set_ylim(bottom=max(density.max() * 1e-6, 1e-12))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trajectory(traj, *, steps=None, ax=None):
    """The LLC along a training run: estimate ± 2 s.e. per checkpoint, flagged ones marked.

    Args:
        traj: an :class:`llc.TrajectoryResult`.
        steps: the training step of each checkpoint (default 0, 1, ...).
        ax: an existing axis (default: a new figure).

    Returns:
        The figure.

    Examples:
        >>> import jax, jax.numpy as jnp, llc
        >>> traj = llc.estimate_llc_trajectory(
        ...     jax.random.key(0), lambda w, b: 0.5 * jnp.sum(w**2),
        ...     jnp.zeros((3, 2)), jnp.zeros((100, 1)), step_size=1e-2, num_draws=200)
        >>> trajectory(traj, steps=[0, 10, 20]).axes[0].get_xlabel()
        'training step'
    """
    fig, ax = _axes(ax, (6, 3.6))
    x = np.arange(len(traj.llc_mean)) if steps is None else np.asarray(steps)
    se = np.nan_to_num(traj.llc_stderr)
    ax.errorbar(x, traj.llc_mean, yerr=2 * se, fmt="o-", ms=3, capsize=2, label="λ̂ ± 2 s.e.")
    flagged = np.array([bool(f) for f in traj.flags])
    if flagged.any():
        ax.scatter(
            x[flagged],
            traj.llc_mean[flagged],
            marker="x",
            s=60,
            color="tab:red",
            zorder=3,
            label="flagged (see .flags)",
        )
    ax.set(
        xlabel="training step" if steps is not None else "checkpoint",
        ylabel="λ̂",
        title="LLC along training",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
