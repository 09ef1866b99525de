# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The machinery of the product stream (`stream.ProductPairStream`): the processes that decode its jobs, with the
samples coming back in stream order, and the batcher that fills batches of different products, holding duplicates
over for a later batch."""

from __future__ import annotations

import collections
import itertools
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

# Examples handed to a decode worker at once: amortises inter-process overhead without delaying the first batch.
DECODE_CHUNK = 8


class DecodeJob(Protocol):
    """One product to decode at `position` of `epoch` (`stream.PairJob`); crosses to a decode process."""

    @property
    def epoch(self) -> int: ...

    @property
    def position(self) -> int: ...

    def decode(self) -> dict[str, Any]: ...


def decode_in_order(jobs: Iterator[DecodeJob], workers: int) -> Iterator[tuple[int, dict]]:
    """(position, sample) for every job, in stream order, decoded by ``workers`` processes (0: here)."""
    if workers <= 0:
        for job in jobs:
            yield job.position, job.decode()
        return
    pool = _DecodePool(workers)
    try:
        for chunk in _chunks(jobs, DECODE_CHUNK):
            pool.submit(chunk)
            while pool.is_full():
                yield from pool.oldest_results()
        while not pool.is_empty():
            yield from pool.oldest_results()
    finally:
        pool.shutdown()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


class _DecodePool:
    """Decode processes working on chunks of jobs, with a bounded read-ahead (a stream can be far larger than memory);
    results come back in submission order.

    fork keeps worker start-up cheap (no re-import); the workers only run make_pair on plain data. An executor rather
    than multiprocessing.Pool: a worker that dies (killed for memory, a crash in a decoder) breaks the executor and
    every pending result raises, where a Pool waits forever for the lost chunk."""

    def __init__(self, workers: int) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        self.max_in_flight = 4 * workers
        self.in_flight: collections.deque = collections.deque()  # (jobs, future of their samples)

    def submit(self, jobs: list[DecodeJob]) -> None:
        self.in_flight.append((jobs, self.executor.submit(_decode_chunk, jobs)))

    def is_full(self) -> bool:
        return len(self.in_flight) >= self.max_in_flight

    def is_empty(self) -> bool:
        return not self.in_flight

    def oldest_results(self) -> list[tuple[int, dict]]:
        """(position, sample) of the oldest chunk, waiting for it; a dead decode process raises a RuntimeError."""
        jobs, future = self.in_flight.popleft()
        try:
            return [(job.position, sample) for job, sample in zip(jobs, future.result())]
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"an image-decoding process of the product stream died (epoch {jobs[0].epoch}, products at positions "
                f"{jobs[0].position}-{jobs[-1].position}); out of memory? Lower num_workers or the image size"
            ) from error

    def shutdown(self) -> None:
        # Chunks not started are dropped; the at most `workers` running ones finish (a stopped stream is not resumed
        # from them: its position is the batcher's).
        self.executor.shutdown(wait=True, cancel_futures=True)


def _decode_chunk(jobs: list[DecodeJob]) -> list[dict[str, Any]]:
    """Worker-pool entry point: the samples of a chunk of jobs, in order."""
    return [job.decode() for job in jobs]


class DistinctBatcher:
    """Fills batches of ``batch_size`` different products in stream order. A product already in the batch is held
    over; held-over products start the next batch in stream order, and one that still clashes there is held again."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.batch: list[tuple[int, dict]] = []  # (position, sample)
        self.ids: set[int] = set()
        self.held: collections.deque = collections.deque()  # (position, sample) held over, oldest first

    def add(self, position: int, sample: dict) -> bool:
        """Puts the sample in the batch, or holds it over when its product is there already (returns False)."""
        if sample["product_id"] in self.ids:
            self.held.append((position, sample))
            return False
        self.batch.append((position, sample))
        self.ids.add(sample["product_id"])
        return True

    def is_full(self) -> bool:
        return len(self.batch) == self.batch_size

    def start_next_batch(self) -> list[dict]:
        """The current batch's samples; the next batch starts with the held-over products that fit."""
        samples = [sample for _, sample in self.batch]
        self.batch, self.ids = [], set()
        for _ in range(len(self.held)):
            position, sample = self.held.popleft()
            if sample["product_id"] in self.ids or len(self.batch) == self.batch_size:
                self.held.append((position, sample))
            else:
                self.batch.append((position, sample))
                self.ids.add(sample["product_id"])
        return samples

    def hold_over(self, restored: list[tuple[int, dict]]) -> None:
        """Held-over examples of a restored state: rebuilds the batch start as the interrupted run had it."""
        self.held.extend(sorted(restored, key=lambda item: item[0]))
        self.start_next_batch()  # the batch is empty here: this only moves the held-over products into it

    def pending_positions(self) -> list[int]:
        """Positions of the examples taken but not yet yielded in a batch (the stream's state)."""
        return sorted(position for position, _ in [*self.batch, *self.held])

    def distinct_leftover(self) -> list[dict]:
        """The incomplete last batch of an epoch: what is batched or held over, one sample per product."""
        leftover = [sample for _, sample in [*self.batch, *self.held]]
        return list({sample["product_id"]: sample for sample in reversed(leftover)}.values())[::-1]
