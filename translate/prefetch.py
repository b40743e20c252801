"""Coupled training batches, optionally computed one step ahead in a background thread.

Drawing the A- and B-batches and solving their OT plan use only the data and coupling
generators, which nothing else touches. So the pairing for step k+1 can be computed while the
device runs step k and still be exactly the pairing of the serial loop, for the same seed. On a
GPU the worker runs on its own CUDA stream; the trainer's stream waits for it before use.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from translate.coupling import Pairing

GENERATORS = ("data", "coupling")  # the streams the worker owns


@dataclass
class Generators:
    """Every random stream of the loop; saved and restored with each state."""

    data: torch.Generator  # batch indices (per process)
    path: torch.Generator  # t and noise (per process, on the training device)
    coupling: torch.Generator  # sinkhorn sampling (identical on all processes)
    # rolled-out step counts and the discriminators' augmentations (per process, on the
    # training device): apart from ``path`` so that training the discriminators alone leaves
    # the field's random draws as they were
    rollout: torch.Generator

    ON_DEVICE = ("path", "rollout")  # the streams that live on the training device

    @classmethod
    def create(cls, seed: int, rank: int, device: torch.device) -> Generators:
        return cls(
            torch.Generator().manual_seed(seed * 7919 + rank),
            torch.Generator(device).manual_seed(seed * 104729 + rank),
            torch.Generator().manual_seed(seed),
            torch.Generator(device).manual_seed(seed * 1299709 + rank),
        )

    def state(self) -> dict[str, torch.Tensor]:
        names = ("data", "path", "coupling", "rollout")
        return {name: getattr(self, name).get_state() for name in names}

    def restore(self, states: dict[str, torch.Tensor]) -> None:
        for name, value in states.items():
            getattr(self, name).set_state(value)


class PairStream:
    """``next()`` gives the pairing of each step in order; ``generator_state()`` the resume point.

    ``source(n, gens)`` returns the n pairs of one step (``translate.coupling.MinibatchPairs``,
    ``PlanPairs`` or ``translate.reflow.ReflowSource``)
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
