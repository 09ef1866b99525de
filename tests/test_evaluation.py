# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of a checkpoint on a catalogue (paper Tables 1-4) on a tiny model and a tiny built catalogue."""

import ast
import graphlib
import json
from pathlib import Path

import pytest
import torch
from helpers import make_processor, tiny_model

from modeling_eclip.evaluation import embedding, scoring, tables
from modeling_eclip.evaluation.embedding import (
    PRODUCT_VIEWS,
    EmbeddedSplit,
    ImageEmbeddings,
    is_itc_only,
    load_catalogue_split,
    resolve_embedding_mode,
)
from modeling_eclip.evaluation.report import format_results
from modeling_eclip.evaluation.tables import evaluate_model, quick_evaluate

REPO = Path(__file__).resolve().parents[1]

ITC_ONLY = {"inter_loss_weight": 0.0, "itm_loss_weight": 0.0, "intra_loss_weight": 0.0, "entropy_loss_weight": 0.0}


def test_load_catalogue_split(demo_catalogue):
    split = load_catalogue_split(demo_catalogue, "test")
    assert len(split.product_ids) == len(split.titles) == len(split.categories) > 0
    assert {image.kind for image in split.images} == {"catalog", "customer", "ad"}
    # Titles of every product of the catalogue, so distractors from the train split can be named.
    assert set(split.product_ids) < set(split.all_titles)
    assert len(load_catalogue_split(demo_catalogue, "test", max_products=2).product_ids) == 2
    with pytest.raises(FileNotFoundError, match="has no split 'validation'"):
        load_catalogue_split(demo_catalogue, "validation")


def test_embedding_mode_auto():
    assert resolve_embedding_mode(tiny_model()) == "instance"
    itc_only = tiny_model(**ITC_ONLY)
    assert is_itc_only(itc_only)
    assert resolve_embedding_mode(itc_only) == "global"
    assert resolve_embedding_mode(itc_only, "instance") == "instance"
    with pytest.raises(ValueError, match="embedding"):
        resolve_embedding_mode(itc_only, "mean")


def test_quick_evaluate(demo_catalogue, processor):
    model = tiny_model().train()
    results = quick_evaluate(model, processor, demo_catalogue, batch_size=16)
    assert set(results) == {
        "zero_shot_acc@1",
        "fine_grained_r@1",
        "fine_grained_map@10",
        "map_mass_in_box_over_area",
        "map_entropy_over_log_n",
    }
    assert all(0.0 <= value <= 1.0 for name, value in results.items() if name != "map_mass_in_box_over_area")
    assert model.training  # the training loop's mode is restored
    # Deterministic: same model, same numbers; the batch size does not change them.
    assert quick_evaluate(model, processor, demo_catalogue, batch_size=5) == pytest.approx(results)


def test_input_ignoring_model_scores_chance_level(demo_catalogue, processor, monkeypatch):
    """Constant embeddings tie every score, so the stable ranking is the gallery order and each number equals the
    data's base rate: fine-grained R@1 = 1 / #products (every query's one match is first for one product in P),
    zero-shot Acc@1 = share of catalog images in the first category."""
    split = load_catalogue_split(demo_catalogue, "test")
    monkeypatch.setattr(embedding, "embed_texts", lambda model, processor, texts, *args: torch.ones(len(texts), 8))
    monkeypatch.setattr(
        embedding, "embed_images", lambda model, processor, images, *args: ImageEmbeddings(torch.ones(len(images), 8))
    )
    results = quick_evaluate(tiny_model(), processor, demo_catalogue, embedding="global")
    catalog = [split.images[i] for i in split.image_indices("catalog")]
    first_category = split.category_names[0]
    base_rate = sum(split.categories[image.product] == first_category for image in catalog) / len(catalog)
    assert results["zero_shot_acc@1"] == pytest.approx(base_rate)
    assert results["fine_grained_r@1"] == pytest.approx(1 / len(split.product_ids))


def oracle_embeddings(split, mode="instance"):
    """Every image embedded as one-hot(product) + one-hot(category): the ideal model for Tables 1-3."""
    num_products, names = len(split.product_ids), split.category_names
    dim = num_products + len(names)
    category_embeds = torch.eye(dim)[num_products:]
    title_embeds = torch.stack(
        [torch.eye(dim)[p] + category_embeds[names.index(c)] for p, c in enumerate(split.categories)]
    )
    indices, views = {}, {}
    for kind in ("catalog", "customer", "ad"):
        indices[kind] = split.image_indices(kind)
        embeds = title_embeds[[split.images[i].product for i in indices[kind]]]
        views[kind] = {"image+title": embeds, "image": embeds, "title": embeds, "g_I": embeds}
    return EmbeddedSplit(split, mode, title_embeds, category_embeds, indices, views)


def test_tables_on_oracle_embeddings(demo_catalogue):
    split = load_catalogue_split(demo_catalogue, "test")
    embedded = oracle_embeddings(split)
    assert tables.zero_shot_classification(embedded) == {
        "acc@1 (image+title)": 1.0,
        "acc@1 (image)": 1.0,
        "acc@1 (title)": 1.0,
    }
    retrieval = tables.product_retrieval(embedded)
    # Same product scores 2, same category 1: the product itself first, then its category.
    assert retrieval["fine_grained"] == {f"{m}@{k}": 1.0 for m in ("r", "map") for k in (1, 5, 10)}
    assert retrieval["coarse"]["map@1"] == 1.0
    # Each customer image queries only the other source's catalog (one image per product).
    assert retrieval["num_queries"] == len(split.image_indices("customer"))
    two_way = tables.image_text_retrieval(embedded)
    assert two_way["image_to_text"]["r@1"] == two_way["text_to_image"]["r@1"] == 1.0
    # Table 3: an ad's own product is ranked first, its other products (score 0 or 1) are not found reliably.
    # AP@50 >= 1 / #matches per ad (first rank is a hit), and mAR@50 = 1 when the gallery (8 items) is all ranked.
    instance = tables.instance_level_retrieval(embedded)
    ads = [split.images[i] for i in split.image_indices("ad")]
    in_split = [len({p for p in ad.box_product_ids if p in split.product_ids}) for ad in ads]
    assert instance["instance_level"]["mar@50"] == 1.0
    assert instance["instance_level"]["map@10"] >= sum(1 / n for n in in_split) / len(ads) - 1e-9
    assert instance["ad_products_outside_split"] == sum(len(set(ad.box_product_ids)) for ad in ads) - sum(in_split)


def test_evaluate_model_tables_and_format(demo_catalogue, processor, tmp_path):
    split = load_catalogue_split(demo_catalogue, "test")
    results = evaluate_model(tiny_model(), processor, demo_catalogue, batch_size=16, tsne_path=tmp_path / "tsne.png")
    assert results["embedding"] == "instance"
    assert results["num_products"] == len(split.product_ids)
    assert set(results["table1"]) == {"classification", "image_to_text", "text_to_image"}
    assert set(results["table1"]["classification"]) == {f"acc@1 ({view})" for view in PRODUCT_VIEWS}
    assert set(results["table2"]["fine_grained"]) == {f"{m}@{k}" for m in ("r", "map") for k in (1, 5, 10)}
    assert set(results["table3"]["instance_level"]) == {"map@10", "map@50", "mar@10", "mar@50"}
    grounding = results["table4"]["grounding"]
    assert grounding["num_samples"] == results["num_images"]["customer"] + results["num_images"]["ad"]
    assert grounding["acc@0.7"] <= grounding["acc@0.5"]
    assert (
        results["table4"]["distractor"]["num_samples"] + results["table4"]["images_without_distractor"]
        == (grounding["num_samples"])
    )
    json.dumps(results)  # JSON-serialisable
    assert (tmp_path / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    baseline = evaluate_model(tiny_model(**ITC_ONLY), processor, demo_catalogue, batch_size=16, grounding=False)
    assert baseline["embedding"] == "global" and "table4" not in baseline
    table = format_results(results, baseline, names=["eclip", "clip"])
    for title in ("Table 1", "Table 2", "Table 3", "Table 4"):
        assert title in table
    assert "| clip |" in table.split("Table 4")[0] and "| clip | - | - | - | - |" in table
    # Table 2's eclip row: coarse mAP@1/5/10, then fine R@1 (percent, one decimal).
    row = next(line for line in table.split("Table 2")[1].splitlines() if line.startswith("| eclip"))
    assert row.split("|")[5].strip() == f"{100 * results['table2']['fine_grained']['r@1']:.1f}"


@pytest.fixture(scope="module")
def new_scenes(demo_catalogue, tmp_path_factory):
    from helpers import DEMO_CATALOGUE

    from modeling_eclip.demo.catalogue import build_catalogue

    output = tmp_path_factory.mktemp("scenes") / "catalogue"
    build_catalogue(output, workers=1, scene_seed=1, **DEMO_CATALOGUE)
    return output


@pytest.mark.parametrize("itc_only", [False, True], ids=["instance", "global"])
def test_new_scenes_and_controls(demo_catalogue, new_scenes, processor, itc_only):
    model = tiny_model(**(ITC_ONLY if itc_only else {}))
    results = evaluate_model(
        model, processor, demo_catalogue, batch_size=16, new_scenes_dir=new_scenes, new_scenes_max_products=12
    )
    scenes = results["new_scenes"]
    assert scenes["num_products"] == 12
    retrieval = scenes["retrieval"]
    assert retrieval["chance@1"] == pytest.approx(1 / 12)
    for name in ("same_source", "cross_source"):
        assert 0.0 <= retrieval[name]["r@1"] <= retrieval[name]["r@5"] <= 1.0
    conditioned = scenes["grounding"]["text_conditioned"]
    # Both found implies the distractor was found, on the same images.
    assert conditioned["num_samples"] == scenes["grounding"]["distractor"]["num_samples"]
    assert 0.0 <= conditioned["acc@0.5"] <= scenes["grounding"]["distractor"]["acc@0.5"]
    assert 0.0 < conditioned["chance"] < 0.5
    assert scenes["grounding"]["positive_map"]["mass_in_box_over_area"] >= 0.0
    controls = results["controls"]
    assert controls["positive_map"]["num_images"] == results["num_images"]["customer"] + results["num_images"]["ad"]
    if itc_only:
        assert "title_leakage" not in controls and "entropy_over_log_n" not in controls["positive_map"]
    else:
        assert 0.0 < controls["positive_map"]["entropy_over_log_n"] <= 1.0 + 1e-6
        assert controls["title_leakage"]["chance@1"] == pytest.approx(1 / results["num_products"])
    table = format_results(results, [results, results], names=["a", "b", "c"])
    assert "New scenes of training products" in table and "| c |" in table


def test_the_evaluation_modules_import_each_other_without_a_cycle_or_a_private_name():
    """Imports inside functions count too: they are how a cycle hides."""
    graph = {}
    for path in sorted((REPO / "modeling_eclip" / "evaluation").glob("*.py")):
        graph[path.stem] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                graph[path.stem].add(node.module)
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from .{node.module}"
    assert graph["tables"] >= {"instances", "scoring"} and "scoring" in graph["instances"]
    graphlib.TopologicalSorter(graph).prepare()  # a CycleError names the cycle


def test_mass_in_box_over_area():
    uniform = torch.ones(10, 20)
    assert scoring.mass_in_box_over_area(uniform, [0, 0, 10, 5]) == pytest.approx(1.0)
    peaked = torch.zeros(10, 20)
    peaked[2, 3] = 1.0
    assert scoring.mass_in_box_over_area(peaked, [0, 0, 10, 5]) == pytest.approx(4.0)
    assert scoring.mass_in_box_over_area(peaked, [10, 5, 20, 10]) == 0.0


def test_global_mode_grounds_with_dense_clip_map(demo_catalogue, processor):
    split = load_catalogue_split(demo_catalogue, "test")
    images = [split.images[i].to_pil() for i in split.image_indices("ad")[:2]]
    maps = scoring.global_score_maps(tiny_model(), processor, images, ["red shoe", "a cup"])
    assert [tuple(m.shape) for m in maps] == [(image.height, image.width) for image in images]


def test_cli_end_to_end(demo_catalogue, tmp_path, capsys, load_example):
    export = tmp_path / "export"
    tiny_model(**ITC_ONLY).save_pretrained(export)
    make_processor().save_pretrained(export)
    cli = load_example("evaluate_eclip")
    output, tsne = tmp_path / "results.json", tmp_path / "tsne.png"
    args = ["--model", str(export), "--data", str(demo_catalogue), "--output", str(output), "--tsne", str(tsne)]
    cli.main([*args, "--batch-size", "16", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "export (global)" in printed
    assert json.loads(output.read_text())["embedding"] == "global"
    assert tsne.stat().st_size > 0


# ----- CLIP-style models beside ECLIP (--compare) -----


def tiny_clip(directory):
    """A tiny `CLIPModel` checkpoint with a CLIP processor (centre crop; the MiniLM tokenizer stands in for CLIP's)."""
    from helpers import MINILM_DIR
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    text = {**tower, "vocab_size": 30522, "max_position_embeddings": 64, "bos_token_id": 101, "eos_token_id": 102}
    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(text_config=text, vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16)
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(MINILM_DIR))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


def tiny_dual_encoder(directory):
    """A tiny `VisionTextDualEncoderModel` (ViT + BERT) checkpoint with its processor."""
    from helpers import MINILM_DIR
    from transformers import (
        AutoTokenizer,
        BertConfig,
        VisionTextDualEncoderConfig,
        VisionTextDualEncoderModel,
        VisionTextDualEncoderProcessor,
        ViTConfig,
        ViTImageProcessorPil,
    )

    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        ViTConfig(**tower, image_size=32, patch_size=8),
        BertConfig(**tower, max_position_embeddings=64),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = VisionTextDualEncoderModel(config=config)
    processor = VisionTextDualEncoderProcessor(
        image_processor=ViTImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=AutoTokenizer.from_pretrained(MINILM_DIR),
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


@torch.no_grad()
@pytest.mark.parametrize("build", [tiny_clip, tiny_dual_encoder])
def test_clip_style_models_are_embedded_with_their_own_methods(demo_catalogue, tmp_path, build):
    model, processor = build(tmp_path / "model")
    model.eval()
    assert resolve_embedding_mode(model, "auto") == "global"
    with pytest.raises(ValueError, match="embedding='instance' needs an ECLIP checkpoint"):
        resolve_embedding_mode(model, "instance")
    split = load_catalogue_split(demo_catalogue, "test", max_products=3)
    images = [split.images[i].to_pil() for i in split.image_indices("catalog")]
    inputs = processor(images=images, text=split.titles[:1], padding=True, truncation=True, return_tensors="pt")
    embedded = embedding.embed_images(model, processor, images, mode="global")
    torch.testing.assert_close(
        embedded.image, torch.nn.functional.normalize(model.get_image_features(inputs["pixel_values"]).pooler_output)
    )
    text = {key: value for key, value in inputs.items() if key != "pixel_values"}
    accepted = {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
    expected_text = model.get_text_features(**{k: v for k, v in text.items() if k in accepted}).pooler_output
    torch.testing.assert_close(embedding.embed_texts(model, processor, split.titles[:1]), expected_text)
    # Grounding maps of a CLIP-style model cover the whole image (no centre crop) at its own size.
    maps = scoring.global_score_maps(model, processor, images[:2], split.titles[:2])
    assert [tuple(m.shape) for m in maps] == [(image.height, image.width) for image in images[:2]]


def test_compare_accepts_clip_and_dual_encoder_checkpoints(demo_catalogue, tmp_path, capsys):
    from modeling_eclip.evaluation.cli import main

    # Every export is a folder called "model" (as pretraining writes them): rows are named by their parents too.
    eclip = tmp_path / "eclip" / "model"
    tiny_model().save_pretrained(eclip)
    make_processor().save_pretrained(eclip)
    tiny_clip(tmp_path / "fashion-clip" / "model")
    tiny_dual_encoder(tmp_path / "dual-encoder" / "model")
    others = ("fashion-clip", "dual-encoder")
    output = tmp_path / "compared.json"
    args = [
        "--model",
        str(eclip),
        "--data",
        str(demo_catalogue),
        "--compare",
        *(str(tmp_path / o / "model") for o in others),
    ]
    main([*args, "--max-products", "8", "--output", str(output)])
    printed = capsys.readouterr().out
    assert "| eclip/model (instance) |" in printed
    compared_runs = json.loads(output.read_text())["compare"]
    assert len(compared_runs) == len(others)
    for other, compared in zip(others, compared_runs):
        assert f"| {other}/model (global) |" in printed
        assert compared["embedding"] == "global"
        for table in ("table1", "table2", "table3", "table4"):
            assert table in compared, table
        assert 0 <= compared["table4"]["grounding"]["acc@0.5"] <= 1
