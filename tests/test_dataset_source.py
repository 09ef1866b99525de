# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Training and evaluation read any dataset (`modeling_eclip.data.source`): a dataset laid out one image per row with
its own column names trains through `--dataset_name` and the `--*_column` mapping, resumes exactly, splits by node, and
bad datasets fail at start-up naming the column (schema) or are skipped and counted (rows)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import datasets
import pytest
from helpers import (
    TINY_BATCH,
    make_processor,
    read_metrics,
    save_tiny_checkpoint,
    tiny_run_arguments,
    write_tiny_model_config,
)

from modeling_eclip import EclipForPreTraining
from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import CatalogueColumns, CatalogueSchemaError, CatalogueSource, read_split
from modeling_eclip.data.stream import ProductPairStream, load_product_stream, product_id_to_int
from modeling_eclip.training import parse_arguments, pretrain

# How a public product dataset may name things: one image per row, the category as a class label.
MAPPING = {
    "product_id_column": "sku",
    "title_column": "name",
    "image_column": "photo",
    "category_column": "label",
    "source_column": "photographer",
    "kind_column": "shot",
}
COLUMNS = CatalogueColumns(
    product_id="sku", title="name", image="photo", category="label", source="photographer", kind="shot"
)


@pytest.fixture(autouse=True)
def _no_stream_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def image_rows(products: list[dict]) -> list[dict]:
    """One row per image of each product, the product's rows consecutive."""
    return [
        {
            "sku": product["product_id"],
            "name": product["title"],
            "label": product["category"],
            "photo": {"bytes": image["image"], "path": None},
            "photographer": image["source"],
            "shot": image["kind"],
        }
        for product in products
        for image in product["images"]
    ]


def write_image_per_row(root: Path, splits: dict[str, list[dict]], files_per_split: int = 1) -> Path:
    """A dataset folder as `datasets` writes one (`data/<split>-*.parquet`, no card): one image per row."""
    categories = sorted({product["category"] for products in splits.values() for product in products})
    features = datasets.Features(
        {
            "sku": datasets.Value("string"),
            "name": datasets.Value("string"),
            "label": datasets.ClassLabel(names=categories),
            "photo": datasets.Image(),
            "photographer": datasets.Value("string"),
            "shot": datasets.Value("string"),
        }
    )
    (root / "data").mkdir(parents=True)
    for split, products in splits.items():
        parts = [products[i::files_per_split] for i in range(files_per_split)]
        for index, part in enumerate(parts):
            rows = image_rows(part)
            name = sf.shard_name(split, index, files_per_split)
            datasets.Dataset.from_list(rows, features=features).to_parquet(root / "data" / name)
    return root


@pytest.fixture(scope="module")
def image_per_row(demo_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalogue re-laid one image per row with other column names, train split in two files."""
    splits = {split: read_split(demo_catalogue, split) for split in sf.SPLITS}
    return write_image_per_row(tmp_path_factory.mktemp("image-per-row") / "shop", splits, files_per_split=2)


def test_an_image_per_row_dataset_gives_the_products_of_the_catalogue(demo_catalogue: Path, image_per_row: Path):
    expected = {row["product_id"]: row for row in read_split(demo_catalogue, "train")}
    source = CatalogueSource(str(image_per_row), columns=COLUMNS)
    products = list(source.iter_products("train", need_category=True))
    assert len(products) == len(expected)
    assert source.products("train").n_shards == 2  # one shard per data file: shuffled and split by node as files
    for product in products:
        original = expected[product["product_id"]]
        assert (product["title"], product["category"]) == (original["title"], original["category"])
        assert [im["image"] for im in product["images"]] == [im["image"] for im in original["images"]]
        assert [(im["source"], im["kind"]) for im in product["images"]] == [
            (im["source"], im["kind"]) for im in original["images"]
        ]
        assert not product["noncontiguous"]
    assert source.num_products("train") is None  # not known without grouping the rows


def test_split_dataset_by_node_gives_each_rank_its_own_products(image_per_row: Path) -> None:
    source = CatalogueSource(str(image_per_row), columns=COLUMNS)
    everything = {row["product_id"] for row in source.iter_products("train")}
    seen = []
    for rank in range(2):
        stream = load_product_stream(source, "train", shuffle_buffer=8, seed=0, rank=rank, world_size=2)
        seen.append([row["product_id"] for row in stream])
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == everything
    assert all(len(ids) == len(set(ids)) for ids in seen)


def test_rows_of_a_product_that_are_not_consecutive_are_counted(demo_catalogue: Path, tmp_path: Path) -> None:
    products = read_split(demo_catalogue, "train")[: 2 * TINY_BATCH]
    a, b = products[0], products[1]
    # a's images, then b's, then a's again: a comes out twice, its second part flagged.
    scattered = [dict(a, images=a["images"][:4]), b, dict(a, images=a["images"][4:]), *products[2:]]
    root = write_image_per_row(tmp_path / "scattered", {"train": scattered})
    source = CatalogueSource(str(root), columns=COLUMNS)
    flags = [(row["product_id"], row["noncontiguous"]) for row in source.iter_products("train")]
    assert flags[:3] == [(a["product_id"], False), (b["product_id"], False), (a["product_id"], True)]
    stream = ProductPairStream(
        load_product_stream(source, shuffle_buffer=0), make_processor(), batch_size=TINY_BATCH, num_workers=0
    )
    list(stream)
    assert stream.counters["noncontiguous_products"] == 1


def test_bad_rows_are_skipped_and_counted(demo_catalogue: Path, tmp_path: Path) -> None:
    products = read_split(demo_catalogue, "train")[: 3 * TINY_BATCH + 3]  # 3 bad, 3 full batches
    rows = image_rows(products)
    first = len(products[0]["images"])
    for row in rows[:first]:  # product 0: no title
        row["name"] = None
    second = first + len(products[1]["images"])
    for row in rows[first + 1 : second]:  # product 1: every image but one missing
        row["photo"] = None
    third = second + len(products[2]["images"])
    for row in rows[second:third]:  # product 2: no product id
        row["sku"] = None
    root = tmp_path / "holes"
    (root / "data").mkdir(parents=True)
    table = datasets.Dataset.from_list(rows)
    table = table.cast_column("photo", datasets.Image())
    table.to_parquet(root / "data" / "train-00000-of-00001.parquet")
    source = CatalogueSource(str(root), columns=COLUMNS)
    stream = ProductPairStream(
        load_product_stream(source, shuffle_buffer=0),
        make_processor(),
        batch_size=TINY_BATCH,
        num_workers=0,
        drop_last=False,
    )
    ids = {pid for batch in stream for pid in batch["product_ids"].tolist()}
    assert stream.counters["skipped_blank_title_products"] == 1
    assert stream.counters["skipped_single_image_products"] == 1
    assert stream.counters["skipped_corrupt_images"] == len(products[1]["images"]) - 1
    assert stream.counters["skipped_no_product_id_products"] == 1
    assert ids == {product_id_to_int(p["product_id"]) for p in products[3:]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "sku"}, "has no column 'sku' for the product product id; its columns: name (string)"),
        ({"drop": "sku"}, "Name the right one with --product_id_column"),
        ({"drop": "photo"}, "--image_column"),
        ({"cast": ("name", datasets.Value("int64"))}, "column 'name' (--title_column) is int, expected string"),
        ({"cast": ("photographer", datasets.Value("float32"))}, None),  # optional field of another type: unused
        ({"cast": ("shot", datasets.Value("int32"))}, "the image kind 'shot' (--kind_column) is int"),
        ({"cast": ("photo", datasets.Value("int64"))}, "column 'photo' (--image_column) is int, expected an Image"),
    ],
)
def test_a_dataset_that_cannot_be_read_fails_at_start_up_naming_the_column(
    change: dict, message: str | None, tmp_path: Path
) -> None:
    rows = [
        {"sku": "p0", "name": "1", "photographer": "1", "shot": "1", "photo": "7"},
        {"sku": "p0", "name": "1", "photographer": "1", "shot": "1", "photo": "8"},
    ]
    table = datasets.Dataset.from_list(rows)
    if "drop" in change:
        table = table.remove_columns(change["drop"])
    if "cast" in change:
        table = table.cast_column(*change["cast"])
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    source = CatalogueSource(str(tmp_path), columns=COLUMNS)
    if message is None:
        source.layout("train")
        return
    with pytest.raises(CatalogueSchemaError) as error:
        source.layout("train")
    assert message in str(error.value)


def test_pretraining_refuses_a_bad_dataset_before_any_compute(
    image_per_row: Path, demo_catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the dataset was checked")

    monkeypatch.setattr(EclipForPreTraining, "__init__", no_model)
    model_config = write_tiny_model_config(tmp_path / "tiny.json")
    # Our default column names on a dataset that has others.
    args = parse_arguments(tiny_run_arguments(model_config, image_per_row, tmp_path / "a"))
    with pytest.raises(CatalogueSchemaError, match="no column 'product_id' .* --product_id_column"):
        pretrain(args)
    # A format-1 catalogue: named, with the migration command.
    old = tmp_path / "old"
    (old / "train").mkdir(parents=True)
    (old / "train" / "shard-00000.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"old format 1 .* modeling_eclip\.data\.migrate"):
        pretrain(parse_arguments(tiny_run_arguments(model_config, old, tmp_path / "b")))
    # The evaluation split needs a category.
    no_category = {**MAPPING, "category_column": "department"}
    flags = {**no_category, "evaluate_at_end": True}
    with pytest.raises(CatalogueSchemaError, match="no column 'department' .* --category_column"):
        pretrain(parse_arguments(tiny_run_arguments(model_config, image_per_row, tmp_path / "c", **flags)))
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_pretraining_from_a_dataset_name_with_a_column_mapping_resumes_exactly(
    image_per_row: Path, tmp_path: Path
) -> None:
    model_config = write_tiny_model_config(tmp_path / "tiny.json")
    flags = {**MAPPING, "max_steps": 4, "warmup_steps": 1, "shuffle_buffer": 8, "augment": True, "save_steps": 2}
    reference_dir = tmp_path / "reference"
    result = pretrain(parse_arguments(tiny_run_arguments(model_config, image_per_row, reference_dir, **flags)))
    assert result.step == 4
    reference = read_metrics(reference_dir)

    # The run as a kill after step 2 leaves it: its checkpoint-2 (and the steps it logged), then resumed.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(reference_dir, resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoint-4")
    arguments = tiny_run_arguments(model_config, image_per_row, resumed_dir, resume="latest", **flags)
    assert pretrain(parse_arguments(arguments)).step == 4
    resumed = read_metrics(resumed_dir)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in ("loss", "loss_itc", "loss_inter", "loss_intra"):
            assert resumed[step][key] == reference[step][key], (step, key)

    # Another column mapping on resume would read other data: refused.
    changed = tiny_run_arguments(
        model_config, image_per_row, resumed_dir, resume="latest", **{**flags, "max_steps": 6, "source_column": "shot"}
    )
    with pytest.raises(Exception, match="source_column"):
        pretrain(parse_arguments(changed))


def test_evaluation_cli_takes_the_same_dataset_options(image_per_row: Path, tmp_path: Path, capsys) -> None:
    from modeling_eclip.evaluation.cli import main

    model = save_tiny_checkpoint(tmp_path / "model")
    flags = [f"--{name}={value}" for name, value in MAPPING.items()]
    output = tmp_path / "results.json"
    # Without boxes in the dataset, grounding (Table 4) cannot be measured.
    main(
        ["--model", str(model), "--dataset_name", str(image_per_row), *flags, "--output", str(output), "--no-grounding"]
    )
    results = json.loads(output.read_text())
    assert results["num_products"] == len(read_split_of(image_per_row, "test"))
    assert "Table 1" in capsys.readouterr().out
    assert math.isfinite(results["table1"]["classification"]["acc@1 (image+title)"])
    assert results["table3"]["num_queries"] > 0 and results["table3"]["queries_without_match"] == 0


def read_split_of(root: Path, split: str) -> list[dict]:
    return list(CatalogueSource(str(root), columns=COLUMNS).iter_products(split))


def test_data_files_read_catalogues_outside_a_repository(demo_catalogue: Path) -> None:
    files = [str(path) for path in sf.list_shards(demo_catalogue, "test")]
    source = CatalogueSource("parquet", data_files={"test": files})
    assert [row["product_id"] for row in source.iter_products("test")] == [
        row["product_id"] for row in read_split(demo_catalogue, "test")
    ]


def test_evaluation_leaves_out_and_counts_products_without_title_or_category(
    demo_catalogue: Path, tmp_path: Path
) -> None:
    from modeling_eclip.evaluation.embedding import load_catalogue_split

    products = read_split(demo_catalogue, "test")
    rows = image_rows(products)
    for row in rows:
        if row["sku"] == products[0]["product_id"]:
            row["label"] = None
        if row["sku"] == products[1]["product_id"]:
            row["name"] = " "
    (tmp_path / "data").mkdir()
    table = datasets.Dataset.from_list(rows).cast_column("photo", datasets.Image())
    table.to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    split = load_catalogue_split(CatalogueSource(str(tmp_path), columns=COLUMNS), "test")
    assert split.skipped_products == 2
    assert split.product_ids == [p["product_id"] for p in products[2:]]
    assert None not in split.categories
