"""Running a plan: the chains as one compiled program (or a sequence of resumed chunks)."""

from pathlib import Path

import jax
import numpy as np

from llc import _progress, burnin, loop, mesh, nuts
from llc.plan import AutoBurnin, Plan
from llc.spread import spread

__all__ = ["execute", "execute_chunks"]


def execute(plan: Plan) -> loop.RunOutput:
    """Run the plan's chains (one compiled program) and bring the traces to the host.

    With ``plan.chunk_draws`` the run is a sequence of compiled chunks, see
    :func:`llc.execute.execute_chunks`; without, a single chunk.
    """
    config = plan.config
    run_id = 0
    if plan.show_progress and plan.capabilities.step_size:
        total = burnin.planned_steps(plan, config)
        config = config._replace(progress_rate=_progress.rate(total))
        run_id = _progress.open_bar(total, plan.sampler.upper())
    dtype = jax.numpy.result_type(*jax.tree.leaves(plan.params))
    try:
        if not plan.capabilities.step_size:  # NUTS adapts its own
            hi = jax.numpy.asarray(plan.init_loss, dtype)
            lo = jax.numpy.asarray(plan.init_loss - float(hi), dtype)
            out = nuts.run_nuts(
                plan.rng_key,
                plan.params,
                plan.data,
                jax.numpy.asarray(plan.nbeta, dtype),
                jax.numpy.asarray(plan.localization, dtype),
                hi,
                lo,
                loss_fn=plan.loss_fn,
                num_chains=config.num_chains,
                num_warmup=config.num_burnin_steps,
                num_draws=config.num_draws,
            )
        else:
            hyper = loop.make_hyper(
                plan.step_size,
                plan.nbeta,
                plan.localization,
                plan.init_loss,
                dtype,
                run_id,
                plan.options,
            )
            if not burnin.adaptive(plan):
                return execute_chunks(plan, hyper, config)
            start = None if plan.spread is None else spread(plan, hyper, config)
            ran = () if start is None or not start.steps else (start.step_size, start.steps)
            if isinstance(plan.burnin, AutoBurnin):
                hyper = hyper if start is None else start.hyper
                out = execute_chunks(plan, hyper, *burnin.auto(plan, hyper, config, start))
                return out._replace(step_sizes=(float(hyper.step_size),), spread=ran)
            hyper, history, *done = burnin.follow(plan, hyper, config, start)
            return execute_chunks(plan, hyper, *done)._replace(step_sizes=history, spread=ran)
        return mesh.to_host(out)
    finally:
        if run_id:
            _progress.close_bar(run_id)


def execute_chunks(plan: Plan, hyper, config, resume=None, burnin_trace=None) -> loop.RunOutput:
    """Drive the run ``plan.chunk_draws`` draws at a time (default: all) from Python.

    Each chunk is one compiled call that resumes from the previous chunk's carry with
    global step numbers, so the chains are those of an uninterrupted run. Between chunks
    the traces move to the host; the run stops early once every chain has diverged, and a
    ``KeyboardInterrupt`` (Ctrl-C) after the first chunk keeps the draws done so far
    (``result.num_draws`` says how many; the flag ``interrupted`` says why). With
    ``resume`` (from :func:`llc.burnin.auto`) the burn-in is done already and
    ``burnin_trace`` is its trace.
    """
    total, done, parts = config.num_draws, 0, []
    stream = _Stream(plan.per_sample_path, plan.observe, config.num_chains, total)
    try:
        while done < total:
            size = min(plan.chunk_draws or total, total - done)
            chunk = config._replace(
                num_draws=size,
                num_burnin_steps=config.num_burnin_steps if done == 0 and resume is None else 0,
                chunked=True,
                progress_total=config.total_steps,
            )
            out = burnin.run_chunk(plan, hyper, resume, chunk)
            states, first_bad = out.final_carry
            done += size
            next_step = config.num_burnin_steps + config.num_steps_bw_draws * done
            resume = (states, first_bad, jax.numpy.int32(next_step), jax.numpy.int32(done))
            # the traces to the host; the chains' end points stay on the devices (no host
            # copy of the parameters per chain: the step-size bias model reads them there)
            host = mesh.to_host(out._replace(final_carry=(), final_position=()))
            host = host._replace(final_position=out.final_position)
            parts.append(host._replace(observed=stream.write(host.observed, done - size)))
            if np.all(parts[-1].first_nonfinite_step >= 0):
                break  # every chain diverged: nothing left to sample
    except KeyboardInterrupt:
        if not parts:
            raise

    def joined(name):
        return np.concatenate([getattr(p, name) for p in parts], axis=1)

    first = parts[0]
    sizes = np.array([p.delta.shape[1] for p in parts], np.float64)
    return first._replace(
        scale=sum(w * p.scale for w, p in zip(sizes, parts, strict=True)) / max(sizes.sum(), 1),
        scale_max=np.maximum.reduce([p.scale_max for p in parts]),
        final_position=parts[-1].final_position,
        burnin_delta=first.burnin_delta
        if burnin_trace is None
        else burnin_trace.astype(first.delta.dtype),
        burnin_virial=first.burnin_virial if burnin_trace is None else (),
        delta=joined("delta"),
        distance=joined("distance"),
        first_nonfinite_step=parts[-1].first_nonfinite_step,
        full_delta=joined("full_delta"),
        projection=joined("projection"),
        acceptance=joined("acceptance"),
        virial=joined("virial"),
        observed={
            **{
                name: np.concatenate([p.observed[name] for p in parts], axis=1)
                for name in first.observed
            },
            **stream.read(int(sizes.sum())),
        },
    )


class _Stream:
    """Per-sample observables written to ``.npy`` files chunk by chunk (``per_sample_path``).

    Each chunk's per-sample losses go to ``<path>/<name>.npy`` (shape ``(chains, draws, m,
    ...)``, float32) as soon as they reach the host, and leave memory; the result holds them
    as read-only memory maps of those files.
    """

    def __init__(self, path, observe, chains: int, total: int):
        self.path, self.files = path, {}
        self.names = [] if path is None or observe is None else list(observe[1])
        self.shape = (chains, total)

    def write(self, observed: dict, start: int) -> dict:
        """Write the streamed names' chunk at draw ``start``; return the rest."""
        for name in self.names:
            chunk = observed[name]
            if name not in self.files:
                self.files[name] = np.lib.format.open_memmap(
                    Path(self.path) / f"{name}.npy",
                    mode="w+",
                    dtype=chunk.dtype,
                    shape=(*self.shape, *chunk.shape[2:]),
                )
            self.files[name][:, start : start + chunk.shape[1]] = chunk
        return {k: v for k, v in observed.items() if k not in self.names}

    def read(self, draws: int) -> dict:
        """The streamed observables, the draws done, as read-only memory maps."""
        out = {}
        for name, file in self.files.items():
            file.flush()
            out[name] = np.load(Path(self.path) / f"{name}.npy", mmap_mode="r")[:, :draws]
        return out
