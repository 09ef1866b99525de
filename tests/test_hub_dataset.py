# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The catalogue format as a Hugging Face dataset (issue 15): the demo catalogue and a converted one load with plain
`datasets` (with and without streaming) in a process that imports nothing of ours, their dataset card parses, the
three producers push the finished folder to the Hub (a local stand-in of `HfApi`), and format-1 shards migrate."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bad_inputs
import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import DEMO_CATALOGUE, HubApiStandIn, can_build_catalogue
from huggingface_hub import DatasetCard
from PIL import Image

from modeling_eclip.data import convert as c2s
from modeling_eclip.data import hub
from modeling_eclip.data import migrate as migrate_shards
from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.hub import check_complete_catalogue, push_catalogue
from modeling_eclip.data.source import CatalogueSource, read_split
from modeling_eclip.demo import catalogue as dc
from modeling_eclip.processing_eclip import to_rgb_image

# Run with `python -c` in a fresh process and cache: nothing of ours is imported, `datasets` alone reads the folders.
PLAIN_DATASETS_READER = r"""
import json, sys
import datasets
from PIL import Image

def describe(product, kind_feature):
    image = product["images"][0]
    return {
        "product_id": product["product_id"],
        "pil": isinstance(image["image"], Image.Image),
        "size": list(image["image"].size),
        "kind": kind_feature.int2str(image["kind"]),
        "boxes": image["boxes"],
    }

result = {}
for path in sys.argv[1:]:
    # First, before anything is cached: the split sizes come from the dataset card.
    builder = datasets.load_dataset_builder(path)
    found = {"card_splits": {name: split.num_examples for name, split in builder.info.splits.items()}}
    for split, dataset in datasets.load_dataset(path).items():
        kind = dataset.features["images"].feature["kind"]
        streamed = list(datasets.load_dataset(path, split=split, streaming=True))
        found[split] = {
            "rows": dataset.num_rows,
            "kind": repr(kind),
            "boxes": repr(dataset.features["images"].feature["boxes"]),
            "first": describe(dataset[0], kind),
            "streamed_rows": len(streamed),
            "streamed_first": describe(streamed[0], kind),
        }
    result[path] = found
result["imported"] = sorted({name.split(".")[0] for name in sys.modules} & {"modeling_eclip", "helpers"})
print(json.dumps(result))
"""


def _catalogue_rows(folder: Path, products: int = 4) -> Path:
    """A JSONL catalogue of ``products`` products with two PNG images each, the second a customer photo."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(2 * products):
        (folder / f"{index}.png").write_bytes(bad_inputs.valid_png(index))
        kind = "customer" if index % 2 else "catalog"
        rows.append(
            {"product_id": f"p-{index // 2}", "title": f"Thing {index // 2}", "image": f"{index}.png", "kind": kind}
        )
    path = folder / "catalogue.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue converted by modeling_eclip/data/convert.py, with both splits."""
    root = tmp_path_factory.mktemp("converted")
    output = root / "shop"
    c2s.convert(_catalogue_rows(root / "catalogue"), output, test_fraction=0.5, license="cc-by-4.0")
    return output


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- plain `datasets` loads it
@pytest.mark.slow
def test_plain_datasets_loads_both_catalogues_with_and_without_streaming(
    demo_catalogue: Path, converted: Path, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-c", PLAIN_DATASETS_READER, str(demo_catalogue), str(converted)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    kind_feature = repr(datasets.ClassLabel(names=list(sf.IMAGE_KINDS)))
    boxes_feature = repr(datasets.List(datasets.List(datasets.Value("float32"), length=4)))
    for root in (demo_catalogue, converted):
        found = result[str(root)]
        expected = {split: read_split(root, split) for split in sf.SPLITS}
        assert found["card_splits"] == {split: len(rows) for split, rows in expected.items()}
        for split, rows in expected.items():
            assert found[split]["rows"] == found[split]["streamed_rows"] == len(rows)
            assert (found[split]["kind"], found[split]["boxes"]) == (kind_feature, boxes_feature)
            first = rows[0]["images"][0]
            for decoded in (found[split]["first"], found[split]["streamed_first"]):
                assert decoded["pil"] and decoded["product_id"] == rows[0]["product_id"]
                assert decoded["kind"] == first["kind"] and decoded["boxes"] == first["boxes"]
    size = DEMO_CATALOGUE["image_size"]
    assert result[str(demo_catalogue)]["train"]["first"]["size"] == [size, size]
    assert result[str(converted)]["train"]["first"]["kind"] == "catalog"


# -------------------------------------------------------------------------------------------------- the card
@pytest.mark.parametrize("which", ["demo", "converted"])
def test_the_dataset_card_parses_and_maps_every_split_to_its_files(
    which: str, demo_catalogue: Path, converted: Path
) -> None:
    root = demo_catalogue if which == "demo" else converted
    text = (root / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("\n---\n", 1)[0].removeprefix("---\n"))
    assert header == DatasetCard.load(root / "README.md").data.to_dict()
    assert header["license"] == ("other" if which == "demo" else "cc-by-4.0")
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in sf.SPLITS]}
    ]
    info = datasets.DatasetInfo._from_yaml_dict(header["dataset_info"])
    assert info.features == sf.CATALOGUE_FEATURES
    rows = {split: sum(pq.ParquetFile(p).metadata.num_rows for p in sf.list_shards(root, split)) for split in sf.SPLITS}
    assert {name: split.num_examples for name, split in info.splits.items()} == rows
    assert info.download_size == sum(p.stat().st_size for s in sf.SPLITS for p in sf.list_shards(root, s))


# ----------------------------------------------------------------------------------------------------- pushes
def _assert_pushed(api: HubApiStandIn, folder: Path, repo_id: str, private: bool, message: str) -> None:
    assert api.repos == [{"repo_id": repo_id, "repo_type": "dataset", "private": private, "exist_ok": True}]
    assert api.uploads == [{"repo_id": repo_id, "repo_type": "dataset", "folder_path": str(folder)}]
    assert [m for m, _ in api.commits] == [message]
    pushed = _files(api.commits[0][1])
    assert pushed == _files(folder) and "README.md" in pushed  # the finished folder, exactly


def test_push_catalogue_uploads_the_finished_folder_as_a_dataset(demo_catalogue: Path, tmp_path: Path) -> None:
    api = HubApiStandIn(tmp_path / "hub")
    url = push_catalogue(demo_catalogue, "org/demo", private=True, commit_message="First upload", api=api)
    assert url == "https://huggingface.co/datasets/org/demo"
    _assert_pushed(api, demo_catalogue, "org/demo", True, "First upload")
    # Pushing an existing folder again, from the command line.
    again = HubApiStandIn(tmp_path / "hub-again")
    assert hub.main([str(demo_catalogue), "--push_to_hub", "org/demo"], hub_api=again) == 0
    _assert_pushed(again, demo_catalogue, "org/demo", False, hub.DEFAULT_COMMIT_MESSAGE)


def test_an_unfinished_folder_is_never_pushed(demo_catalogue: Path, tmp_path: Path) -> None:
    api = HubApiStandIn(tmp_path / "hub")
    cases = {
        "no dataset card": lambda root: (root / "README.md").unlink(),
        "unfinished build": lambda root: (root / "data" / ".train-00001.partial.parquet").write_bytes(b"half"),
        "incomplete": lambda root: (root / "data" / "train-00000-of-00001.parquet").rename(
            root / "data" / "train-00000-of-00002.parquet"
        ),
        "not named": lambda root: (root / "data" / "extra.parquet").write_bytes(b"x"),
    }
    for reason, damage in cases.items():
        root = tmp_path / reason.replace(" ", "-")
        shutil.copytree(demo_catalogue, root)
        damage(root)
        with pytest.raises(ValueError, match=reason):
            push_catalogue(root, "org/demo", api=api)
    with pytest.raises(ValueError, match="not a Hub repository id"):
        push_catalogue(demo_catalogue, "org/two/slashes", api=api)
    assert hub.main([str(tmp_path / "not-named"), "--push_to_hub", "org/demo"], hub_api=api) == 2
    assert check_complete_catalogue(demo_catalogue) == demo_catalogue
    assert api.repos == [] and api.commits == []


def test_the_converter_pushes_after_the_swap(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    api = HubApiStandIn(tmp_path / "hub")
    catalogue, output = _catalogue_rows(tmp_path / "catalogue", products=2), tmp_path / "shop"
    with pytest.raises(SystemExit) as exit_:  # an option error, refused before converting
        c2s.main([str(catalogue), "--output", str(output), "--push_to_hub", "not a repo"], hub_api=api)
    assert exit_.value.code == 2 and "--push_to_hub" in capsys.readouterr().err and not output.exists()
    arguments = [str(catalogue), "--output", str(output), "--push_to_hub", "org/shop", "--commit_message", "v1"]
    assert c2s.main(arguments, hub_api=api) == 0
    assert "pushed" in capsys.readouterr().out
    _assert_pushed(api, output, "org/shop", False, "v1")
    assert "rejections.json" in _files(api.commits[0][1])

    class Offline(HubApiStandIn):
        def upload_folder(self, **kwargs):
            raise ConnectionError("no network")

    # A failed upload keeps the converted folder and says how to upload it alone.
    with pytest.raises(ConnectionError):
        c2s.main([*arguments, "--overwrite"], hub_api=Offline(tmp_path / "offline"))
    assert f"python -m modeling_eclip.data.hub {output} --push_to_hub org/shop" in capsys.readouterr().err
    check_complete_catalogue(output)


def test_the_demo_builder_pushes(tmp_path: Path) -> None:
    if not can_build_catalogue():
        pytest.skip("needs Unicode's emoji-test.txt and emoji artwork")
    api = HubApiStandIn(tmp_path / "hub")
    output = tmp_path / "demo"
    arguments = ["--output", str(output), "--max-products", "4", "--image-size", "32", "--workers", "1"]
    assert dc.main([*arguments, "--push-to-hub", "org/two/slashes"], hub_api=api) == 2 and not output.exists()
    assert dc.main([*arguments, "--push-to-hub", "org/demo", "--private"], hub_api=api) == 0
    _assert_pushed(api, output, "org/demo", True, hub.DEFAULT_COMMIT_MESSAGE)


# ------------------------------------------------------------------------------------------- format-1 shards
OLD_IMAGE = pa.struct(
    [
        ("image", pa.binary()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("boxes", pa.list_(pa.list_(pa.float32()))),
        ("box_product_ids", pa.list_(pa.string())),
    ]
)
OLD_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("split", pa.string()),
        ("images", pa.list_(OLD_IMAGE)),
    ],
    metadata={b"eclip_shard_format_version": b"1"},
)


def _old_product(index: int, split: str) -> dict:
    product_id = f"old-{index}"
    images = [
        {
            "image": bad_inputs.valid_png(10 * index + number),
            "source": f"camera-{number}",
            "kind": sf.IMAGE_KINDS[(index + number) % 3],
            # The second image also shows another product.
            "boxes": [[1.0, 2.0, 20.0, 22.0]] + [[0.5, 0.5, 8.0, 9.0]] * number,
            "box_product_ids": [product_id] + [f"old-{index + 1}"] * number,
        }
        for number in range(2)
    ]
    return {
        "product_id": product_id,
        "title": f"Old thing {index}",
        "category": "relics",
        "split": split,
        "images": images,
    }


def _write_format_1(root: Path) -> dict[str, list[dict]]:
    """A format-1 catalogue: train in two shard files, test in one, licence files and dataset_info.json."""
    rows = {"train": [_old_product(i, "train") for i in range(5)], "test": [_old_product(i, "test") for i in (5, 6)]}
    for split, files in {"train": [rows["train"][:3], rows["train"][3:]], "test": [rows["test"]]}.items():
        (root / split).mkdir(parents=True)
        for number, chunk in enumerate(files):
            pq.write_table(pa.Table.from_pylist(chunk, schema=OLD_SCHEMA), root / split / f"shard-{number:05d}.parquet")
    (root / "LICENSE-DATA.md").write_text("# Licence\n\nPhotos by our studio, CC BY 4.0.\n")
    (root / "ATTRIBUTION.md").write_text("# Attribution\n\n- Studio photos.\n")
    (root / "dataset_info.json").write_text(json.dumps({"name": "old-shop", "description": "The old shop."}))
    return rows


def test_format_1_shards_migrate_with_every_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    rows = _write_format_1(old)
    with pytest.raises(FileNotFoundError, match=r"old format 1.*modeling_eclip\.data\.migrate"):
        CatalogueSource(str(old))

    api = HubApiStandIn(tmp_path / "hub")
    assert migrate_shards.main([str(old), "--output", str(new), "--push_to_hub", "org/shop"], hub_api=api) == 0
    assert "train: 5 products" in capsys.readouterr().out
    for split, expected in rows.items():
        migrated = read_split(new, split)
        assert [(r["product_id"], r["title"], r["category"]) for r in migrated] == [
            (r["product_id"], r["title"], r["category"]) for r in expected
        ]
        for mine, theirs in zip(migrated, expected):
            fields = ("image", "source", "kind", "boxes", "box_product_ids")
            assert [{k: image[k] for k in fields} for image in mine["images"]] == theirs["images"]
    for name in ("LICENSE-DATA.md", "ATTRIBUTION.md", "dataset_info.json"):
        assert (new / name).read_bytes() == (old / name).read_bytes()
    card = sf.read_card_metadata(new)
    assert (card["license"], card["license_link"], card["pretty_name"]) == ("other", "LICENSE-DATA.md", "old-shop")
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*.parquet")) == [
        "test/shard-00000.parquet",
        "train/shard-00000.parquet",
        "train/shard-00001.parquet",
    ], "the old folder must only be read"
    _assert_pushed(api, new, "org/shop", False, hub.DEFAULT_COMMIT_MESSAGE)

    # A non-empty output needs --overwrite; a folder without old shards has nothing to migrate.
    assert migrate_shards.main([str(old), "--output", str(new)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert migrate_shards.main([str(old), "--output", str(new), "--overwrite", "--license", "cc-by-4.0"]) == 0
    assert sf.read_card_metadata(new)["license"] == "cc-by-4.0" and "license_link" not in sf.read_card_metadata(new)
    assert migrate_shards.main([str(new), "--output", str(tmp_path / "again")]) == 2
    assert "holds no <split>/shard-*.parquet files of the old format" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def _gif_with_transparency() -> bytes:
    image = Image.new("P", (24, 20), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(0, (0, 0, 8, 8))
    buffer = io.BytesIO()
    image.save(buffer, format="GIF", transparency=0)
    return buffer.getvalue()


def _encoded(image: Image.Image, image_format: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save)
    return buffer.getvalue()


def _webp_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    return _encoded(Image.new("RGB", (24, 20), (10, 200, 30)), "WEBP", lossless=True, exif=exif)


OTHER_FORMATS = {
    "GIF": _gif_with_transparency,
    "WEBP": _webp_rotated,
    "BMP": lambda: _encoded(Image.new("RGB", (24, 20), (10, 20, 30)), "BMP"),
    "TIFF": lambda: _encoded(Image.new("CMYK", (24, 20), (10, 20, 30, 40)), "TIFF"),
}


def test_images_of_other_formats_migrate_as_png_with_the_same_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    rows = _write_format_1(old)
    originals = {}
    for index, (kind, encode) in enumerate(OTHER_FORMATS.items()):
        originals[kind] = rows["train"][index]["images"][1]["image"] = encode()
    shutil.rmtree(old / "train")
    (old / "train").mkdir()
    pq.write_table(pa.Table.from_pylist(rows["train"], schema=OLD_SCHEMA), old / "train" / "shard-00000.parquet")
    # Before: "error: image bytes are neither PNG nor JPEG", naming no product.
    assert migrate_shards.main([str(old), "--output", str(new)]) == 0
    out = capsys.readouterr().out
    assert all(f"converted to PNG: 1 {kind} image(s)" in out for kind in OTHER_FORMATS), out
    migrated = read_split(new, "train")
    for index, kind in enumerate(OTHER_FORMATS):
        stored = migrated[index]["images"][1]["image"]
        assert sf.image_format(stored) == "png", kind
        # Readers decode the stored PNG exactly as they decoded the original (transparency, EXIF orientation).
        assert list(to_rgb_image(stored).getdata()) == list(to_rgb_image(originals[kind]).getdata()), kind
        assert Image.open(io.BytesIO(stored)).size == Image.open(io.BytesIO(originals[kind])).size  # boxes still fit
    fields = ("image", "source", "kind", "boxes", "box_product_ids")
    assert [{k: image[k] for k in fields} for image in migrated[4]["images"]] == rows["train"][4]["images"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("undecodable", "nor an image Pillow decodes .*; replace the image in the old catalogue, or remove it"),
        ("no_source", "empty source"),
        ("null_box", "box \\[1.0, None, 20.0, 22.0\\] is not \\[x0, y0, x1, y1\\]"),
    ],
)
def test_a_row_that_cannot_migrate_is_named_by_file_row_split_and_product(
    tmp_path: Path, capsys: pytest.CaptureFixture, damage: str, message: str
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    rows = _write_format_1(old)
    image = rows["train"][1]["images"][1]
    if damage == "undecodable":
        image["image"] = bad_inputs.gif_bad_header()[:20]
    elif damage == "no_source":
        image["source"] = None
    else:
        image["boxes"][0][1] = None
    pq.write_table(pa.Table.from_pylist(rows["train"][:3], schema=OLD_SCHEMA), old / "train" / "shard-00000.parquet")
    assert migrate_shards.main([str(old), "--output", str(new)]) == 2
    error = capsys.readouterr().err
    assert f"train/shard-00000.parquet row 1 (split train): product {rows['train'][1]['product_id']} image 1: " in error
    assert re.search(message, error), error
    assert "Traceback" not in error and not new.exists()
