# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of the embedding paths (`modeling_eclip.serving`): parity with PyTorch at batch sizes 1 and 7 on demo
catalogue images and titles, the int8 graphs, refused exports, and the onnxruntime + faiss serving example."""

import json
import subprocess
import sys

import numpy as np
import pytest
from filelock import FileLock

# Skipped without the serving extra, before the imports that need it (its faiss: evaluation.search); ruff's E402
# allows imports after pytest.importorskip.
pytest.importorskip("onnxruntime", reason="needs the serving extra: pip install '.[serving]'")
pytest.importorskip("onnxscript", reason="needs the serving extra: pip install '.[serving]'")

from helpers import REPO, make_processor, save_tiny_checkpoint, subprocess_env, tiny_model

from modeling_eclip import EclipModel
from modeling_eclip.evaluation.search import load_catalogue
from modeling_eclip.serving import EMBEDDING_GRAPHS, OnnxEmbedder, export_embedding_graphs
from modeling_eclip.serving.onnx_export import parity

PARITY_TOLERANCE = 1e-4  # fp32, as the issue asks


@pytest.fixture(scope="session")
def exported(tmp_path_factory, demo_catalogue):
    """A tiny checkpoint exported by the CLI with int8 copies and its parity report on the demo catalogue; done once
    for all pytest-xdist workers (the shared parent of their temporary folders, under a file lock)."""
    root = tmp_path_factory.getbasetemp().parent / "serving-export"
    with FileLock(f"{root}.lock"):
        report_file = root / "parity.json"
        if not report_file.is_file():
            save_tiny_checkpoint(root / "model", seed=1)
            command = [sys.executable, str(REPO / "examples" / "export_onnx.py"), "--model", str(root / "model")]
            command += ["--output", str(root / "onnx"), "--int8", "--check-data", str(demo_catalogue)]
            result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            report_file.write_text(result.stdout.split("per graph:", 1)[1])
    return root, json.loads(report_file.read_text())


@pytest.mark.slow
def test_export_writes_every_graph_with_the_processor(exported):
    root, _ = exported
    info = json.loads((root / "onnx" / "export_info.json").read_text())
    assert set(info["graphs"]) == set(EMBEDDING_GRAPHS)
    for name, entry in info["graphs"].items():
        assert (root / "onnx" / entry["file"]).is_file()
        assert (root / "onnx" / entry["int8_file"]).stat().st_size < (root / "onnx" / entry["file"]).stat().st_size
        assert entry["inputs"] == list(EMBEDDING_GRAPHS[name].inputs)
    assert (root / "onnx" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_cli_parity_report_is_within_tolerance_at_batch_1_and_7(exported):
    _, report = exported
    assert set(report) == {"batch 1", "batch 7"}
    for differences in report.values():
        assert set(differences) == set(EMBEDDING_GRAPHS)
        assert max(differences.values()) <= PARITY_TOLERANCE, report


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_on_demo_images_and_titles(exported, demo_catalogue):
    root, _ = exported
    model = EclipModel.from_pretrained(root / "model").eval()
    embedder = OnnxEmbedder(root / "onnx")
    products = load_catalogue(demo_catalogue, "test")
    for size in (1, 7):
        differences = parity(model, embedder, products["image"][:size], products["title"][:size])
        assert max(differences.values()) <= PARITY_TOLERANCE, (size, differences)
    # Fixed Gaussian negatives: a product's embedding does not depend on the rest of its batch.
    together = embedder.embed_products(products["image"][:7], products["title"][:7])
    alone = embedder.embed_products(products["image"][3:4], products["title"][3:4])
    np.testing.assert_allclose(together[3:4], alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_int8_graphs_give_unit_embeddings_close_to_fp32(exported, demo_catalogue):
    root, _ = exported
    products = load_catalogue(demo_catalogue, "test")
    images, titles = products["image"][:4], products["title"][:4]
    fp32, int8 = OnnxEmbedder(root / "onnx"), OnnxEmbedder(root / "onnx", int8=True)
    for embed in ("embed_texts", "embed_images", "embed_products"):
        arguments = (titles,) if embed == "embed_texts" else (images,)
        reference, quantised = getattr(fp32, embed)(*arguments), getattr(int8, embed)(*arguments)
        assert quantised.shape == reference.shape and np.isfinite(quantised).all()
        assert (reference * quantised).sum(-1).min() > 0.9, embed  # cosine similarity to the fp32 embedding


@pytest.mark.slow
def test_embedder_errors_name_the_problem(exported, tmp_path):
    root, _ = exported
    with pytest.raises(FileNotFoundError, match="export_info.json"):
        OnnxEmbedder(tmp_path)
    embedder = OnnxEmbedder(root / "onnx")
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        embedder.embed_products([np.zeros((8, 8, 3), np.uint8)] * 2, ["one title"])
    with pytest.raises(ValueError, match="texts is empty"):
        embedder.embed_texts([])


def test_export_refuses_batch_dependent_text_negatives(tmp_path):
    model = tiny_model()
    model.config.decoder_config.negative_query_mode = "text"
    with pytest.raises(ValueError, match="negative_query_mode='text'"):
        export_embedding_graphs(model, make_processor(), tmp_path)
    with pytest.raises(ValueError, match="graphs must be"):
        export_embedding_graphs(tiny_model(), make_processor(), tmp_path, graphs=["audio"])


def test_export_replaces_a_non_empty_folder_only_when_asked(tmp_path):
    """An earlier export's graphs (another model, other graphs) never survive next to the new ones."""
    output = tmp_path / "onnx"
    output.mkdir()
    (output / "text.onnx").write_bytes(b"an earlier model's graph")
    with pytest.raises(FileExistsError, match="not empty.*--overwrite"):
        export_embedding_graphs(tiny_model(), make_processor(), output, graphs=["image"])
    assert (output / "text.onnx").read_bytes() == b"an earlier model's graph"
    info = export_embedding_graphs(tiny_model(), make_processor(), output, graphs=["image"], overwrite=True)
    assert list(info["graphs"]) == ["image"]
    assert (output / "image.onnx").is_file() and not (output / "text.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # no staging folder left beside it


@pytest.mark.slow
def test_serve_embeddings_example_answers_text_and_image_queries(exported, demo_catalogue, tmp_path):
    root, _ = exported
    products = load_catalogue(demo_catalogue, "test")
    for index in range(6):
        (tmp_path / f"product-{index}.png").write_bytes(products[index]["image"])
    command = [sys.executable, str(REPO / "examples" / "serve_embeddings.py"), "--onnx", str(root / "onnx")]
    command += ["--images", str(tmp_path), "--text", products[0]["title"], "--image", str(tmp_path / "product-2.png")]
    result = subprocess.run(command + ["--k", "3"], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"Indexed 6 images from {tmp_path}"
    image_query = lines.index(f"image {tmp_path / 'product-2.png'}")
    assert lines[image_query + 1].split() == ["1.", "1.000", "product-2.png"]  # an image finds itself first
    text_query = lines.index(f"text {products[0]['title']!r}")
    assert len(lines[text_query + 1 : image_query]) == 3


@pytest.mark.slow
def test_benchmark_serving_rows(exported, demo_catalogue, tmp_path):
    root, _ = exported
    output = tmp_path / "serving.json"
    command = [sys.executable, str(REPO / "examples" / "benchmark.py"), "--serving-model", str(root / "model")]
    command += ["--serving-onnx", str(root / "onnx"), "--serving-data", str(demo_catalogue), "--batch-size", "3"]
    command += ["--repeats", "1", "--warmup", "0", "--threads", "1", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    backends = ("pytorch eager fp32", "onnxruntime fp32", "onnxruntime int8")
    assert set(report["serving"]) == {
        f"{graph} / {backend}" for graph in ("text", "image", "instance") for backend in backends
    }
    for key, row in report["serving"].items():
        assert row["samples_per_s"]["median"] == 3 / row["median_s"], key
        graph, backend = key.split(" / ")
        assert f"| {graph} | {backend} |" in result.stdout
    assert set(report["zero_shot_acc1"]) == set(backends)
    assert all(0 <= accuracy <= 1 for accuracy in report["zero_shot_acc1"].values())
    # fp32 onnxruntime embeds as PyTorch does (parity), so it classifies the same products correctly.
    assert report["zero_shot_acc1"]["onnxruntime fp32"] == report["zero_shot_acc1"]["pytorch eager fp32"]
    assert report["setup"]["test_products"] == 8


@pytest.mark.slow
def test_benchmark_serving_needs_its_graphs_and_data():
    command = [sys.executable, str(REPO / "examples" / "benchmark.py"), "--serving-model", "some/model"]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode != 0 and "--serving-onnx and --serving-data" in result.stderr
