# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Object-detection transfer (Sec. 4.2.5): `EclipForObjectDetection` and its DETR loss, save/load and the Auto class,
remote code, `post_process_object_detection` and transformers' object-detection pipeline, the catalogue's detection
data and its bad boxes, COCO mAP, and the fine-tuning script with resume, export and the Table 4 (right) command."""

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from bad_inputs import BAD_BOXES_IMAGE_SIZE, BAD_DETR_TARGETS, BAD_PIXEL_BOXES
from helpers import REPO, TINY_IMAGE_SIZE, TINY_NUM_QUERIES, run_without_package, tiny_config, tiny_model
from helpers import tiny_pixel_values as pixels
from PIL import Image

from modeling_eclip import EclipForObjectDetection, EclipImageProcessor, EclipModel
from modeling_eclip.detection import (
    DetectionBatches,
    category_labels,
    coco_map,
    detection_target,
    load_detection_samples,
    parse_detection_arguments,
)
from modeling_eclip.detection.data import BoxError, check_detection_labels
from modeling_eclip.detection.evaluate import main as evaluate_main
from modeling_eclip.detection.finetune import finetune, load_detection_recipe

LABELS = {0: "cookware", 1: "shoes", 2: "toys"}


def detector(seed: int = 0, **overrides) -> EclipForObjectDetection:
    torch.manual_seed(seed)
    return EclipForObjectDetection(tiny_config(num_labels=3, id2label=LABELS, **overrides)).eval()


def target(labels, boxes) -> dict:
    return {
        "class_labels": torch.tensor(labels, dtype=torch.long),
        "boxes": torch.as_tensor(boxes, dtype=torch.float32),
    }


def fix_predictions(model: EclipForObjectDetection, class_bias, box) -> None:
    """Every slot predicts the same class logits (`class_bias`) and the same normalised box (cx, cy, w, h)."""
    with torch.no_grad():
        model.class_labels_classifier.weight.zero_()
        model.class_labels_classifier.bias.copy_(torch.tensor(class_bias))
        last = model.bbox_predictor.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor(box)))


# ----- the model and its loss -----


def test_loss_matches_a_hand_computed_case_of_one_image_and_two_boxes():
    model = detector()
    class_bias = [0.0, 1.0, 2.0, 0.5]  # cookware, shoes, toys, "no object"
    fix_predictions(model, class_bias, [0.5, 0.5, 0.5, 0.5])  # every slot: corners (0.25, 0.25, 0.75, 0.75)
    labels = [target([0, 1], [[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]])]
    output = model(pixel_values=pixels(1), labels=labels)

    # Cross-entropy: two matched slots (cookware, shoes), T-2 slots "no object" at weight eos_coefficient 0.1.
    log_z = math.log(sum(math.exp(b) for b in class_bias))
    nll = [log_z - b for b in class_bias]
    unmatched = TINY_NUM_QUERIES - 2
    loss_ce = (nll[0] + nll[1] + 0.1 * unmatched * nll[3]) / (2 + 0.1 * unmatched)
    # L1 over the two boxes: 0 for the first, |0.5-0.25| + |0.5-0.25| for the second; divided by 2 boxes.
    loss_bbox = (0.0 + 0.5) / 2
    # GIoU: identical boxes give 1; (0.25,0.25,0.75,0.75) vs (0,0,0.5,0.5): IoU 0.0625/0.4375, hull 0.5625.
    giou = 0.0625 / 0.4375 - (0.5625 - 0.4375) / 0.5625
    loss_giou = ((1 - 1.0) + (1 - giou)) / 2
    assert output.loss_dict["loss_ce"].item() == pytest.approx(loss_ce, rel=1e-5)
    assert output.loss_dict["loss_bbox"].item() == pytest.approx(loss_bbox, rel=1e-5)
    assert output.loss_dict["loss_giou"].item() == pytest.approx(loss_giou, rel=1e-5)
    assert output.loss.item() == pytest.approx(loss_ce + 5 * loss_bbox + 2 * loss_giou, rel=1e-5)
    assert output.logits.shape == (1, TINY_NUM_QUERIES, 4) and output.pred_boxes.shape == (1, TINY_NUM_QUERIES, 4)


def test_auxiliary_losses_add_one_term_per_earlier_decoder_block():
    model = detector(auxiliary_loss=True)
    labels = [target([0, 2], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])]
    output = model(pixel_values=pixels(1), labels=labels)
    blocks = model.config.decoder_config.num_hidden_layers
    assert len(output.auxiliary_outputs) == blocks - 1
    assert {f"loss_giou_{i}" for i in range(blocks - 1)} <= set(output.loss_dict)
    main = output.loss_dict["loss_ce"] + 5 * output.loss_dict["loss_bbox"] + 2 * output.loss_dict["loss_giou"]
    assert output.loss.item() > main.item()


def test_an_image_without_objects_trains_every_slot_to_no_object():
    output = detector()(pixel_values=pixels(1), labels=[target([], torch.zeros(0, 4))])
    assert torch.isfinite(output.loss) and output.loss_dict["loss_bbox"].item() == 0.0


def test_a_few_fine_tuning_steps_lower_the_loss():
    model = detector(auxiliary_loss=True).train()
    for parameter in model.text_parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = {
        "pixel_values": pixels(2, seed=3),
        "labels": [
            target([0, 1], [[0.3, 0.3, 0.2, 0.3], [0.7, 0.7, 0.3, 0.2]]),
            target([2], [[0.5, 0.4, 0.6, 0.5]]),
        ],
    }
    losses = []
    for _ in range(12):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.grad is None for p in model.text_parameters())


@pytest.mark.parametrize("name", sorted(BAD_DETR_TARGETS))
def test_bad_labels_are_errors_naming_the_problem(name):
    """The detection collator's check names every problem; the model's forward, which reads no value back (a device
    sync), names those of shape and dtype."""
    labels, boxes, message = BAD_DETR_TARGETS[name]
    bad = {"class_labels": torch.tensor(labels), "boxes": torch.tensor(boxes)}
    match = message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=match):
        check_detection_labels([bad], num_labels=3)
    if name in ("float_labels", "three_numbers"):
        with pytest.raises(ValueError, match=match):
            detector()(pixel_values=pixels(1), labels=[bad])


def test_labels_need_one_target_per_image():
    with pytest.raises(ValueError, match="one dict per image"):
        detector()(pixel_values=pixels(2), labels=[target([0], [[0.5, 0.5, 0.2, 0.2]])])


# ----- loading, saving, Auto classes, remote code -----


def test_from_an_eclip_checkpoint_the_towers_and_decoder_load_and_only_the_heads_are_new(tmp_path):
    eclip = tiny_model(seed=5)
    eclip.save_pretrained(tmp_path)
    model, info = EclipForObjectDetection.from_pretrained(
        tmp_path, num_labels=3, id2label=LABELS, output_loading_info=True
    )
    assert {key.split(".")[0] for key in info["missing_keys"]} == {"class_labels_classifier", "bbox_predictor"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = eclip.state_dict()
    for name, value in model.eclip.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
    assert model.class_labels_classifier.out_features == 4 and model.config.id2label[2] == "toys"
    # The fine-tuned detector still is a whole ECLIP.
    assert isinstance(EclipModel.from_pretrained(tmp_path), EclipModel)


def test_save_and_load_with_the_auto_class_give_the_same_predictions(tmp_path):
    model = detector(seed=1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForObjectDetection"] == "modeling_eclip.EclipForObjectDetection"
    with torch.no_grad():
        expected = model(pixel_values=pixels(2, seed=2))
    for loaded in (
        EclipForObjectDetection.from_pretrained(tmp_path),
        transformers.AutoModelForObjectDetection.from_pretrained(tmp_path),
    ):
        assert isinstance(loaded, EclipForObjectDetection)
        with torch.no_grad():
            output = loaded(pixel_values=pixels(2, seed=2))
        torch.testing.assert_close(output.logits, expected.logits, rtol=0, atol=0)
        torch.testing.assert_close(output.pred_boxes, expected.pred_boxes, rtol=0, atol=0)


def save_detector(directory: Path) -> EclipForObjectDetection:
    """A tiny detector whose every slot predicts "shoes" at (cx, cy, w, h) = (0.25, 0.5, 0.25, 0.5), with its image
    processor, as the fine-tuning export saves them."""
    model = detector(seed=2)
    fix_predictions(model, [0.0, 6.0, 0.0, 0.0], [0.25, 0.5, 0.25, 0.5])
    model.save_pretrained(directory)
    EclipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}).save_pretrained(directory)
    return model


def wide_image() -> Image.Image:
    image = Image.new("RGB", (200, 100), "white")
    image.paste((255, 0, 0), (25, 25, 75, 75))
    return image


def test_post_processing_gives_boxes_on_the_original_non_square_image(tmp_path):
    model = save_detector(tmp_path)
    image_processor = EclipImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        outputs = model(**image_processor(images=[wide_image()], return_tensors="pt"))
    (result,) = image_processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(100, 200)])
    assert result["labels"].tolist() == [1] * TINY_NUM_QUERIES
    expected = torch.tensor([25.0, 25.0, 75.0, 75.0]).expand(TINY_NUM_QUERIES, 4)
    torch.testing.assert_close(result["boxes"], expected, atol=1e-3, rtol=0)
    (none,) = image_processor.post_process_object_detection(outputs, threshold=0.999, target_sizes=[(100, 200)])
    assert none["boxes"].shape == (0, 4)


def test_object_detection_pipeline_returns_boxes_in_the_original_pixels(tmp_path):
    save_detector(tmp_path)
    detections = transformers.pipeline("object-detection", model=str(tmp_path), trust_remote_code=True)(
        wide_image(), threshold=0.5
    )
    assert len(detections) == TINY_NUM_QUERIES
    for detection in detections:
        assert set(detection) == {"score", "label", "box"} and detection["label"] == "shoes"
        assert detection["score"] > 0.9
        box = detection["box"]
        assert set(box) == {"xmin", "ymin", "xmax", "ymax"}
        # x scales by the width (200), y by the height (100); the pipeline truncates to ints.
        for key, value in {"xmin": 25, "ymin": 25, "xmax": 75, "ymax": 75}.items():
            assert abs(box[key] - value) <= 1, detections


REMOTE_DETECTION_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    import transformers
    from PIL import Image

    directory = sys.argv[1]
    model = transformers.AutoModelForObjectDetection.from_pretrained(directory, trust_remote_code=True)
    assert type(model).__name__ == "EclipForObjectDetection", type(model)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    expected = torch.load(f"{directory}/expected.pt")
    with torch.no_grad():
        output = model(pixel_values=expected["pixel_values"])
    torch.testing.assert_close(output.pred_boxes, expected["pred_boxes"], rtol=0, atol=1e-6)
    image = Image.new("RGB", (200, 100), "white")
    detector = transformers.pipeline("object-detection", model=directory, trust_remote_code=True)
    assert type(detector).__name__ == "EclipObjectDetectionPipeline", type(detector)
    detections = detector(image, threshold=0.5)
    assert detections and detections[0]["label"] == "shoes", detections
    assert abs(detections[0]["box"]["xmax"] - 75) <= 1, detections
    # The package's decoder, from the checkpoint's own code: transparency on white.
    transparent = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    assert detector(transparent, threshold=0.0) == detector(image, threshold=0.0)
    """
)


@pytest.mark.slow
def test_remote_code_detects_without_the_package(tmp_path):
    directory = tmp_path / "detector"
    model = save_detector(directory)
    with torch.no_grad():
        pred_boxes = model(pixel_values=pixels(1, seed=7)).pred_boxes
    torch.save({"pixel_values": pixels(1, seed=7), "pred_boxes": pred_boxes}, directory / "expected.pt")
    run_without_package(REMOTE_DETECTION_SCRIPT, directory, tmp_path)


# ----- data: targets, bad boxes, the catalogue -----


def test_detection_target_normalises_pixel_corners_to_center_format():
    result = detection_target([[0, 0, 32, 24], [8, 6, 16, 18]], [2, 0], width=32, height=24, num_labels=3)
    assert result["class_labels"].tolist() == [2, 0]
    torch.testing.assert_close(result["boxes"], torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.375, 0.5, 0.25, 0.5]]))


@pytest.mark.parametrize("name", sorted(BAD_PIXEL_BOXES))
def test_bad_pixel_boxes_are_errors_naming_their_reason(name):
    boxes, reason = BAD_PIXEL_BOXES[name]
    width, height = BAD_BOXES_IMAGE_SIZE
    with pytest.raises(BoxError) as error:
        detection_target(boxes, [0] * len(boxes), width, height, num_labels=3)
    assert error.value.reason == reason


def test_an_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="num_labels=3"):
        detection_target([[1, 1, 5, 5]], [7], 32, 24, num_labels=3)


def test_batches_resume_exactly_where_they_stopped(demo_catalogue):
    labels = category_labels(demo_catalogue)
    samples, _ = load_detection_samples(demo_catalogue, "train", labels)
    processor = EclipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    batches = DetectionBatches(samples, processor, len(labels), batch_size=4, seed=3)
    iterator = iter(batches)
    next(iterator), next(iterator)
    state = batches.state_dict()
    expected = next(iterator)
    restored = DetectionBatches(samples, processor, len(labels), batch_size=4, seed=3)
    restored.load_state_dict(state)
    again = next(iter(restored))
    assert torch.equal(again["pixel_values"], expected["pixel_values"])
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(again["labels"], expected["labels"]))


# ----- mAP -----


def test_coco_map_at_the_paper_thresholds():
    truth = [{"image_id": 0, "width": 100, "height": 100, "boxes": [[10, 10, 50, 50]], "labels": [1]}]
    perfect = [{"image_id": 0, "boxes": [[10, 10, 50, 50]], "labels": [1], "scores": [0.9]}]
    assert coco_map(truth, perfect, num_labels=3)["map@0.5"] == pytest.approx(1.0)
    # Shifted by 15 px: IoU = 25*40 / (2*1600 - 25*40) = 0.3125, found at 0.3 and missed at 0.5 and above.
    shifted = [{"image_id": 0, "boxes": [[25, 10, 65, 50]], "labels": [1], "scores": [0.9]}]
    metrics = coco_map(truth, shifted, num_labels=3)
    assert metrics["map@0.3"] == pytest.approx(1.0) and metrics["map@0.5"] == 0.0 and metrics["map@[.5:.95]"] == 0.0
    wrong_class = [{"image_id": 0, "boxes": [[10, 10, 50, 50]], "labels": [2], "scores": [0.9]}]
    metrics = coco_map(truth, wrong_class, num_labels=3)
    assert metrics["map@0.3"] == 0.0 and metrics["any_class_map@0.5"] == pytest.approx(1.0)
    assert coco_map(truth, [], num_labels=3)["map@0.5"] == 0.0


# ----- the fine-tuning script, resume, export and the Table 4 command -----


@pytest.fixture(scope="module")
def eclip_export(tmp_path_factory) -> Path:
    """A tiny ECLIP saved with its image processor, as a pretraining export is."""
    directory = tmp_path_factory.mktemp("eclip")
    tiny_model(seed=0).save_pretrained(directory)
    EclipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}).save_pretrained(directory)
    return directory


def run_arguments(model: Path, data: Path, output: Path, **overrides) -> list[str]:
    values = {
        "model_name_or_path": model,
        "data_dir": data,
        "output_dir": output,
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 2,
        "eval_batch_size": 16,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def test_shipped_detection_recipes_share_steps_batch_and_seed():
    # By path: an editable install elsewhere may map modeling_eclip.presets to another checkout's configuration/.
    eclip = load_detection_recipe(REPO / "configuration" / "finetune-detection-demo.yaml")
    itc_only = load_detection_recipe(REPO / "configuration" / "finetune-detection-demo-itc-only.yaml")
    assert eclip["model_name_or_path"] != itc_only["model_name_or_path"]
    assert eclip["output_dir"] != itc_only["output_dir"]
    for key in ("max_steps", "per_device_train_batch_size", "seed", "learning_rate", "data_dir"):
        assert eclip[key] == itc_only[key], key
    recipe = str(REPO / "configuration" / "finetune-detection-demo.yaml")
    args = parse_detection_arguments(["--config", recipe, "--max_steps", "7"])
    assert args.max_steps == 7 and args.mixed_precision is None


def test_finetuning_checkpoints_resumes_exports_and_the_map_command_reads_the_export(
    demo_catalogue, eclip_export, tmp_path
):
    output = tmp_path / "run"
    first = finetune(
        parse_detection_arguments(run_arguments(eclip_export, demo_catalogue, output, evaluate_at_end=False))
    )
    assert first.step == 4 and (output / "checkpoint-4").is_dir()
    # The pretraining checkpoint format: the schedule as JSON, nothing that runs code when loaded.
    saved = {p.name for p in (output / "checkpoint-4").iterdir()}
    assert "scheduler_state.json" in saved and not {name for name in saved if name.endswith((".pkl", "scheduler.bin"))}
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4]
    assert all(math.isfinite(entry["loss"]) for entry in logged)

    # A second run into the same folder neither mixes with this one nor discards it unasked (as pretraining).
    with pytest.raises(FileExistsError, match="not empty.*--resume latest.*--overwrite_output_dir"):
        finetune(parse_detection_arguments(run_arguments(eclip_export, demo_catalogue, output)))
    resumed = finetune(
        parse_detection_arguments(run_arguments(eclip_export, demo_catalogue, output, max_steps=6, resume="latest"))
    )
    assert resumed.step == 6
    steps = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # continued after step 4, not from the start
    export = output / "model"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_eclip.py"} <= {
        p.name for p in export.iterdir()
    }
    assert not (export / "tokenizer.json").exists()  # the object-detection pipeline would take it for LayoutLM
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"]["0"] == category_labels(demo_catalogue)[0]
    card = (export / "README.md").read_text()
    assert "pipeline_tag: object-detection" in card and "mAP@0.5" in card
    results = json.loads((output / "results.json").read_text())
    assert set(results["metrics"]) >= {"map@0.3", "map@0.5", "map@[.5:.95]", "num_images", "num_objects"}

    rows = evaluate_main(
        [
            "--model",
            str(export),
            "--compare",
            str(export),
            "--data",
            str(demo_catalogue),
            "--output",
            str(tmp_path / "t.json"),
        ]
    )
    assert rows["run"]["map@0.5"] == pytest.approx(results["metrics"]["map@0.5"])
    assert json.loads((tmp_path / "t.json").read_text())["run"]["num_objects"] == results["metrics"]["num_objects"]
    detections = transformers.pipeline("object-detection", model=str(export), trust_remote_code=True)(
        wide_image(), threshold=0.0
    )
    assert detections and {"score", "label", "box"} == set(detections[0])

    # --overwrite_output_dir starts over: the earlier run's checkpoints, metrics and export go, other files stay.
    (output / "notes.txt").write_text("mine")
    flags = run_arguments(eclip_export, demo_catalogue, output, max_steps=2, evaluate_at_end=False)
    finetune(parse_detection_arguments([*flags, "--overwrite_output_dir", "True"]))
    assert [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (output / "notes.txt").read_text() == "mine"


def test_bad_recipe_values_fail_before_any_compute(eclip_export, demo_catalogue, tmp_path):
    with pytest.raises(ValueError, match="max_steps"):
        finetune(parse_detection_arguments(run_arguments(eclip_export, demo_catalogue, tmp_path, max_steps=0)))
    with pytest.raises(FileNotFoundError, match="model_name_or_path"):
        finetune(parse_detection_arguments(run_arguments(tmp_path / "none", demo_catalogue, tmp_path)))
    with pytest.raises(ValueError, match="unknown keys"):
        (tmp_path / "r.yaml").write_text("max_step: 3\n")
        load_detection_recipe(tmp_path / "r.yaml")


def test_detect_example_draws_the_boxes_on_the_image(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("detect_example", REPO / "examples" / "detect.py")
    detect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect)
    save_detector(tmp_path / "detector")
    wide_image().save(tmp_path / "photo.png")
    output = tmp_path / "drawn.png"
    detections = detect.main(
        [str(tmp_path / "photo.png"), "--model", str(tmp_path / "detector"), "--output", str(output)]
    )
    assert len(detections) == TINY_NUM_QUERIES and detections[0]["label"] == "shoes"
    drawn = Image.open(output)
    assert drawn.size == (200, 100)
    # The box outline (first colour) is drawn at x = 25 on the white background.
    assert drawn.convert("RGB").getpixel((25, 50)) != (255, 255, 255)
