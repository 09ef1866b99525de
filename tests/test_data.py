# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of the streaming product-pair pipeline (modeling_eclip/data/stream.py)."""

from __future__ import annotations

from pathlib import Path

import datasets.config
import numpy as np
import pytest
import torch
from helpers import tiny_config

from modeling_eclip import EclipForPreTraining
from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import read_split
from modeling_eclip.data.stream import (
    ProductPairStream,
    choose_pair_order,
    load_product_stream,
    product_id_to_int,
)

BATCH = 4
CONTRACT = ("pixel_values", "positive_pixel_values", "input_ids", "attention_mask", "product_ids")


@pytest.fixture(autouse=True)
def _no_parquet_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    # datasets sleeps 5 s whenever a parquet stream ends (an arrow shutdown workaround); tests end many streams.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


@pytest.fixture(scope="session")
def duplicated(demo_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards where the first products appear three times each, so the batcher must hold duplicates over."""
    rows = read_split(demo_catalogue, "train")
    root = tmp_path_factory.mktemp("duplicated")
    with sf.ShardWriter(root, "train") as writer:
        for index, row in enumerate(rows):
            for _ in range(3 if index < 4 else 1):
                writer.write(row)
    return root


def _stream(processor, root: Path, *, seed: int = 0, buffer: int = 16, workers: int = 0, **kwargs):
    rank_kwargs = {key: kwargs.pop(key) for key in ("rank", "world_size") if key in kwargs}
    stream = load_product_stream(root, shuffle_buffer=buffer, seed=seed, **rank_kwargs)
    return ProductPairStream(
        stream, processor, batch_size=kwargs.pop("batch_size", BATCH), num_workers=workers, **kwargs
    )


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def test_product_id_to_int_is_stable_int64() -> None:
    value = product_id_to_int("emoji-1f3b8")
    assert value == product_id_to_int("emoji-1f3b8") != product_id_to_int("emoji-1f3b9")
    assert -(2**63) <= value < 2**63
    assert torch.tensor([value]).dtype == torch.int64


def test_batch_contract_and_forward(processor, demo_catalogue: Path) -> None:
    batch = next(iter(_stream(processor, demo_catalogue)))
    assert set(batch) - {"token_type_ids"} == set(CONTRACT)
    assert batch["pixel_values"].shape == batch["positive_pixel_values"].shape == (BATCH, 3, 32, 32)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == BATCH
    assert batch["input_ids"].dtype == torch.int64
    assert batch["product_ids"].shape == (BATCH,) and batch["product_ids"].dtype == torch.int64
    torch.manual_seed(0)
    model = EclipForPreTraining(tiny_config()).train()
    output = model(**batch)
    assert torch.isfinite(output.loss)


def test_no_product_twice_in_a_batch_and_pair_images_differ(processor, duplicated: Path) -> None:
    stream = _stream(processor, duplicated)
    batches = list(stream)
    assert batches
    for batch in batches:
        assert len(set(batch["product_ids"].tolist())) == BATCH
        for anchor, positive in zip(batch["pixel_values"], batch["positive_pixel_values"]):
            assert not torch.equal(anchor, positive)
    # 4 products appear 3 times: the repeats that met their twin in the open batch were held over, and counted.
    assert stream.counters["deferred_duplicates"] > 0
    assert stream.counters["skipped_corrupt_images"] == stream.counters["skipped_single_image_products"] == 0


def test_resume_gives_exactly_the_uninterrupted_batches(processor, duplicated: Path) -> None:
    reference = list(_stream(processor, duplicated))
    counters = _stream(processor, duplicated)
    list(counters)
    held_over_checkpoints = 0
    for stop in range(len(reference) + 1):  # a checkpoint after every batch, the start and the end included
        interrupted = _stream(processor, duplicated)
        iterator = iter(interrupted)
        head = [next(iterator) for _ in range(stop)]
        state = interrupted.state_dict()
        iterator.close()
        held_over_checkpoints += bool(state["pending"])
        resumed = _stream(processor, duplicated)
        resumed.load_state_dict(state)
        assert _same(head + list(resumed), reference), f"resumed after batch {stop}"
        assert resumed.counters == counters.counters
    assert held_over_checkpoints, "some checkpoint should hold duplicates over, to test their restoration"


def test_epochs_reshuffle_deterministically(processor, demo_catalogue: Path) -> None:
    stream = _stream(processor, demo_catalogue)
    epoch0 = list(stream)
    assert stream.epoch == 1  # an exhausted stream moves on to the next epoch
    epoch1 = list(stream)
    assert not _same(epoch0, epoch1)
    stream.set_epoch(0)
    assert _same(list(stream), epoch0)


def test_worker_processes_and_dataloader_give_the_same_batches(processor, demo_catalogue: Path) -> None:
    reference = list(_stream(processor, demo_catalogue))
    assert _same(list(_stream(processor, demo_catalogue, workers=2)), reference)
    loader = torch.utils.data.DataLoader(_stream(processor, demo_catalogue), batch_size=None, num_workers=2)
    assert _same(list(loader), reference)


def test_two_ranks_split_without_overlap(processor, demo_catalogue: Path) -> None:
    everything = {row["product_id"] for row in read_split(demo_catalogue, "train")}
    seen = []
    for rank in range(2):
        rows = load_product_stream(demo_catalogue, shuffle_buffer=16, seed=0, rank=rank, world_size=2)
        seen.append({row["product_id"] for row in rows})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == everything
    ids = []
    for rank in range(2):
        stream = _stream(processor, demo_catalogue, rank=rank, world_size=2, drop_last=False)
        ids.append({pid for batch in stream for pid in batch["product_ids"].tolist()})
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {product_id_to_int(pid) for pid in everything}


def test_corrupt_images_single_image_products_and_blank_titles_are_skipped_and_counted(
    processor, demo_catalogue: Path, tmp_path: Path
):
    rows = read_split(demo_catalogue, "train")
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature followed by garbage: passes the writer's checks
    broken = dict(rows[0], images=[dict(rows[0]["images"][0], image=corrupt), rows[0]["images"][1]])
    single = dict(rows[1], images=rows[1]["images"][:1])
    # Nothing to read (the processor would refuse it mid-run): zero-width and ideographic spaces.
    blank = [dict(rows[2], title="\u200b"), dict(rows[3], title="\u3000 ")]
    with sf.ShardWriter(tmp_path, "train") as writer:
        for row in [broken, single, *blank, *rows[4:]]:
            writer.write(row)
    stream = _stream(processor, tmp_path, drop_last=False)
    ids = {pid for batch in stream for pid in batch["product_ids"].tolist()}
    assert stream.counters == {
        "skipped_corrupt_images": 1,
        "skipped_single_image_products": 2,  # the one left with a single decodable image, and the one with one
        "skipped_blank_title_products": 2,
        "skipped_no_product_id_products": 0,
        "noncontiguous_products": 0,
        "deferred_duplicates": 0,
    }
    assert ids == {product_id_to_int(row["product_id"]) for row in rows[4:]}


def test_anchor_kind_prefers_that_kind_and_keeps_positives_from_elsewhere() -> None:
    kinds = [("customer", "a"), ("catalog", "a"), ("ad", "b"), ("catalog", "b"), ("customer", "b")]
    images = [{"kind": kind, "source": source} for kind, source in kinds]
    for seed in range(20):
        pairs = list(choose_pair_order(images, np.random.default_rng(seed), anchor_kind="catalog"))
        anchor, positive = pairs[0]
        assert images[anchor]["kind"] == "catalog"
        assert images[positive]["source"] != images[anchor]["source"]  # another source first, as without anchor_kind
        assert [images[a]["kind"] for a, _ in pairs[: 2 * (len(images) - 1)]] == ["catalog"] * 8
    # Without catalog images the anchor is any image; without anchor_kind the order is the plain random one.
    no_catalog = [image for image in images if image["kind"] != "catalog"]
    assert list(choose_pair_order(no_catalog, np.random.default_rng(0), "catalog")) == list(
        choose_pair_order(no_catalog, np.random.default_rng(0))
    )


def test_anchor_kind_probability_mixes_preferred_and_any_anchors(processor, demo_catalogue: Path) -> None:
    kinds = [("customer", "a"), ("catalog", "a"), ("ad", "b"), ("catalog", "b"), ("customer", "b")]
    images = [{"kind": kind, "source": source} for kind, source in kinds]
    first = [
        images[next(choose_pair_order(images, np.random.default_rng(s), "catalog", 0.5))[0]]["kind"] for s in range(400)
    ]
    share = first.count("catalog") / len(first)
    # Half the draws prefer catalog; the other half pick any of the 5 images (2 catalog): 0.5 + 0.5 * 2 / 5 = 0.7.
    assert 0.6 < share < 0.8
    always = [list(choose_pair_order(images, np.random.default_rng(s), "catalog", 1.0)) for s in range(5)]
    assert always == [list(choose_pair_order(images, np.random.default_rng(s), "catalog")) for s in range(5)]
    with pytest.raises(ValueError, match="anchor_kind_probability"):
        ProductPairStream(load_product_stream(demo_catalogue), processor, anchor_kind_probability=1.5)


def test_a_decode_process_that_dies_stops_the_stream_with_an_error(
    processor, demo_catalogue: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from modeling_eclip.data import stream as stream_module

    doomed = read_split(demo_catalogue, "train")[5]["product_id"]
    make_pair = stream_module.make_pair

    def dying(example, *args, **kwargs):  # a decoder crash or the kernel's OOM killer, as the worker sees it
        if example["product_id"] == doomed:
            os._exit(1)
        return make_pair(example, *args, **kwargs)

    monkeypatch.setattr(stream_module, "make_pair", dying)  # the forked decode processes inherit it
    with pytest.raises(RuntimeError, match="an image-decoding process of the product stream died"):
        list(_stream(processor, demo_catalogue, workers=2, buffer=0))  # before: waited forever for the lost chunk
