# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The image-tower pretraining set (non-product emoji, `data/image_pretraining_set.py`) and the tower pretraining
(`training/image_tower.py`): disjoint from every demo product, a plain `datasets` dataset, and a checkpoint that
`EclipModel.from_vision_text_pretrained` loads."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from bad_inputs import truncated_jpeg
from helpers import MINILM_DIR
from PIL import Image
from safetensors.torch import load_file

from modeling_eclip import EclipModel
from modeling_eclip.demo.image_pretraining_set import build_image_pretraining_set, image_pretraining_classes
from modeling_eclip.demo.images import discover_sources
from modeling_eclip.demo.products import find_emoji_test, parse_emoji_test, read_emoji_test
from modeling_eclip.training.image_tower import ImageTowerArguments, pretrain_image_tower

needs_artwork = pytest.mark.skipif(
    find_emoji_test() is None or not discover_sources(), reason="needs emoji-test.txt and emoji artwork"
)
TINY_SET = {"image_size": 32, "scenes_per_source": 3, "validation_scenes": 1, "max_classes": 6, "workers": 1}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory):
    if find_emoji_test() is None or not discover_sources():
        pytest.skip("needs emoji-test.txt and emoji artwork")
    output = tmp_path_factory.mktemp("tower") / "set"
    build_image_pretraining_set(output, **TINY_SET)
    return output


@pytest.mark.skipif(find_emoji_test() is None, reason="needs emoji-test.txt")
def test_no_demo_product_of_any_split_is_a_class():
    products = parse_emoji_test(find_emoji_test())
    product_code_points = {ord(product.emoji.replace("\ufe0f", "")) for product in products}
    classes = image_pretraining_classes(find_emoji_test())
    class_code_points = {entry.code_point for entry in classes}
    assert len(products) > 300 and len(classes) > 700
    assert not product_code_points & class_code_points
    # Nothing of a product subgroup either (not even its non-products such as clock faces), and no skin-tone swatch.
    product_subgroups = {product.subgroup for product in products}
    assert not {entry.subgroup for entry in classes} & product_subgroups
    assert all(entry.group != "Component" for entry in classes)
    # Every entry of emoji-test.txt is either a possible product subgroup member or a class candidate, never both.
    entries = read_emoji_test(find_emoji_test())
    assert {e.code_point for e in entries} >= class_code_points | product_code_points


@needs_artwork
def test_the_set_is_a_plain_datasets_image_classification_dataset(tiny_set):
    info = json.loads((tiny_set / "build_info.json").read_text())
    products = {f"U+{ord(p.emoji.replace(chr(0xFE0F), '')):04X}" for p in parse_emoji_test(find_emoji_test())}
    assert not {c["code_point"] for c in info["classes"]} & products
    data = datasets.load_dataset(str(tiny_set))
    assert set(data) == {"train", "validation"}
    assert isinstance(data["train"].features["image"], datasets.Image)
    assert data["train"].features["label"].names == [c["name"] for c in info["classes"]]
    sources = len(info["sources"])
    assert len(data["train"]) == 6 * 2 * sources and len(data["validation"]) == 6 * 1 * sources
    image = data["validation"][0]["image"]
    assert image.size == (32, 32) and image.mode == "RGB"
    streamed = next(iter(datasets.load_dataset(str(tiny_set), split="train", streaming=True)))
    assert streamed["image"].size == (32, 32)
    card = (tiny_set / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["task_categories"] == ["image-classification"]
    assert {c["split"] for c in metadata["configs"][0]["data_files"]} == {"train", "validation"}
    assert (tiny_set / "LICENSE-DATA.md").is_file()


@needs_artwork
def test_the_set_builder_refuses_a_non_empty_output_unless_asked(tmp_path):
    output = tmp_path / "set"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        build_image_pretraining_set(output, **TINY_SET)
    assert (output / "precious.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="validation_scenes"):
        build_image_pretraining_set(tmp_path / "other", **{**TINY_SET, "validation_scenes": 3})
    build_image_pretraining_set(output, overwrite=True, **{**TINY_SET, "max_classes": 2})
    assert not (output / "precious.txt").exists()
    assert json.loads((output / "build_info.json").read_text())["num_classes"] == 2


def _tiny_preset(tmp_path):
    preset = {
        "model_type": "eclip",
        "projection_dim": 16,
        "vision_config": {
            "model_type": "vit",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 8,
        },
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(preset))
    return path


@needs_artwork
def test_the_tower_trains_saves_a_vit_checkpoint_and_loads_as_eclips_image_tower(tiny_set, tmp_path):
    output = tmp_path / "tower"
    args = ImageTowerArguments(
        dataset=str(tiny_set),
        output_dir=str(output),
        model_config=str(_tiny_preset(tmp_path)),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        classifier_init_text_model=str(MINILM_DIR),
        dataloader_num_workers=0,
    )
    info = pretrain_image_tower(args)
    assert info["steps"] > 0 and 0.0 <= info["validation_acc@1"] <= 1.0 and info["num_classes"] == 6
    assert json.loads((output / "tower_info.json").read_text())["validation_acc@1"] == info["validation_acc@1"]
    assert (output / "model.safetensors").is_file() and (output / "config.json").is_file()

    model = EclipModel.from_vision_text_pretrained(str(output), str(MINILM_DIR), projection_dim=16)
    assert model.config.image_size == 32 and model.config.vision_config.hidden_size == 32
    saved = load_file(output / "model.safetensors")
    loaded = model.vision_model.state_dict()
    # The checkpoint's ViT keys ("vit." + legacy layer names) land in the tower; compare the patch embedding.
    weight = next(value for key, value in saved.items() if key.endswith("patch_embeddings.projection.weight"))
    loaded_weight = next(value for key, value in loaded.items() if "patch_embeddings" in key and key.endswith("weight"))
    assert torch.equal(weight, loaded_weight)
    with torch.no_grad():
        features = model.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32)).pooler_output
    assert features.shape == (1, 16)

    # A second run into the same folder replaces the tower; a foreign non-empty folder is refused.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        pretrain_image_tower(ImageTowerArguments(**{**args.__dict__, "output_dir": str(foreign)}))


def test_tower_arguments_are_checked():
    with pytest.raises(ValueError, match="learning_rate"):
        ImageTowerArguments(dataset="d", output_dir="o", learning_rate=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        ImageTowerArguments(dataset="d", output_dir="o", warmup_ratio=1.0)
    assert ImageTowerArguments(dataset="d", output_dir="o", max_train_minutes="none").max_train_minutes is None


# ----------------------------------------------------------------------------------------------- bad datasets

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "purple": (150, 30, 150)}


def _write_split(root, split, names, rows, index=0, count=1):
    """One parquet file of `split` with the ClassLabel `names`; `rows` are (colour name or image bytes, label id)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    images = [
        {"bytes": c, "path": None} if isinstance(c, bytes) else Image.new("RGB", (32, 32), COLOURS[c]) for c, _ in rows
    ]
    table = datasets.Dataset.from_dict({"image": images, "label": [0] * len(rows)}, features=features).data.table
    # Labels as given, whatever the names: how a file with labels that do not fit its classes comes about.
    table = table.set_column(1, "label", pa.array([label for _, label in rows], pa.int64()))
    path = root / "data" / f"{split}-{index:05d}-of-{count:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(features.arrow_schema.metadata), path)
    return path


def _colours(names, repeat=1):
    return [(name, names.index(name)) for name in names] * repeat


def _tower_arguments(dataset, output, tmp_path, **overrides):
    values = {
        "dataset": str(dataset),
        "output_dir": str(output),
        "model_config": str(_tiny_preset(tmp_path)),
        "num_train_epochs": 10,
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "augment": False,
        "bf16": False,
        "dataloader_num_workers": 0,
    }
    return ImageTowerArguments(**{**values, **overrides})


def test_validation_labels_are_scored_by_class_name_and_unlabelled_examples_skipped(tmp_path):
    train_names, validation_names = ["red", "green", "blue"], ["blue", "red", "green"]
    _write_split(tmp_path / "set", "train", train_names, _colours(train_names, 8))
    # Another order of the same classes, and one example without a label.
    _write_split(tmp_path / "set", "validation", validation_names, [*_colours(validation_names, 2), ("red", -1)])
    # Before: datasets read the validation labels with the train file's names (0% here), and -1 was an IndexError
    # after training, with no tower saved.
    info = pretrain_image_tower(_tower_arguments(tmp_path / "set", tmp_path / "tower", tmp_path))
    assert info["validation_acc@1"] == 1.0
    assert info["skipped_unlabelled_examples"] == {"train": 0, "validation": 1}
    assert (tmp_path / "tower" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "tower" / "config.json").read_text())["id2label"] == {
        "0": "red",
        "1": "green",
        "2": "blue",
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown_class", "split validation has classes the train split does not: \\['purple'\\]"),
        ("label_outside_classes", "split validation: 1 label\\(s\\) are outside its 3 classes \\(e.g. 7\\)"),
        ("files_disagree", "split validation: its files list the classes in different orders .*validation-00001"),
        ("unreadable_train", "split train has no image to train on: 6 image\\(s\\) do not decode, 0 example"),
        ("unlabelled_validation", "split validation has no image to score on: 0 image\\(s\\) do not decode, 3 ex"),
    ],
)
def test_a_dataset_that_cannot_be_trained_or_scored_is_refused_before_training(tmp_path, monkeypatch, case, message):
    import modeling_eclip.training.image_tower as image_tower

    names, root = ["red", "green", "blue"], tmp_path / "set"
    train = (
        [(truncated_jpeg(), label) for _, label in _colours(names, 2)]
        if case == "unreadable_train"
        else _colours(names, 2)
    )
    _write_split(root, "train", names, train)
    if case == "unknown_class":
        _write_split(root, "validation", ["red", "green", "purple"], _colours(["red", "green", "purple"]))
    elif case == "label_outside_classes":
        _write_split(root, "validation", names, [*_colours(names), ("red", 7)])
    elif case == "files_disagree":
        _write_split(root, "validation", names, _colours(names), 0, 2)
        _write_split(root, "validation", ["blue", "red", "green"], _colours(["blue", "red", "green"]), 1, 2)
    elif case == "unlabelled_validation":
        _write_split(root, "validation", names, [(name, -1) for name in names])
    else:
        _write_split(root, "validation", names, _colours(names))
    monkeypatch.setattr(image_tower, "_train_tower", pytest.fail)  # refused before any model is built
    with pytest.raises(ValueError, match=message):
        pretrain_image_tower(_tower_arguments(root, tmp_path / "tower", tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set", "tiny.json"], "a staging folder was left behind"
