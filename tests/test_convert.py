# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of the catalogue converter (modeling_eclip/data/convert.py): what it accepts and rejects, and the dataset
folder it writes (data files, dataset card, report)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_eclip import processing_eclip
from modeling_eclip.data import convert as c2s
from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import read_split

EXPECTED = {
    "no_product_id": 0,
    "no_title": 1,
    "invalid_kind": 0,
    "path_outside_catalogue": 0,
    "not_a_regular_file": 0,
    "image_file_too_large": 0,
    "missing_image_file": 1,
    "duplicate": 1,
    "unreadable_image": 1,
    "single_image_product": 1,
}
GOOD_PRODUCTS = {"p-good-1", "p-good-2", "p-cmyk", "p-16bit"}


def _rgb(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size + 8, 3), dtype=np.uint8))


def _save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return path.name


def _make_images(folder: Path) -> list[dict]:
    """Catalogue rows (image paths relative to ``folder``) with one of each problem."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []

    def add(pid: str, image: str, title: str = "", **extra) -> None:
        rows.append({"product_id": pid, "title": title or f"title of {pid}", "image": image, **extra})

    add("p-good-1", _save(_rgb(1), folder / "g1a.png"), category="toys", source="shop", kind="catalog")
    add("p-good-1", _save(_rgb(2), folder / "g1b.jpg", quality=95), source="phone", kind="customer")
    add("p-good-2", _save(_rgb(3), folder / "g2a.jpg"))
    add("p-good-2", _save(_rgb(4), folder / "g2b.png"), kind="ad")
    # A truncated JPEG: the other two images of p-good-2 keep the product.
    full = io.BytesIO()
    _rgb(5, 96).save(full, format="JPEG")
    (folder / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    add("p-good-2", "truncated.jpg")
    add("p-cmyk", _save(_rgb(6).convert("CMYK"), folder / "cmyk.jpg"))
    add("p-cmyk", _save(_rgb(7), folder / "cmyk-partner.png"))
    sixteen = Image.fromarray((np.random.default_rng(8).integers(0, 65536, (40, 48))).astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    add("p-16bit", _save(sixteen, folder / "sixteen.png"))
    add("p-16bit", _save(_rgb(9), folder / "sixteen-partner.jpg"))
    add("p-16bit", "sixteen-partner.jpg")  # duplicate row: same product, same image
    add("p-untitled", _save(_rgb(10), folder / "untitled.png"), title=" ")
    rows[-1]["title"] = " "
    add("p-single", _save(_rgb(11), folder / "single.png"))
    add("p-good-1", "does-not-exist.png")
    return rows


@pytest.fixture
def rows(tmp_path: Path) -> list[dict]:
    return _make_images(tmp_path / "catalogue")


def _write_jsonl(rows: list[dict], folder: Path) -> Path:
    path = folder / "catalogue.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _check_output(output: Path, report: dict, image_size: int | None = None, missing: int = 1) -> list[dict]:
    assert report["rejected_rows"] == {**EXPECTED, "missing_image_file": missing}
    assert report["input_rows"] == 12 + missing
    assert report["accepted_rows"] == 8  # the 8 images of the 4 good products, whatever else was rejected
    assert json.loads((output / "rejections.json").read_text()) == report
    assert not [p for p in output.rglob("*") if p.name.startswith(".")], "temporary or partial files left behind"
    assert [p.name for p in sf.list_shards(output, "train")] == ["train-00000-of-00001.parquet"]
    assert sf.read_card_metadata(output)["dataset_info"]["splits"][0]["num_examples"] == len(GOOD_PRODUCTS)
    products = read_split(output, "train")
    assert {row["product_id"] for row in products} == GOOD_PRODUCTS
    for row in products:
        sf.validate_row(row)
        assert len(row["images"]) >= 2
        for image in row["images"]:
            decoded = Image.open(io.BytesIO(image["image"]))
            assert decoded.mode == "RGB"  # CMYK and 16-bit sources were converted
            if image_size:
                assert decoded.size == (image_size, image_size)
    by_id = {row["product_id"]: row for row in products}
    assert [im["kind"] for im in by_id["p-good-1"]["images"]] == ["catalog", "customer"]
    assert [im["source"] for im in by_id["p-good-1"]["images"]] == ["shop", "phone"]
    assert by_id["p-good-1"]["category"] == "toys"
    return products


def test_jsonl(rows: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    catalogue = _write_jsonl(rows, tmp_path / "catalogue")
    assert c2s.main([str(catalogue), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "rejections.json").read_text())
    _check_output(tmp_path / "out", report)
    printed = capsys.readouterr().out
    assert "| rejected: unreadable_image | 1 |" in printed


def test_an_image_file_over_the_size_cap_is_counted_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The converter applies the readers' cap (``processing_eclip.MAX_IMAGE_FILE_BYTES``) before reading a file."""
    folder = tmp_path / "catalogue"
    folder.mkdir()
    rows = [
        {"product_id": pid, "title": f"title of {pid}", "image": _save(_rgb(seed, size), folder / f"{pid}-{seed}.png")}
        for pid, seed, size in (("small", 1, 16), ("small", 2, 16), ("big", 3, 16), ("big", 4, 128))
    ]
    monkeypatch.setattr(processing_eclip, "MAX_IMAGE_FILE_BYTES", (folder / "big-4.png").stat().st_size - 1)
    report = c2s.convert(_write_jsonl(rows, folder), tmp_path / "out")
    assert report["rejected_rows"]["image_file_too_large"] == 1
    assert report["rejected_rows"]["single_image_product"] == 1  # "big" kept one image: not a product to train on
    assert report["accepted_rows"] == 2


def test_csv_with_absolute_paths_and_pre_resize(rows: list[dict], tmp_path: Path) -> None:
    folder = tmp_path / "catalogue"
    path = tmp_path / "elsewhere" / "catalogue.csv"
    path.parent.mkdir()
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["product_id", "title", "category", "image", "source", "kind"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(folder / row["image"])})
    # The images are outside the CSV's folder: refused unless allowed.
    with pytest.raises(c2s.CatalogueError, match="no product"):
        c2s.convert(path, tmp_path / "out")
    report = c2s.convert(path, tmp_path / "out", image_size=24, allow_outside_paths=True)
    _check_output(tmp_path / "out", report, image_size=24)


def test_saved_datasets_dataset(rows: list[dict], tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "catalogue"
    rows = [row for row in rows if row["image"] != "does-not-exist.png"]  # save_to_disk embeds every image file
    columns = {key: [row.get(key) or "" for row in rows] for key in ("product_id", "title", "category", "source")}
    columns["kind"] = [row.get("kind") or "catalog" for row in rows]
    columns["image"] = [str(folder / row["image"]) for row in rows]
    # An Image feature: save_to_disk embeds the bytes; loading would decode to PIL unless the converter says not to.
    dataset = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    report = c2s.convert(tmp_path / "saved", tmp_path / "out")
    _check_output(tmp_path / "out", report, missing=0)


def test_test_fraction_splits_by_product(rows: list[dict], tmp_path: Path) -> None:
    catalogue = _write_jsonl(rows, tmp_path / "catalogue")
    report = c2s.convert(catalogue, tmp_path / "out", test_fraction=0.5, seed=3)
    assert report["splits"]["train"]["products"] == report["splits"]["test"]["products"] == 2
    train = {row["product_id"] for row in read_split(tmp_path / "out", "train")}
    test = {row["product_id"] for row in read_split(tmp_path / "out", "test")}
    assert not train & test and train | test == GOOD_PRODUCTS
    splits = sf.read_card_metadata(tmp_path / "out")["dataset_info"]["splits"]
    assert {split["name"]: split["num_examples"] for split in splits} == {"train": 2, "test": 2}


def test_the_dataset_card_states_licence_name_and_description(rows: list[dict], tmp_path: Path) -> None:
    catalogue = _write_jsonl(rows, tmp_path / "catalogue")
    assert c2s.main([str(catalogue), "--output", str(tmp_path / "default")]) == 0
    card = sf.read_card_metadata(tmp_path / "default")
    assert card["license"] == "other" and card["pretty_name"] == "default"
    body = (tmp_path / "default" / "README.md").read_text()
    assert "catalogue.jsonl" in body and "rejections.json" in body  # the default description: source and report

    options = ["--license", "cc-by-4.0", "--pretty-name", "My shop", "--description", "Shoes and socks."]
    assert c2s.main([str(catalogue), "--output", str(tmp_path / "named"), *options]) == 0
    card = sf.read_card_metadata(tmp_path / "named")
    assert (card["license"], card["pretty_name"]) == ("cc-by-4.0", "My shop")
    assert "license_name" not in card and "license_link" not in card
    assert "# My shop\n\nShoes and socks.\n" in (tmp_path / "named" / "README.md").read_text()

    # A licence name or link describes "other" only; refused with another licence before anything is converted.
    mixed = [str(catalogue), "--output", str(tmp_path / "mixed"), "--license", "mit", "--license-name", "x"]
    with pytest.raises(SystemExit):
        c2s.main(mixed)
    with pytest.raises(ValueError, match="license_name, license_link"):
        c2s.convert(catalogue, tmp_path / "mixed", license="mit", license_link="LICENSE")
    with pytest.raises(ValueError, match="licence id"):
        c2s.convert(catalogue, tmp_path / "mixed", license=" ")
    assert not (tmp_path / "mixed").exists()

    custom = ["--license-name", "shop-terms-1.0", "--license-link", "https://shop.example/terms"]
    assert c2s.main([str(catalogue), "--output", str(tmp_path / "custom"), *custom]) == 0
    card = sf.read_card_metadata(tmp_path / "custom")
    assert (card["license"], card["license_name"], card["license_link"]) == (
        "other",
        "shop-terms-1.0",
        "https://shop.example/terms",
    )
