# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the data tools (issue 13): the pair order at scale, catalogue paths that leave the catalogue folder,
malformed catalogues and arguments of the converter, and outputs replaced atomically or not at all."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import bad_inputs
import numpy as np
import pytest

from modeling_eclip.data import convert as c2s
from modeling_eclip.data import output_folder
from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import read_split
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


# ------------------------------------------------------------------------------------ the converter's inputs
def _catalogue(tmp_path: Path, rows: list[dict], name: str = "catalogue.jsonl") -> Path:
    """A catalogue folder with two good products (two images each) followed by ``rows``."""
    folder = tmp_path / "catalogue"
    folder.mkdir(exist_ok=True)
    good = []
    for index in range(4):
        (folder / f"good-{index}.png").write_bytes(bad_inputs.valid_png(index))
        good.append({"product_id": f"p-{index // 2}", "title": f"Thing {index // 2}", "image": f"good-{index}.png"})
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in good + rows))
    return path


def _rejected(report: dict) -> dict[str, int]:
    return {reason: count for reason, count in report["rejected_rows"].items() if count}


def test_image_paths_that_leave_the_catalogue_folder_are_refused_and_counted(tmp_path: Path) -> None:
    outside = tmp_path / "secret" / "outside.png"
    outside.parent.mkdir()
    outside.write_bytes(bad_inputs.valid_png(9))
    (tmp_path / "catalogue").mkdir()
    cases = bad_inputs.hostile_image_paths(tmp_path / "catalogue", outside)
    rows = [{"product_id": f"x-{name}", "title": name, "image": field} for name, (field, _, _) in cases.items()]
    catalogue = _catalogue(tmp_path, rows)
    started = time.perf_counter()
    report = c2s.convert(catalogue, tmp_path / "out")
    expected: dict[str, int] = {}
    for _, reason, _ in cases.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert _rejected(report) == expected
    assert {row["product_id"] for row in read_split(tmp_path / "out", "train")} == {"p-0", "p-1"}

    # Trusted input: outside paths are read, but a device, a FIFO or a folder never is.
    report = c2s.convert(catalogue, tmp_path / "trusted", allow_outside_paths=True)
    allowed: dict[str, int] = {}
    for _, _, reason in cases.values():
        if reason != "accepted":
            allowed[reason] = allowed.get(reason, 0) + 1
    accepted = sum(outcome == "accepted" for _, _, outcome in cases.values())
    # The accepted ones are single images of their products (counted as such), after every other check.
    assert _rejected(report) == {**allowed, "single_image_product": accepted}
    assert time.perf_counter() - started < 60  # neither /dev/zero nor the FIFO was read


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
def test_csv_dialects_and_byte_order_marks_are_read(tmp_path: Path, delimiter: str, bom: bool) -> None:
    jsonl = _catalogue(tmp_path, [{"product_id": "p-2", "title": "Thing; with, separators", "image": "good-0.png"}])
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    lines = [delimiter.join(["product_id", "title", "image"])]
    lines += [delimiter.join([row["product_id"], f'"{row["title"]}"', row["image"]]) for row in rows]
    csv_path = jsonl.with_suffix(".csv")
    csv_path.write_bytes(("\ufeff" if bom else "").encode() + "\r\n".join(lines).encode() + b"\r\n")
    report = c2s.convert(csv_path, tmp_path / "csv")
    assert report["accepted_rows"] == 4 and _rejected(report) == {"single_image_product": 1}
    if bom:
        jsonl.write_bytes(b"\xef\xbb\xbf" + jsonl.read_bytes())
        assert c2s.convert(jsonl, tmp_path / "jsonl")["accepted_rows"] == 4


def test_a_catalogue_with_nothing_accepted_fails_naming_the_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "catalogue"
    folder.mkdir()
    (folder / "a.png").write_bytes(bad_inputs.valid_png(0))
    # A header that names other columns: refused up front, naming them.
    (folder / "other.csv").write_text("id,name,picture\np,t,a.png\n")
    assert c2s.main([str(folder / "other.csv"), "--output", str(tmp_path / "out")]) == 2
    assert "line 1: the header must name the columns product_id, title, image" in capsys.readouterr().err
    # JSON rows that lack the title key: every row rejected, so the conversion fails and writes nothing.
    (folder / "untitled.jsonl").write_text('{"product_id": "p", "name": "t", "image": "a.png"}\n' * 3)
    assert c2s.main([str(folder / "untitled.jsonl"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "no product has two usable images" in error and "3 no_title" in error
    assert "| rejected: no_title | 3 |" in error
    assert not (tmp_path / "out").exists()


def test_a_missing_product_id_has_its_own_reason(tmp_path: Path) -> None:
    rows = [{"title": "no id", "image": "good-0.png"}, {"product_id": " ", "title": "blank id", "image": "good-1.png"}]
    rows.append({"product_id": "p-9", "title": "", "image": "good-2.png"})
    # The processor's text rule: a title of zero-width characters has nothing to read either.
    rows.append({"product_id": "p-10", "title": "\u200b\u200b", "image": "good-3.png"})
    report = c2s.convert(_catalogue(tmp_path, rows), tmp_path / "out")
    assert _rejected(report) == {"no_product_id": 2, "no_title": 2}


@pytest.mark.parametrize("line", list(bad_inputs.MALFORMED_JSONL_LINES))
def test_malformed_jsonl_lines_are_errors_naming_file_and_line(tmp_path: Path, line: str) -> None:
    catalogue = _catalogue(tmp_path, [])
    catalogue.write_text(catalogue.read_text() + "\n" + line + "\n")  # after 4 rows and a blank line: line 6
    with pytest.raises(c2s.CatalogueError, match=bad_inputs.MALFORMED_JSONL_LINES[line]) as error:
        c2s.convert(catalogue, tmp_path / "out")
    assert f"{catalogue}, line 6:" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_csv_rows_with_more_values_than_columns_are_errors_naming_the_line(tmp_path: Path) -> None:
    csv_path = tmp_path / "catalogue.csv"
    csv_path.write_text("product_id,title,image\np-1,Shoe,a.png,,\np-1,Shoe, red,b.png\n")  # trailing empties are fine
    with pytest.raises(c2s.CatalogueError, match=r"line 3: 4 values for 3 columns; quote values that hold ','"):
        c2s.convert(csv_path, tmp_path / "out")


def test_non_utf8_catalogues_are_errors_naming_file_and_line(tmp_path: Path) -> None:
    catalogue = _catalogue(tmp_path, [])
    row = b'{"product_id": "p-2", "title": "' + bad_inputs.LATIN1_TITLE + b'", "image": "good-0.png"}\n'
    catalogue.write_bytes(catalogue.read_bytes() + row)
    with pytest.raises(c2s.CatalogueError, match=r"line 5: not UTF-8 \(byte 0xe9"):
        c2s.convert(catalogue, tmp_path / "out")
    csv_path = catalogue.with_suffix(".csv")
    csv_path.write_bytes(b"product_id,title,image\np-2," + bad_inputs.LATIN1_TITLE + b",good-0.png\n")
    with pytest.raises(c2s.CatalogueError, match="line 2: not UTF-8"):
        c2s.convert(csv_path, tmp_path / "out")


@pytest.mark.parametrize(
    "option",
    [
        ["--test-fraction", "0"],
        ["--test-fraction", "1"],
        ["--test-fraction", "1.5"],
        ["--test-fraction", "-0.2"],
        ["--test-fraction", "nan"],
        ["--image-size", "0"],
        ["--image-size", "-32"],
        ["--seed", "-1"],
    ],
)
def test_out_of_range_options_are_refused_naming_them(
    tmp_path: Path, option: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        c2s.main([str(_catalogue(tmp_path, [])), "--output", str(tmp_path / "out"), *option])
    assert exit_.value.code == 2
    assert option[0] in capsys.readouterr().err
    keyword = {"--test-fraction": "test_fraction", "--image-size": "image_size", "--seed": "seed"}[option[0]]
    with pytest.raises(ValueError, match=keyword):
        c2s.convert(_catalogue(tmp_path, []), tmp_path / "out", **{keyword: float(option[1])})
    assert not (tmp_path / "out").exists()


def test_a_test_fraction_gives_both_splits(tmp_path: Path) -> None:
    report = c2s.convert(_catalogue(tmp_path, []), tmp_path / "out", test_fraction=0.01)
    assert {name: split["products"] for name, split in report["splits"].items()} == {"test": 1, "train": 1}


def test_conflicting_titles_and_categories_are_counted_and_the_first_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    catalogue = _catalogue(tmp_path, [])
    (catalogue.parent / "extra.png").write_bytes(bad_inputs.valid_png(7))
    rows = [json.loads(line) for line in catalogue.read_text().splitlines()]
    rows[0]["category"] = "toys"
    rows[1]["category"] = "games"  # p-0: a second category
    rows.append({"product_id": "p-1", "title": "Another name", "image": "extra.png", "category": "toys"})
    catalogue.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert c2s.main([str(catalogue), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "rejections.json").read_text())
    assert report["conflicts"]["title"] == {"rows": 1, "products": 1, "examples": ["p-1"]}
    assert report["conflicts"]["category"] == {"rows": 1, "products": 1, "examples": ["p-0"]}
    assert "| accepted with another title than the product's first row (products) | 1 (1) |" in capsys.readouterr().out
    by_id = {row["product_id"]: row for row in read_split(tmp_path / "out", "train")}
    assert by_id["p-1"]["title"] == "Thing 1" and len(by_id["p-1"]["images"]) == 3
    assert by_id["p-0"]["category"] == "toys" and by_id["p-1"]["category"] == "toys"


def test_unreadable_images_of_every_kind_are_counted_never_an_abort(tmp_path: Path) -> None:
    (tmp_path / "catalogue").mkdir()
    names = bad_inputs.write_files(tmp_path / "catalogue", bad_inputs.BAD_IMAGE_FILES)
    rows = [{"product_id": "p-0", "title": "Thing 0", "image": Path(path).name} for path in names.values()]
    report = c2s.convert(_catalogue(tmp_path, rows), tmp_path / "out")
    assert _rejected(report) == {"unreadable_image": len(bad_inputs.BAD_IMAGE_FILES)}
    assert report["accepted_rows"] == 4


# ------------------------------------------------------------------------------------------------ outputs
def test_the_converter_refuses_a_non_empty_output_and_replaces_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = _catalogue(tmp_path, [])
    output = tmp_path / "out"
    c2s.convert(catalogue, output, test_fraction=0.5)
    assert all(sf.list_shards(output, split) for split in sf.SPLITS)
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    with pytest.raises(FileExistsError, match="--overwrite"):
        c2s.convert(catalogue, output)
    # A failure half-way through writing the new shards leaves the old output as it was, and nothing beside it.
    monkeypatch.setattr(sf, "write_table_atomic", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        c2s.convert(catalogue, output, overwrite=True)
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["catalogue", "out"]
    monkeypatch.undo()
    # Replaced whole: every product in train now, no test split left over from the first conversion.
    report = c2s.convert(catalogue, output, overwrite=True)
    assert list(report["splits"]) == ["train"] and not sf.list_shards(output, "test")
    assert sf.read_card_metadata(output)["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    assert len(read_split(output, "train")) == 2
    # An output that holds the catalogue would be deleted with it.
    with pytest.raises(ValueError, match="holds the catalogue"):
        c2s.convert(catalogue, tmp_path, overwrite=True)
    assert catalogue.exists()


def test_the_output_folder_helper(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        output_folder.check_output_folder(tmp_path / "file", overwrite=True)
    (tmp_path / "empty").mkdir()
    with output_folder.replacing_output_folder(tmp_path / "empty") as staging:
        (staging / "a").write_text("new")
    assert (tmp_path / "empty" / "a").read_text() == "new"
    # A link as the output: its target is replaced, the link kept.
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with output_folder.replacing_output_folder(tmp_path / "link", overwrite=True) as staging:
        (staging / "b").write_text("newer")
    assert (tmp_path / "link").is_symlink() and [p.name for p in (tmp_path / "link").iterdir()] == ["b"]
    with pytest.raises(KeyboardInterrupt), output_folder.replacing_output_folder(tmp_path / "link", True) as staging:
        (staging / "c").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "link"]


def test_the_demo_builder_refuses_a_non_empty_output_and_replaces_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from helpers import can_build_catalogue

    from modeling_eclip.demo import catalogue as dc

    if not can_build_catalogue():
        pytest.skip("needs Unicode's emoji-test.txt and emoji artwork")
    output = tmp_path / "demo"
    stale = output / "data" / "train-00007-of-00008.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    arguments = ["--output", str(output), "--max-products", "4", "--image-size", "32", "--workers", "1"]
    assert dc.main(arguments) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert stale.read_bytes() == b"stale"

    def fail(index: int) -> dict:
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(dc, "build_product_row", fail)
    with pytest.raises(RuntimeError, match="drawing failed"):
        dc.main([*arguments, "--overwrite"])
    assert [p.name for p in output.rglob("*")] == ["data", stale.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    monkeypatch.undo()
    assert dc.main([*arguments, "--overwrite"]) == 0
    assert [p.name for p in sf.list_shards(output, "train")] == ["train-00000-of-00001.parquet"]
    info = json.loads((output / "dataset_info.json").read_text())
    assert info["splits"]["train"]["shards"] == ["data/train-00000-of-00001.parquet"]


def test_a_shard_writer_never_mixes_its_shards_with_earlier_ones(tmp_path: Path) -> None:
    c2s.convert(_catalogue(tmp_path, []), tmp_path / "out")
    with pytest.raises(FileExistsError, match="already holds train files"):
        sf.ShardWriter(tmp_path / "out", "train")
    assert len(read_split(tmp_path / "out", "train")) == 2


@pytest.mark.parametrize(
    "option",
    [
        ["--seed", "-1"],
        ["--scene-seed", "-2"],
        ["--images-per-source", "0"],
        ["--max-products", "0"],
        ["--image-size", "16"],
    ],
)
def test_the_demo_builder_refuses_out_of_range_options_naming_them(
    tmp_path: Path, option: list[str], capsys: pytest.CaptureFixture
) -> None:
    from modeling_eclip.demo import catalogue as dc

    assert dc.main(["--output", str(tmp_path / "demo"), *option]) == 2
    assert option[0] in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("arguments", [{"seed": -1}, {"max_classes": -1}, {"max_classes": 0}])
def test_the_image_pretraining_set_refuses_out_of_range_options_naming_them(tmp_path: Path, arguments: dict) -> None:
    from modeling_eclip.demo.image_pretraining_set import build_image_pretraining_set

    with pytest.raises(ValueError, match=next(iter(arguments))):
        build_image_pretraining_set(tmp_path / "set", **arguments)
    assert not (tmp_path / "set").exists()
