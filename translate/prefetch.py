"""Coupled training batches, optionally computed one step ahead in a background thread.

Drawing the A- and B-batches and solving their OT plan use only the data and coupling
generators, which nothing else touches. So the pairing for step k+1 can be computed while the
device runs step k and still be exactly the pairing of the serial loop, for the same seed. On a
GPU the worker runs on its own CUDA stream; the trainer's stream waits for it before use.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from translate.coupling import DatasetPlan, Pairing
from translate.latent_sampling import LatentSampler

GENERATORS = ("data", "coupling")  # the streams the worker owns


class MinibatchPairs:
    """Each step: an A-batch and a B-batch drawn independently, paired by ``coupler``."""

    def __init__(self, sample_a: LatentSampler, sample_b: LatentSampler, coupler) -> None:
        self.sample_a, self.sample_b, self.coupler = sample_a, sample_b, coupler
        self.device = sample_a.device

    def __call__(self, n: int, gens) -> Pairing:
        x0 = self.sample_a.draw(n, gens.data)
        x1 = self.sample_b.draw(n, gens.data)
        return self.coupler(x0, x1, gens.coupling)


class PlanPairs:
    """Each step: n distinct A-latents and, for each, a partner from a fixed ``DatasetPlan``."""

    def __init__(self, sample_a: LatentSampler, sample_b: LatentSampler, plan: DatasetPlan):
        self.sample_a, self.sample_b, self.plan = sample_a, sample_b, plan
        self.device = sample_a.device

    def __call__(self, n: int, gens) -> Pairing:
        rows = self.sample_a.indices(n, gens.data)
        cols = self.plan.partners(rows, gens.coupling)
        return Pairing(self.sample_a.take(rows), self.sample_b.take(cols), self.plan.cost_ratio)


class PairStream:
    """``next()`` gives the pairing of each step in order; ``generator_state()`` the resume point.

    ``source(n, gens)`` returns the n pairs of one step (``MinibatchPairs`` or ``PlanPairs``)
    and uses only ``gens.data`` and ``gens.coupling``.
    """

    def __init__(self, source, batch_size: int, gens, overlap: bool) -> None:
        self.source, self.batch_size, self.gens, self.overlap = source, batch_size, gens, overlap
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="coupling") if overlap else None
        self._pending: Future | None = None
        self._snapshot: dict[str, torch.Tensor] = {}
        device = source.device
        self._stream = torch.cuda.Stream(device) if overlap and device.type == "cuda" else None

    def _compute(self) -> tuple[Pairing, torch.cuda.Event | None]:
        context = torch.cuda.stream(self._stream) if self._stream else contextlib.nullcontext()
        with context:
            pairing = self.source(self.batch_size, self.gens)
            event = torch.cuda.Event() if self._stream else None
            if event is not None:
                event.record(self._stream)
        return pairing, event

    def _submit(self) -> None:
        # no job is running now, so the generators can be read safely
        self._snapshot = {name: getattr(self.gens, name).get_state() for name in GENERATORS}
        self._pending = self._pool.submit(self._compute)

    def next(self) -> Pairing:
        """The next step's pairing; with overlap, also starts computing the one after."""
        if self._pool is None:
            return self._compute()[0]
        if self._pending is None:
            self._submit()
        pairing, event = self._pending.result()
        if event is not None:
            current = torch.cuda.current_stream()
            current.wait_event(event)
            pairing.x0.record_stream(current)
            pairing.x1.record_stream(current)
        self._submit()
        return pairing

    def generator_state(self) -> dict[str, torch.Tensor]:
        """States of the worker's generators before the first pairing not yet returned.

        Saved with a checkpoint, they make a resumed run draw exactly the batches that an
        uninterrupted run would have drawn next.
        """
        if self._pending is not None:
            self._pending.result()  # let the running job finish before reading anything
            return dict(self._snapshot)
        return {name: getattr(self.gens, name).get_state() for name in GENERATORS}

    def close(self) -> None:
        if self._pool is not None:
            if self._pending is not None:
                self._pending.result()
            self._pool.shutdown(wait=True)
            self._pool, self._pending = None, None
