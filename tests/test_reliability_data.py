# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the data tools (issue 13): the pair order at scale, catalogue paths that leave the catalogue folder,
malformed catalogues and arguments of the converter, and outputs replaced atomically or not at all."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import pytest

from modeling_eclip.data.stream import choose_pair_order


# ------------------------------------------------------------------------------------------- the pair order
def _reference_pair_order(images, rng, anchor_kind=None, anchor_kind_probability=1.0):
    """The documented order, computed the quadratic way: all n x n tie-break uniforms drawn at once."""
    count = len(images)
    anchors = rng.permutation(count)
    prefer = anchor_kind is not None and (anchor_kind_probability >= 1.0 or rng.random() < anchor_kind_probability)
    if prefer:
        anchors = sorted(anchors, key=lambda i: images[i]["kind"] != anchor_kind)
    noise = rng.random((count, count))
    pairs = []
    for anchor in anchors:
        others = sorted(
            (i for i in range(count) if i != anchor),
            key=lambda i: (
                images[i]["source"] == images[anchor]["source"],
                images[i]["kind"] == images[anchor]["kind"],
                noise[anchor, i],
            ),
        )
        pairs.extend((int(anchor), i) for i in others)
    return pairs


def test_pair_order_and_the_generator_state_after_it_are_those_of_the_documented_order() -> None:
    # Exact resume and the augmentation draws after the pair choice depend on both staying what they were.
    draw = np.random.default_rng(0)
    for trial in range(120):
        count = int(draw.integers(0, 8))
        images = [{"source": f"s{draw.integers(3)}", "kind": ("catalog", "customer", "ad")[draw.integers(3)]}
                  for _ in range(count)]  # fmt: skip
        anchor_kind, probability = [(None, 1.0), ("catalog", 1.0), ("catalog", 0.5), ("ad", 0.0)][trial % 4]
        mine, theirs = np.random.default_rng([trial, 1]), np.random.default_rng([trial, 1])
        mine.integers(0, 5)  # leaves a buffered 32-bit half in the generator, which the pair order must keep
        theirs.integers(0, 5)
        assert list(choose_pair_order(images, mine, anchor_kind, probability)) == _reference_pair_order(
            images, theirs, anchor_kind, probability
        )
        assert mine.bit_generator.state == theirs.bit_generator.state
        assert mine.integers(0, 7, 5).tolist() == theirs.integers(0, 7, 5).tolist()


def test_pair_order_is_linear_in_the_images_of_a_product() -> None:
    """20,000 images of one product: the quadratic order drew 20,000^2 uniforms (3.2 GB) and built 4 * 10^8 pairs."""
    images = [{"source": f"s{i % 3}", "kind": ("catalog", "customer")[i % 2]} for i in range(20_000)]
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc to bound the address space")
    size = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmSize")) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    start = time.perf_counter()
    # At most 256 MB more address space while it runs: the linear order needs a few MB, the quadratic one fails fast.
    resource.setrlimit(resource.RLIMIT_AS, (size + 256 * 2**20, hard))
    try:
        pairs = choose_pair_order(images, np.random.default_rng(0), anchor_kind="catalog")
        first = [next(pairs) for _ in range(2 * (len(images) - 1))]  # the whole fallback list of two anchors
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert time.perf_counter() - start < 20  # about 0.05 s on one idle core
    anchor, positive = first[0]
    assert images[anchor]["kind"] == "catalog" and images[positive]["source"] != images[anchor]["source"]
    assert len({a for a, _ in first}) == 2 and len(set(first)) == len(first)


def test_pair_order_needs_a_generator_it_can_move_ahead() -> None:
    with pytest.raises(TypeError, match="PCG64"):
        choose_pair_order([{"source": "a", "kind": "ad"}] * 2, np.random.Generator(np.random.MT19937(0)))
