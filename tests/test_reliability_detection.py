# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the detection transfer (issue 28): labels built by hand, bad images and rows of a catalogue (skipped
and counted as pretraining skips them), a fine-tuning that keeps its export when the evaluation fails, and the
object-detection pipeline decoding as the package decodes."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers
from bad_inputs import (
    BAD_BOXES_IMAGE_SIZE,
    BAD_PIXEL_BOXES,
    WHITE,
    exif_rotated_jpeg,
    png_bomb,
    truncated_jpeg,
)
from helpers import TINY_IMAGE_SIZE, tiny_config, tiny_model
from helpers import tiny_pixel_values as pixels
from PIL import Image
from test_detection import run_arguments
from transformers import BatchFeature

from modeling_eclip import EclipForObjectDetection, EclipImageProcessor
from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.shard_format import CATALOGUE_FEATURES, IMAGE_KINDS
from modeling_eclip.data.source import read_split
from modeling_eclip.detection import (
    DetectionBatches,
    category_labels,
    evaluate_checkpoint,
    finetune,
    load_detection_samples,
    parse_detection_arguments,
)
from modeling_eclip.detection.data import sample_image
from modeling_eclip.detection.evaluate import main as evaluate_main
from modeling_eclip.pipeline_eclip import OBJECT_DETECTION_PIPELINE, EclipObjectDetectionPipeline
from modeling_eclip.processing_eclip import to_rgb_image


def _detector(**overrides) -> EclipForObjectDetection:
    torch.manual_seed(0)
    return EclipForObjectDetection(tiny_config(num_labels=3, **overrides)).eval()


# ------------------------------------------------------------------------------------------- labels by hand
@pytest.mark.parametrize(
    ("target", "named"),
    [
        ({"class_labels": torch.tensor([0]), "boxes": [[0.5, 0.5, 0.2, 0.2]]}, r'labels\[0\]\["boxes"\]'),
        ({"class_labels": [0], "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, r'labels\[0\]\["class_labels"\]'),
        ({"class_labels": torch.tensor([0]), "boxes": None}, r'labels\[0\]\["boxes"\]'),
    ],
    ids=["boxes_as_a_list", "class_labels_as_a_list", "boxes_none"],
)
def test_labels_that_are_not_tensors_are_a_type_error_naming_the_entry(target: dict, named: str) -> None:
    # DETR in transformers takes tensors only (its image processor makes them); so does this model, and says so.
    with pytest.raises(TypeError, match=named + r".*torch\.Tensor"):
        _detector()(pixel_values=pixels(1), labels=[target])


def test_integer_boxes_are_refused_naming_the_dtype() -> None:
    target = {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[1, 1, 2, 2]])}
    with pytest.raises(ValueError, match=r"labels\[0\]: boxes must be floating point.*torch\.int64"):
        _detector()(pixel_values=pixels(1), labels=[target])


def test_labels_from_an_image_processor_are_taken() -> None:
    # DETR's image processor returns each image's labels as a BatchFeature (a mapping, not a dict).
    target = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    model = _detector()
    expected = model(pixel_values=pixels(1), labels=[target]).loss
    output = model(pixel_values=pixels(1), labels=[BatchFeature(target)]).loss
    torch.testing.assert_close(output, expected)


# ------------------------------------------------------------------------------------------- the catalogue
IMAGE_SIZE = (32, 24)  # width, height of the readable images below
GOOD_BOX = [2.0, 2.0, 12.0, 10.0]


def _png(size: tuple[int, int] = IMAGE_SIZE, colour: tuple[int, ...] = (255, 255, 255), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(data: bytes, boxes: list | None = None, ids: list | None = None, kind: str = "customer") -> dict:
    return {
        "image": data,
        "source": "s",
        "kind": kind,
        "boxes": [GOOD_BOX] if boxes is None else boxes,
        "box_product_ids": ids,
    }


def write_catalogue(root: Path, rows: list[dict], split: str = "train") -> Path:
    """Rows as a foreign catalogue may hold them (boxes of any length, box ids not matching the boxes, no category):
    the shard writer refuses such rows, so they are written with `datasets` directly. An image's `box_product_ids`
    default to its product's id once per box."""
    features = CATALOGUE_FEATURES.copy()
    features["images"].feature["boxes"] = datasets.List(datasets.List(datasets.Value("float32")))
    encoded = []
    for row in rows:
        images = [
            {
                **image,
                "image": {"bytes": image["image"], "path": None},
                "kind": IMAGE_KINDS.index(image["kind"]),
                "box_product_ids": (
                    [row["product_id"]] * len(image["boxes"])
                    if image["box_product_ids"] is None
                    else image["box_product_ids"]
                ),
            }
            for image in row["images"]
        ]
        encoded.append({**row, "images": images})
    (root / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(encoded, features=features).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def _product(product_id: str, category: str | None, images: list[dict]) -> dict:
    return {"product_id": product_id, "title": f"title of {product_id}", "category": category, "images": images}


def test_catalogue_conversion_skips_and_counts_every_bad_image(tmp_path: Path) -> None:
    width, height = BAD_BOXES_IMAGE_SIZE
    good = [[2.0, 2.0, 12.0, 10.0]]
    wide = [14.0, 2.0, 30.0, 20.0]
    rows = [
        _product(
            "p0",
            "cookware",
            [
                _image(_png((width, height)), good, kind="catalog"),  # not a detection kind: left out, not counted
                _image(_png((width, height)), [*good, wide], ["p0", "p1"]),
                _image(_png((width, height)), [*good, wide], ["p0", "unlisted"], kind="ad"),
                *[_image(_png((width, height)), boxes, ["p0"] * len(boxes)) for boxes, _ in BAD_PIXEL_BOXES.values()],
            ],
        ),
        _product("p1", "shoes", [_image(_png((width, height)), good)]),
    ]
    data = write_catalogue(tmp_path, rows)
    labels = category_labels(data)
    assert labels == ["cookware", "shoes"]
    samples, skipped = load_detection_samples(data, "train", labels)
    assert [s.labels for s in samples] == [[0, 1], [1]]
    expected = Counter({"unknown_product": 1})
    expected.update(reason for _, reason in BAD_PIXEL_BOXES.values())
    assert skipped == expected


def _bad_rows() -> list[dict]:
    """Every kind of image a detection split skips, around two good ones (p0 image 0, p1 image 0)."""
    return [
        _product(
            "p0",
            "cookware",
            [
                _image(_png()),
                _image(truncated_jpeg()),
                _image(b"this is not an image", kind="ad"),
                _image(png_bomb()),
                _image(_png(), [GOOD_BOX, GOOD_BOX, GOOD_BOX], ["p0"]),  # 3 boxes, 1 product id
                _image(_png(), [GOOD_BOX, [14.0, 2.0, 30.0, 20.0]], ["p0", "p2"]),  # p2 has no category
            ],
        ),
        _product("p1", "shoes", [_image(_png())]),
        _product("p2", None, [_image(_png())]),
        _product("p3", " ", [_image(_png())]),  # a blank category is none
    ]


def test_bad_images_and_rows_are_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Pretraining skips and counts unreadable images; detection too, and images whose boxes cannot be labelled."""
    data = write_catalogue(tmp_path / "catalogue", _bad_rows())
    labels = category_labels(data)  # was TypeError: '<' not supported between 'NoneType' and 'str'
    assert labels == ["cookware", "shoes"]
    with caplog.at_level(logging.WARNING, logger="modeling_eclip.detection.data"):
        samples, skipped = load_detection_samples(data, "train", labels)
    assert [(s.product_id, s.labels) for s in samples] == [("p0", [0]), ("p1", [1])]
    assert skipped == {"unreadable_image": 3, "box_id_mismatch": 1, "no_category": 3}
    log = caplog.text
    assert "skipped 7 of 9 boxed images" in log and "split 'train'" in log
    # The first few are named: product, image and why.
    assert "p0 image 1" in log and "Truncated" in log
    assert "p0 image 4: 3 boxes but 1 box_product_ids" in log
    batch = next(iter(DetectionBatches(samples, _image_processor(), len(labels), batch_size=2, seed=0)))
    assert batch["pixel_values"].shape[0] == 2


def test_a_position_saved_on_other_training_images_is_refused(tmp_path: Path) -> None:
    # An image that became unreadable (or a changed catalogue) between the runs would silently change every batch.
    data = write_catalogue(tmp_path, _bad_rows())
    samples, _ = load_detection_samples(data, "train", category_labels(data))
    saved = DetectionBatches(samples, _image_processor(), 2, batch_size=1, seed=0)
    state = saved.state_dict()
    DetectionBatches(samples, _image_processor(), 2, batch_size=1, seed=0).load_state_dict(state)
    changed = DetectionBatches(samples[:1], _image_processor(), 2, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="other training images .*2 images.*1 now"):
        changed.load_state_dict(state)


def test_a_category_unseen_in_training_is_skipped_and_counted_at_evaluation(tmp_path: Path) -> None:
    data = write_catalogue(
        tmp_path, [_product("p0", "cookware", [_image(_png())]), _product("p1", "toys", [_image(_png())])]
    )
    samples, skipped = load_detection_samples(data, "train", ["cookware", "shoes"])
    assert [s.product_id for s in samples] == ["p0"] and skipped == {"unknown_category": 1}


def test_images_are_decoded_by_the_package_decoder(tmp_path: Path) -> None:
    """Transparency on white, EXIF orientation applied (boxes are on the upright image, as evaluation reads them)."""
    upright = [2.0, 2.0, 18.0, 38.0]  # fits the upright 20 x 40 image, not the stored 40 x 20 one
    rows = [
        _product("p0", "cookware", [_image(_png(mode="RGBA", colour=(0, 0, 0, 0)))]),
        _product("p1", "shoes", [_image(exif_rotated_jpeg(), [upright])]),
    ]
    data = write_catalogue(tmp_path, rows)
    samples, skipped = load_detection_samples(data, "train", category_labels(data))
    assert not skipped and [(s.width, s.height) for s in samples] == [IMAGE_SIZE, (20, 40)]
    assert sample_image(samples[0]).getpixel((0, 0)) == WHITE
    assert sample_image(samples[1]).size == (20, 40)


def test_a_split_with_no_usable_image_is_an_error_naming_it(tmp_path: Path) -> None:
    data = write_catalogue(tmp_path, [_product("p0", "cookware", [_image(truncated_jpeg())])], split="test")
    with pytest.raises(ValueError, match=r"split 'test' of .* has no usable boxed image.*unreadable_image"):
        evaluate_checkpoint(_saved_detector(tmp_path / "detector", ["cookware"]), data, "test")


def _image_processor() -> EclipImageProcessor:
    return EclipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


def _saved_detector(directory: Path, labels: list[str], seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = EclipForObjectDetection(tiny_config(num_labels=len(labels), id2label=dict(enumerate(labels))))
    model.save_pretrained(directory)
    _image_processor().save_pretrained(directory)
    return directory


# ------------------------------------------------------------------------------------------- fine-tuning
# The module (the package exports its `finetune` function under the same name).
detection_finetune = importlib.import_module("modeling_eclip.detection.finetune")


@pytest.fixture(scope="module")
def eclip_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ECLIP saved with its image processor, as a pretraining export is."""
    directory = tmp_path_factory.mktemp("eclip")
    tiny_model(seed=0).save_pretrained(directory)
    _image_processor().save_pretrained(directory)
    return directory


def _copy_catalogue(demo_catalogue: Path, root: Path, test_rows: list[dict] | None) -> Path:
    """The demo catalogue's train split, with `test_rows` as its test split (None: no test split)."""
    splits = {"train": read_split(demo_catalogue, "train"), "test": test_rows}
    for split, rows in splits.items():
        if rows is not None:
            with sf.ShardWriter(root, split) as writer:
                for row in rows:
                    writer.write(row)
    return root


def _unreadable_test_rows(demo_catalogue: Path) -> list[dict]:
    """The demo catalogue's test products with every image truncated."""
    rows = read_split(demo_catalogue, "test")
    for row in rows:
        row["images"] = [{**image, "image": truncated_jpeg()} for image in row["images"]]
    return rows


def _never_built(*args, **kwargs) -> None:
    pytest.fail("the model was built before the data was checked")


@pytest.mark.parametrize(
    ("test_split", "pycocotools", "error", "message"),
    [
        ("missing", True, FileNotFoundError, r"eval_split 'test'.*no such split.*--evaluate_at_end false"),
        (
            "unreadable",
            True,
            ValueError,
            r"split 'test' of .* no usable boxed image \(skipped: unreadable_image \d+\).*--evaluate_at_end false",
        ),
        ("demo", False, ImportError, r"pycocotools.*\[eval\].*--evaluate_at_end false"),
    ],
    ids=["no_eval_split", "no_usable_eval_image", "no_pycocotools"],
)
def test_an_evaluation_that_cannot_run_is_refused_before_the_model_is_built(
    demo_catalogue: Path,
    eclip_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    test_split: str,
    pycocotools: bool,
    error: type[Exception],
    message: str,
) -> None:
    test_rows = {"missing": None, "unreadable": _unreadable_test_rows(demo_catalogue)}.get(test_split)
    data = demo_catalogue if test_split == "demo" else _copy_catalogue(demo_catalogue, tmp_path / "data", test_rows)
    if not pycocotools:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else find_spec(name, *a)
        )
    monkeypatch.setattr(detection_finetune.EclipForObjectDetection, "from_pretrained", _never_built)
    with pytest.raises(error, match=message):
        finetune(parse_detection_arguments(run_arguments(eclip_export, data, tmp_path / "run")))


def test_a_run_refused_for_its_data_leaves_the_earlier_run_in_place(
    demo_catalogue: Path, eclip_export: Path, tmp_path: Path
) -> None:
    output = tmp_path / "run"
    (output / "checkpoint-2").mkdir(parents=True)
    (output / "metrics.jsonl").write_text('{"step": 2}\n')
    data = _copy_catalogue(demo_catalogue, tmp_path / "catalogue", _unreadable_test_rows(demo_catalogue))
    flags = [*run_arguments(eclip_export, data, output), "--overwrite_output_dir", "True"]
    with pytest.raises(ValueError, match="split 'test' .* no usable boxed image"):
        finetune(parse_detection_arguments(flags))
    assert (output / "checkpoint-2").is_dir() and (output / "metrics.jsonl").is_file()


def test_a_truncated_test_image_is_skipped_and_counted_and_the_run_exports(
    demo_catalogue: Path, eclip_export: Path, tmp_path: Path
) -> None:
    rows = read_split(demo_catalogue, "test")
    customer = next(i for i, image in enumerate(rows[0]["images"]) if image["kind"] == "customer")
    rows[0]["images"][customer]["image"] = truncated_jpeg()
    data = _copy_catalogue(demo_catalogue, tmp_path / "catalogue", rows)
    output = tmp_path / "run"
    result = finetune(parse_detection_arguments(run_arguments(eclip_export, data, output, max_steps=2)))
    assert result.summary["skipped_eval_images"] == {"unreadable_image": 1}
    assert result.metrics["num_images"] > 0 and (output / "model" / "model.safetensors").is_file()
    saved = json.loads((output / "results.json").read_text())
    assert saved["summary"]["skipped_eval_images"] == {"unreadable_image": 1}
    assert "unreadable_image" in (output / "model" / "README.md").read_text()


def test_the_export_is_written_before_a_failing_evaluation(
    demo_catalogue: Path, eclip_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_evaluation(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(detection_finetune, "evaluate_detection", failing_evaluation)
    output = tmp_path / "run"
    with pytest.raises(
        RuntimeError, match=r"evaluation on split 'test' failed .*disk gone.*exported to .*checkpoint-2"
    ):
        finetune(parse_detection_arguments(run_arguments(eclip_export, demo_catalogue, output, max_steps=2)))
    export = output / "model"
    assert (export / "model.safetensors").is_file() and (export / "preprocessor_config.json").is_file()
    assert "The evaluation failed (OSError: disk gone)" in (export / "README.md").read_text()
    saved = json.loads((output / "results.json").read_text())
    assert saved["summary"]["evaluation_error"] == "OSError: disk gone" and saved["metrics"] == {}


# ------------------------------------------------------------------------------------------- the pipeline
def _sixteen_bit_png() -> bytes:
    """A 16-bit grey gradient: `load_image` clips every level above 255 to white, the package scales by 65535."""
    levels = np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG")
    return buffer.getvalue()


def _rgba_png() -> bytes:
    """A red square on transparent black: on white for the package, on black for `load_image`."""
    image = Image.new("RGBA", (48, 40), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (10, 8, 30, 28))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("make", [_rgba_png, _sixteen_bit_png], ids=["rgba", "16_bit"])
def test_the_object_detection_pipeline_decodes_files_with_the_package_decoder(tmp_path: Path, make) -> None:
    directory = _saved_detector(tmp_path / "detector", ["cookware", "shoes", "toys"], seed=3)
    path = tmp_path / "photo.png"
    path.write_bytes(make())
    detector = transformers.pipeline("object-detection", model=str(directory), trust_remote_code=True)
    assert type(detector).__name__ == "EclipObjectDetectionPipeline"
    found = detector(str(path), threshold=0.0)
    # The same image through the package's decoder, then transformers' own pipeline on the decoded image.
    model = EclipForObjectDetection.from_pretrained(directory)
    stock = transformers.pipeline("object-detection", model=model, image_processor=_image_processor())
    assert found == stock(to_rgb_image(str(path)), threshold=0.0)
    # What the stock decoder gives differs: the test can tell the two decoders apart.
    assert found != stock(str(path), threshold=0.0)


def test_a_detection_checkpoint_names_its_pipeline_and_a_model_in_memory_can_use_it(tmp_path: Path) -> None:
    directory = _saved_detector(tmp_path / "detector", ["cookware", "shoes"])
    config = json.loads((directory / "config.json").read_text())
    assert config["custom_pipelines"] == {"object-detection": OBJECT_DETECTION_PIPELINE}
    assert (directory / "pipeline_eclip.py").is_file()
    # Without trust_remote_code=True transformers refuses a checkpoint that names its own pipeline, and says why.
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        transformers.pipeline("object-detection", model=str(directory))
    model = EclipForObjectDetection.from_pretrained(directory)
    detector = transformers.pipeline(
        "object-detection", model=model, image_processor=_image_processor(), pipeline_class=EclipObjectDetectionPipeline
    )
    transparent = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert detector(transparent, threshold=0.0) == detector(Image.new("RGB", (20, 20), WHITE), threshold=0.0)
    with pytest.raises(ValueError, match=r"Cannot decode image \(.*missing\.png\)"):
        detector(str(tmp_path / "missing.png"))


# ------------------------------------------------------------------------------------------- the mAP command
def test_evaluating_a_checkpoint_without_detection_heads_is_an_error_naming_it(
    demo_catalogue: Path, eclip_export: Path
) -> None:
    # A pretraining export would load with new, random heads and default labels: a meaningless mAP.
    with pytest.raises(ValueError, match=r"has no detection heads .*finetune_detection\.py"):
        evaluate_checkpoint(eclip_export, demo_catalogue, "test")


@pytest.mark.parametrize("batch_size", ["0", "-2"])
def test_the_map_command_refuses_a_batch_size_below_one(tmp_path: Path, batch_size: str) -> None:
    directory = _saved_detector(tmp_path / "detector", ["cookware"])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate_main(["--model", str(directory), "--data", str(tmp_path), "--batch_size", batch_size])


def test_the_map_command_names_a_data_folder_without_the_split(tmp_path: Path, demo_catalogue: Path) -> None:
    directory = _saved_detector(tmp_path / "detector", ["cookware"])
    with pytest.raises(FileNotFoundError, match=r"--data .* has no 'validation' split .*--split"):
        evaluate_main(["--model", str(directory), "--data", str(demo_catalogue), "--split", "validation"])
    with pytest.raises(FileNotFoundError, match=r"--data .* has no 'test' split"):
        evaluate_main(["--model", str(directory), "--data", str(directory)])  # a model folder, not a catalogue


# ------------------------------------------------------------------------------------------- examples/detect.py
@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "nan"], "--threshold"),
        (["--output", "drawn.unknown"], "--output"),
    ],
    ids=["threshold_above_one", "threshold_nan", "unknown_output_format"],
)
def test_the_detect_example_refuses_bad_flags_before_loading_anything(
    load_example, capsys: pytest.CaptureFixture, flags: list[str], named: str
) -> None:
    detect = load_example("detect")
    with pytest.raises(SystemExit):
        detect.main(["photo.png", "--model", "no-such-model", *flags])
    assert named in capsys.readouterr().err
