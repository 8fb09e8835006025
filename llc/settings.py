"""The sampling settings shared by every entry point: one place for defaults and checks.

:func:`llc.estimate_llc` documents every keyword (its docstring is the reference).
:func:`llc.calibrate`, :func:`llc.estimate_llc_trajectory` and
:func:`llc.estimate_llc_multitemp` take their own keywords and pass the rest through
:meth:`Settings.build`, which fills the defaults, refuses an unknown keyword with a
``TypeError`` that names it, and runs every check that needs no data, before anything is
compiled.
"""

import dataclasses
import inspect
import math
from typing import Any

import jax

from llc import _validation as check
from llc import mesh as llc_mesh
from llc import samplers

__all__ = ["Settings", "default_nbeta"]
# what the entry points that stack runs in one program (checkpoints, temperatures) refuse
STACKED_RUN_REFUSES = (
    "escape_direction",
    "held_directions",
    "num_devices",
    "chunk_draws",
    "max_burnin_steps",
    "progress_bar",
    "observables",
    "per_sample_observables",
    "per_sample_loss_fn",
    "max_per_sample_bytes",
    "per_sample_path",
    "mesh",
    "param_specs",
)
AUTO_BURNIN_WINDOWS = 128  # num_burnin_steps="auto": default cap, in windows of the draws


def default_nbeta(num_data: int) -> float:
    """The default nbeta = n / log n, i.e. beta = 1 / log n with n the data-set size.

    Examples:
        >>> round(default_nbeta(10_000), 2)
        1085.74
    """
    num_data = check.check_count("num_data", num_data, minimum=2)
    return num_data / math.log(num_data)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated sampling settings (see :func:`llc.estimate_llc` for each field).

    Build it with :meth:`build`; the fields hold checked values (``sampler_options``
    resolved with the sampler's defaults, ``num_burnin_steps`` an int or ``"auto"``).

    Examples:
        >>> s = Settings.build("estimate_llc", step_size=1e-4, num_chains=8)
        >>> s.num_chains, s.num_draws, s.sampler_options
        (8, 1000, {})
        >>> Settings.build("estimate_llc", step_size=1e-4, num_chain=8)
        Traceback (most recent call last):
        ...
        TypeError: estimate_llc() got an unexpected keyword argument 'num_chain'...
    """

    step_size: float | str | None = "auto"
    localization: float = 1.0
    nbeta: float | None = None
    sampler: str = "sgld"
    sampler_options: dict | None = None
    num_chains: int = 4
    num_draws: int = 1000
    num_burnin_steps: int | str = 1000
    num_steps_bw_draws: int = 1
    batch_size: int | None = None
    control_variate: bool = True
    progress_bar: bool | None = None
    eval_batch_size: int | None = None
    full_loss_every: int | None = None
    escape_direction: Any = None
    held_directions: tuple | None = None
    acceptance_checks: int | None = None
    num_devices: int | None = None
    chunk_draws: int | None = None
    max_burnin_steps: int | None = None
    weight_mask: Any = None
    observables: dict | None = None
    per_sample_observables: dict | None = None
    per_sample_loss_fn: Any = None
    max_per_sample_bytes: int = 2**30
    per_sample_path: Any = None
    mesh: Any = None
    param_specs: Any = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every shared keyword, in the reference order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(
        cls, entry: str, *, defaults: dict | None = None, refuse: tuple = (), **kwargs
    ) -> "Settings":
        """Check ``kwargs`` for the entry point ``entry`` and fill in the defaults.

        Args:
            entry: the public function's name, for the messages.
            defaults: the entry point's own defaults where they differ from
                :func:`llc.estimate_llc`'s (e.g. shorter runs for :func:`llc.calibrate`).
            refuse: shared keywords this entry point does not take.
            **kwargs: the user's keywords.

        Raises:
            TypeError: an unknown or refused keyword, or a value of the wrong type.
            ValueError: a value out of range, or a combination the sampler cannot run.
        """
        known = cls.names()
        for name in kwargs:
            if name not in known or name in refuse:
                accepted = ", ".join(n for n in known if n not in refuse)
                msg = f"{entry}() got an unexpected keyword argument {name!r}; it takes {accepted}."
                raise TypeError(msg)
        values = {**(defaults or {}), **kwargs}
        return cls(**values)._checked()

    def _checked(self) -> "Settings":
        """Every check that needs no data; returns the settings with checked values."""
        sampler = self.sampler
        if not isinstance(sampler, str) or sampler not in samplers.CAPABILITIES:
            msg = f"sampler must be one of {list(samplers.CAPABILITIES)}; got {sampler!r}."
            raise ValueError(msg)
        can = samplers.CAPABILITIES[sampler]
        if not can.minibatches and self.batch_size is not None:
            msg = (
                f"sampler={sampler!r} is the exact full-batch reference; it takes "
                f"batch_size=None (got {self.batch_size})."
            )
            raise ValueError(msg)
        changes = {}
        if can.step_size:
            changes["step_size"] = _step_size(self.step_size)
        elif not (self.step_size is None or _is_auto(self.step_size)):  # NUTS adapts its own
            msg = f"sampler={sampler!r} adapts its own step size; pass step_size=None."
            raise ValueError(msg)
        else:
            changes["step_size"] = None
        if can.options:
            changes["sampler_options"] = samplers.resolve_options(sampler, self.sampler_options)
        elif self.sampler_options:
            msg = f"sampler={sampler!r} takes no sampler_options."
            raise ValueError(msg)
        else:
            changes["sampler_options"] = {}
        if not can.directions and (
            self.escape_direction is not None or self.held_directions is not None
        ):
            msg = f"sampler={sampler!r} supports neither escape_direction nor held_directions."
            raise ValueError(msg)
        if not can.step_size and self.weight_mask is not None:
            msg = (
                f"sampler={sampler!r} samples every weight and takes no weight_mask; use an "
                "SGLD-family sampler (e.g. sampler='sgld') for a refined LLC."
            )
            raise ValueError(msg)
        changes["localization"] = check.check_real(
            "localization", self.localization, allow_zero=True
        )
        if self.nbeta is not None:
            changes["nbeta"] = check.check_real("nbeta", self.nbeta, allow_zero=False)
        chains = check.check_count("num_chains", self.num_chains, minimum=1)
        changes["num_chains"] = chains
        changes["num_draws"] = check.check_count("num_draws", self.num_draws, minimum=1)
        changes["num_steps_bw_draws"] = check.check_count(
            "num_steps_bw_draws", self.num_steps_bw_draws, minimum=1
        )
        changes["num_burnin_steps"] = _burnin(self.num_burnin_steps, can, chains)
        if self.max_burnin_steps is not None:
            changes["max_burnin_steps"] = check.check_count(
                "max_burnin_steps", self.max_burnin_steps, minimum=1
            )
        for name in ("eval_batch_size", "chunk_draws"):
            if getattr(self, name) is not None:
                changes[name] = check.check_count(name, getattr(self, name), minimum=1)
        for name in ("full_loss_every", "acceptance_checks"):
            if getattr(self, name) is not None:
                changes[name] = check.check_count(name, getattr(self, name), minimum=0)
        for name in ("observables", "per_sample_observables"):
            sets = getattr(self, name)
            if sets is not None and (
                not isinstance(sets, dict) or not all(isinstance(k, str) for k in sets)
            ):
                msg = f"{name} must be a dict of name (str) -> data set; got {type(sets).__name__}."
                raise TypeError(msg)
        both = set(self.observables or {}) & set(self.per_sample_observables or {})
        if both:
            msg = f"observables and per_sample_observables share the names {sorted(both)}."
            raise ValueError(msg)
        if self.per_sample_loss_fn is not None and not callable(self.per_sample_loss_fn):
            msg = "per_sample_loss_fn must be callable as per_sample_loss_fn(params, batch)."
            raise TypeError(msg)
        changes["max_per_sample_bytes"] = check.check_count(
            "max_per_sample_bytes", self.max_per_sample_bytes, minimum=1
        )
        changes["control_variate"] = bool(self.control_variate)
        if self.mesh is None:
            changes["num_devices"] = _devices(self.num_devices, chains)
        else:
            llc_mesh.check_mesh(
                self.mesh,
                num_chains=chains,
                batch_size=self.batch_size,
                num_devices=self.num_devices,
            )
        return dataclasses.replace(self, **changes)

    @property
    def auto_burnin(self) -> bool:
        """Whether ``num_burnin_steps="auto"``."""
        return self.num_burnin_steps == "auto"


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def _step_size(step_size):
    if isinstance(step_size, str):
        if step_size != "auto":
            msg = f"step_size must be a positive number or 'auto'; got {step_size!r}."
            raise ValueError(msg)
        return step_size
    if step_size is None:
        msg = "step_size must be a positive number or 'auto' (None is for sampler='nuts')."
        raise TypeError(msg)
    return check.check_real(
        "step_size",
        step_size,
        allow_zero=False,
        hint=" Typical values are 1e-7 .. 1e-3 (smaller for larger nbeta); or 'auto'.",
    )


def _burnin(num_burnin_steps, can: samplers.Capabilities, chains: int):
    if not isinstance(num_burnin_steps, str):
        return check.check_count("num_burnin_steps", num_burnin_steps, minimum=0)
    if num_burnin_steps != "auto":
        msg = f"num_burnin_steps must be a count >= 0 or 'auto'; got {num_burnin_steps!r}."
        raise ValueError(msg)
    if not can.auto_burnin:
        msg = "num_burnin_steps='auto' is for the SGMCMC samplers; NUTS adapts in warmup."
        raise ValueError(msg)
    if chains < 2:
        msg = "num_burnin_steps='auto' compares chains: it needs num_chains >= 2."
        raise ValueError(msg)
    return "auto"


def _devices(num_devices, num_chains: int) -> int | None:
    """None, or a device count in 1..(local devices) that divides ``num_chains``."""
    if num_devices is None:
        return None
    available = jax.local_device_count()
    num_devices = check.check_count("num_devices", num_devices, minimum=1)
    if num_devices > available:
        msg = f"num_devices = {num_devices}, but only {available} local devices are present."
        raise ValueError(msg)
    if num_chains % num_devices:
        msg = (
            f"num_devices = {num_devices} must divide num_chains = {num_chains} (each device "
            "runs the same number of chains); change either."
        )
        raise ValueError(msg)
    return num_devices


def signature(fn, *, refuse: tuple = (), defaults: dict | None = None) -> inspect.Signature:
    """``fn``'s signature with the shared keywords spelled out (for ``help`` and IDEs).

    ``fn`` takes ``**settings``; the returned signature replaces that with one
    keyword-only parameter per shared setting (less ``refuse``, with ``defaults``).
    """
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
    defaults = defaults or {}
    for f in dataclasses.fields(Settings):
        if f.name in refuse or any(p.name == f.name for p in params):
            continue
        default = defaults.get(f.name, f.default)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.signature(fn).replace(parameters=params)
