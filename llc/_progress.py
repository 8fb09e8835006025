"""A progress bar for the compiled sampling loop, fed by ``jax.debug.callback``.

The compiled program calls :func:`update` with a run id (a traced integer), so one
compiled program serves every call; the bars themselves live on the host in
``_BARS`` while their run is active. Display only: the callback never raises.
"""

import itertools
import os
import sys

_BARS: dict = {}
_IDS = itertools.count(1)


def enabled(progress_bar) -> bool:
    """Resolve ``progress_bar=None`` to: on for an interactive terminal outside CI."""
    if progress_bar is not None:
        return bool(progress_bar)
    return (
        sys.stderr.isatty() and not os.environ.get("CI") and "PYTEST_CURRENT_TEST" not in os.environ
    )


def rate(total_steps: int) -> int:
    """Steps between updates: about 100 updates per run."""
    return max(1, total_steps // 100)


def open_bar(total_steps: int, description: str) -> int:
    """Create a bar; returns its id (0 when tqdm is unavailable)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with numpyro
        return 0
    run_id = next(_IDS)
    _BARS[run_id] = tqdm(total=total_steps, desc=description, leave=False)
    return run_id


def update(run_id, step, mean_delta, nbeta) -> None:
    """Host callback: move bar ``run_id`` to ``step`` and show the running LLC."""
    try:
        bar = _BARS.get(int(run_id))
        if bar is None:
            return
        bar.n = int(step) + 1
        bar.set_postfix_str(f"nbeta*(L-L*)={float(mean_delta) * float(nbeta):.4g}", refresh=False)
        bar.refresh()
    except Exception:  # noqa: BLE001 - a display callback must never fail the run
        return


def close_bar(run_id: int) -> None:
    """Close and forget bar ``run_id``."""
    bar = _BARS.pop(run_id, None)
    if bar is not None:
        bar.close()
