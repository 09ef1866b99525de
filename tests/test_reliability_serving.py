# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 28, bad input at serving and search: a saved search index beside the wrong catalogue or model, faiss
factories and knobs, the ONNX embedder's files and inputs, and the serving scripts. Each case is a correct result, a
counted skip, or a clear error naming the input and what to do; never a bare library error."""

import importlib.util
import io
import json
import shutil
import subprocess
import sys

import datasets
import numpy as np
import pytest
from helpers import REPO, make_processor, save_tiny_checkpoint, subprocess_env, tiny_model
from PIL import Image

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs the search extra (faiss)")


@pytest.fixture(scope="module")
def search():
    """The search module (imports faiss)."""
    pytest.importorskip("faiss", reason="needs the search extra: pip install '.[search]'")
    from modeling_eclip.evaluation import search

    return search


def probe_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 16), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def unit_catalogue(count: int = 50, dim: int = 8, seed: int = 0) -> tuple[datasets.Dataset, np.ndarray]:
    generator = np.random.default_rng(seed)
    embeddings = generator.standard_normal((count, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    product_ids = [f"p{index}" for index in range(count)]
    return datasets.Dataset.from_dict({"product_id": product_ids, "embeddings": embeddings}), embeddings


# ----- a saved search index beside the wrong catalogue, index file or model (case 5) -----


@needs_faiss
def test_a_saved_index_refuses_its_catalogue_in_another_order(search, tmp_path):
    catalogue, embeddings = unit_catalogue()
    search.ProductSearchIndex(catalogue).save(tmp_path / "index")
    # The same rows in another order: same count and size, so only a fingerprint tells them apart.
    shutil.rmtree(tmp_path / "index" / "catalogue")
    shuffled = catalogue.select(np.random.default_rng(1).permutation(len(catalogue)))
    shuffled.save_to_disk(tmp_path / "index" / "catalogue")
    with pytest.raises(ValueError, match=r"catalogue.*not the catalogue the index was built on.*rebuild"):
        search.ProductSearchIndex.load(tmp_path / "index")


@needs_faiss
def test_a_saved_index_refuses_product_ids_relabelled(search, tmp_path):
    catalogue, _ = unit_catalogue()
    search.ProductSearchIndex(catalogue).save(tmp_path / "index")
    relabelled = catalogue.map(lambda row: {"product_id": "x" + row["product_id"]})
    shutil.rmtree(tmp_path / "index" / "catalogue")
    relabelled.save_to_disk(tmp_path / "index" / "catalogue")
    with pytest.raises(ValueError, match="product ids"):
        search.ProductSearchIndex.load(tmp_path / "index")


@needs_faiss
def test_a_saved_index_refuses_an_index_file_of_another_order(search, tmp_path):
    catalogue, _ = unit_catalogue()
    search.ProductSearchIndex(catalogue).save(tmp_path / "a")
    shuffled = catalogue.select(np.random.default_rng(1).permutation(len(catalogue)))
    search.ProductSearchIndex(shuffled).save(tmp_path / "b")
    (tmp_path / "b" / "index.faiss").replace(tmp_path / "a" / "index.faiss")
    with pytest.raises(ValueError, match="index.faiss is not the index saved with"):
        search.ProductSearchIndex.load(tmp_path / "a")


@needs_faiss
def test_a_saved_index_loads_and_searches_as_saved(search, tmp_path):
    catalogue, embeddings = unit_catalogue()
    index = search.ProductSearchIndex(catalogue)
    index.save(tmp_path / "index")
    loaded = search.ProductSearchIndex.load(tmp_path / "index")
    assert loaded.search_embeddings(embeddings[:3], k=4) == index.search_embeddings(embeddings[:3], k=4)
    # Saving again where it was loaded from (its catalogue is memory-mapped there) keeps it loadable.
    loaded.save(tmp_path / "index")
    again = search.ProductSearchIndex.load(tmp_path / "index")
    assert again.search_embeddings(embeddings[:3], k=4) == index.search_embeddings(embeddings[:3], k=4)


@pytest.fixture(scope="module")
def titled():
    return datasets.Dataset.from_dict(
        {"product_id": ["a", "b", "c"], "title": ["red shoe", "blue denim jacket", "white mug"]}
    )


@needs_faiss
def test_a_saved_index_refuses_queries_from_another_model(search, titled, tmp_path):
    processor = make_processor()
    search.ProductSearchIndex.build(tiny_model(seed=0), processor, titled, embedding="title").save(tmp_path / "i")
    loaded = search.ProductSearchIndex.load(tmp_path / "i", tiny_model(seed=0), processor)
    assert loaded.search(title="red shoe", k=1)[0]["product_id"] == "a"
    with pytest.raises(ValueError, match="do not embed as the model that built it"):
        search.ProductSearchIndex.load(tmp_path / "i", tiny_model(seed=1), processor)


@needs_faiss
def test_a_broken_index_info_file_is_named(search, tmp_path):
    catalogue, _ = unit_catalogue()
    search.ProductSearchIndex(catalogue).save(tmp_path / "index")
    info_file = tmp_path / "index" / "search_index.json"
    info = json.loads(info_file.read_text())
    info_file.write_text("{")
    with pytest.raises(ValueError, match=r"search_index.json is not valid JSON"):
        search.ProductSearchIndex.load(tmp_path / "index")
    info_file.write_text(json.dumps({key: value for key, value in info.items() if key != "string_factory"}))
    with pytest.raises(ValueError, match=r"search_index.json has no 'string_factory'"):
        search.ProductSearchIndex.load(tmp_path / "index")
    info_file.write_text(json.dumps(info))
    (tmp_path / "index" / "index.faiss").write_bytes(b"junk")
    with pytest.raises(ValueError, match="index.faiss"):
        search.ProductSearchIndex.load(tmp_path / "index")


@needs_faiss
def test_an_index_saved_before_fingerprints_loads_with_a_warning(search, tmp_path, caplog):
    catalogue, embeddings = unit_catalogue()
    search.ProductSearchIndex(catalogue).save(tmp_path / "index")
    info_file = tmp_path / "index" / "search_index.json"
    info = json.loads(info_file.read_text())
    for key in ("fingerprints", "model_probe"):
        del info[key]
    info_file.write_text(json.dumps({**info, "format_version": 1}))
    loaded = search.ProductSearchIndex.load(tmp_path / "index")
    assert "saved without fingerprints" in caplog.text
    assert loaded.search_embeddings(embeddings[:1], k=1)[0][0]["product_id"] == "p0"


# ----- building and querying an index (case 13 and its kin) -----


@needs_faiss
def test_an_empty_catalogue_is_named_as_empty(search):
    empty = datasets.Dataset.from_dict({"product_id": [], "image": [], "title": []})
    with pytest.raises(ValueError, match="catalogue is empty"):
        search.ProductSearchIndex.build(tiny_model(), make_processor(), empty)


@needs_faiss
def test_a_catalogue_split_without_any_image_of_the_kind_is_an_error(search, tmp_path):
    from modeling_eclip.data import shard_format

    customer = {"image": probe_png(), "source": "shop", "kind": "customer"}
    customer |= {"boxes": [[1.0, 2.0, 10.0, 10.0]], "box_product_ids": ["p0"]}
    rows = [{"product_id": "p0", "title": "red shoe", "category": "shoes", "split": "test", "images": [customer]}]
    shard_format.write_shards(rows, tmp_path, "test")
    with pytest.raises(ValueError, match="none of the 1 products .* has a catalog image"):
        search.load_catalogue(tmp_path, "test")


@needs_faiss
@pytest.mark.parametrize(
    "factory, parameters",
    [("IDMap,Flat", None), ("IDMap2,Flat", None), ("PCA8,IDMap,Flat", None), ("IDMap,IVF2,Flat", "nprobe=2")],
)
def test_id_map_factories_map_to_catalogue_rows(search, factory, parameters):
    catalogue, embeddings = unit_catalogue()
    index = search.ProductSearchIndex(catalogue, string_factory=factory, search_parameters=parameters)
    hits = index.search_embeddings(embeddings[[3, 17]], k=1)
    assert [hits[0][0]["product_id"], hits[1][0]["product_id"]] == ["p3", "p17"]


@needs_faiss
def test_a_ready_id_map_index_with_other_ids_is_refused(search):
    import faiss

    catalogue, embeddings = unit_catalogue()
    ready = faiss.index_factory(8, "IDMap,Flat", faiss.METRIC_INNER_PRODUCT)
    ready.add_with_ids(embeddings, np.arange(len(embeddings), dtype=np.int64)[::-1].copy())
    with pytest.raises(ValueError, match="ids that are not the catalogue's row numbers"):
        search.ProductSearchIndex(catalogue, faiss_index=ready)


@needs_faiss
def test_factory_and_knobs_are_checked(search):
    catalogue, _ = unit_catalogue()
    with pytest.raises(ValueError, match="search_parameters 'bogus=3'.*'Flat'"):
        search.ProductSearchIndex(catalogue, search_parameters="bogus=3")
    with pytest.raises(ValueError, match="search_parameters 'nprobe=4'.*'Flat'"):
        search.ProductSearchIndex(catalogue, search_parameters="nprobe=4")
    for factory in (3, ""):
        with pytest.raises(ValueError, match="string_factory must be"):
            search.ProductSearchIndex(catalogue, string_factory=factory)
    with pytest.raises(ValueError, match="train_size must be"):
        search.ProductSearchIndex(catalogue, string_factory="IVF2,Flat", train_size="10")
    with pytest.raises(ValueError, match="seed must be"):
        search.ProductSearchIndex(catalogue, string_factory="IVF2,Flat", seed=-1)


@needs_faiss
def test_a_catalogue_of_embeddings_alone_answers_with_row_numbers(search):
    _, embeddings = unit_catalogue()
    index = search.ProductSearchIndex(datasets.Dataset.from_dict({"embeddings": embeddings}))
    assert [hit["index"] for hit in index.search_embeddings(embeddings[5:6], k=2)[0]][0] == 5


@needs_faiss
def test_recall_at_k_checks_its_queries_and_k(search):
    catalogue, embeddings = unit_catalogue()
    index = search.ProductSearchIndex(catalogue)
    assert index.recall_at_k(embeddings[:3], k=len(catalogue) + 10) == 1.0  # k past the catalogue: all of it
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.recall_at_k(embeddings[:3], k=k)
    with pytest.raises(ValueError, match=r"queries must be \(num_queries >= 1, 8\)"):
        index.recall_at_k(embeddings[:3, :4], k=3)
    with pytest.raises(ValueError, match=r"queries has NaN or infinite values in rows \[0\]"):
        index.recall_at_k(np.full((1, 8), np.nan), k=3)
    with pytest.raises(ValueError, match=r"exact must be .*\(3, 3\)"):
        index.recall_at_k(embeddings[:3], k=3, exact=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        search.exact_top_k(catalogue, embeddings[:3], k=0)


# ----- the ONNX embedder: its files (case 14) and its inputs (cases 7, 14) -----

ONNX_GRAPHS = ("text", "image", "instance", "image_instance")


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    """The graphs of a tiny model, exported once."""
    pytest.importorskip("onnxruntime", reason="needs the serving extra: pip install '.[serving]'")
    pytest.importorskip("onnxscript", reason="needs the serving extra: pip install '.[serving]'")
    from modeling_eclip.serving import export_embedding_graphs

    output = tmp_path_factory.mktemp("serving") / "onnx"
    export_embedding_graphs(tiny_model(seed=1), make_processor(), output, graphs=ONNX_GRAPHS)
    return output


@pytest.fixture(scope="module")
def embedder(onnx_export):
    from modeling_eclip.serving import OnnxEmbedder

    return OnnxEmbedder(onnx_export)


def copy_with_info(onnx_export, tmp_path, edit):
    folder = tmp_path / "onnx"
    shutil.copytree(onnx_export, folder)
    info_file = folder / "export_info.json"
    info_file.write_text(edit(json.loads(info_file.read_text())) if callable(edit) else edit)
    return folder


def without(mapping, *path):
    """A copy of the nested dict `mapping` without the key at `path`."""
    mapping = json.loads(json.dumps(mapping))
    inner = mapping
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return json.dumps(mapping)


@pytest.mark.parametrize(
    "edit, message",
    [
        ("{", r"export_info.json is not valid JSON"),
        ("[]", r"export_info.json holds a list, not a JSON object"),
        (lambda info: without(info, "graphs"), r"export_info.json has no 'graphs'"),
        (lambda info: without(info, "logit_scale"), r"export_info.json has no 'logit_scale'"),
        (lambda info: without(info, "graphs", "text", "file"), r"export_info.json: graphs\['text'\] has no 'file'"),
        (lambda info: json.dumps({**info, "projection_dim": "16"}), r"export_info.json has a bad 'projection_dim'"),
        (lambda info: json.dumps({**info, "graphs": {}}), r"export_info.json lists no graphs"),
        (
            lambda info: json.dumps({**info, "graphs": {**info["graphs"], "audio": info["graphs"]["text"]}}),
            r"export_info.json lists an unknown graph 'audio'",
        ),
        (
            lambda info: json.dumps({**info, "graphs": {"text": {**info["graphs"]["text"], "file": "gone.onnx"}}}),
            r"gone.onnx.*export_info.json.*is missing",
        ),
    ],
)
def test_a_broken_export_info_names_the_file_and_key(onnx_export, tmp_path, edit, message):
    from modeling_eclip.serving import OnnxEmbedder

    with pytest.raises(ValueError, match=message):
        OnnxEmbedder(copy_with_info(onnx_export, tmp_path, edit))


def test_a_corrupt_graph_file_is_named(onnx_export, tmp_path):
    from modeling_eclip.serving import OnnxEmbedder

    folder = copy_with_info(onnx_export, tmp_path, lambda info: json.dumps(info))
    (folder / "image.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match=r"onnxruntime cannot load .*image.onnx"):
        OnnxEmbedder(folder)


def test_embedder_arguments_are_checked(onnx_export):
    from modeling_eclip.serving import OnnxEmbedder

    for batch_size in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            OnnxEmbedder(onnx_export, batch_size=batch_size)
    with pytest.raises(ValueError, match=r"providers \['NoSuchExecutionProvider'\] are not available"):
        OnnxEmbedder(onnx_export, providers=["NoSuchExecutionProvider"])
    assert OnnxEmbedder(onnx_export, providers="CPUExecutionProvider").embed_texts("red shoe").shape == (1, 16)


def pixels(batch=2, size=32):
    return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def ids(batch=2, length=6):
    return np.full((batch, length), 1000, np.int64)


@pytest.mark.parametrize(
    "graph, inputs, message",
    [
        ("image", {"pixel_values": np.full((2, 3, 32, 32), np.nan, np.float32)}, "pixel_values has NaN or infinite"),
        ("image", {"pixel_values": np.full((2, 3, 32, 32), np.inf, np.float32)}, "pixel_values has NaN or infinite"),
        ("image", {"pixel_values": np.zeros((2, 3, 32, 32), np.uint8)}, "pixel_values has dtype uint8"),
        ("image", {"pixel_values": pixels(size=64)}, r"pixel_values must be \(batch, 3, 32, 32\).*\(2, 3, 64, 64\)"),
        ("image", {"pixel_values": pixels()[0]}, r"pixel_values must be \(batch, 3, 32, 32\)"),
        ("image", {"pixel_values": pixels(batch=0)}, "pixel_values is an empty batch"),
        ("image", {"pixel_values": [[1, 2]]}, r"pixel_values must be \(batch, 3, 32, 32\)"),
        ("image", {}, r"the 'image' graph takes pixel_values; pixel_values is missing"),
        ("image", ["pixel_values"], "inputs must be a dict"),
        ("text", {"input_ids": np.full((1, 4), 30522), "attention_mask": np.ones((1, 4))}, r"input_ids must lie in"),
        ("text", {"input_ids": np.full((1, 4), -1), "attention_mask": np.ones((1, 4))}, r"input_ids must lie in"),
        ("text", {"input_ids": ids(length=65), "attention_mask": np.ones((2, 65))}, "input_ids has 65 tokens, more"),
        ("text", {"input_ids": ids().astype(np.float32), "attention_mask": np.ones((2, 6))}, "integer token ids"),
        ("text", {"input_ids": ids()[0], "attention_mask": np.ones(6)}, r"add the batch dimension"),
        ("text", {"input_ids": ids(batch=0), "attention_mask": np.ones((0, 6))}, "input_ids is empty"),
        ("text", {"input_ids": ids(length=0), "attention_mask": np.ones((2, 0))}, "input_ids is empty"),
        ("text", {"input_ids": ids(), "attention_mask": np.ones((2, 5))}, "attention_mask must have the shape"),
        ("text", {"input_ids": ids(), "attention_mask": np.full((2, 6), 2)}, r"attention_mask holds 0 and 1"),
        ("text", {"input_ids": ids(), "attention_mask": np.array([[0] * 6, [1] * 6])}, r"row 0 of attention_mask"),
        ("text", {"input_ids": np.array([[101, 7, 102, 0]])}, r"padding.*no attention_mask"),
        (
            "instance",
            {"pixel_values": pixels(batch=3), "input_ids": ids(), "attention_mask": np.ones((2, 6))},
            "3 pixel_values rows but 2 input_ids rows",
        ),
    ],
)
def test_bad_graph_inputs_are_refused_before_onnxruntime(embedder, graph, inputs, message):
    with pytest.raises(ValueError, match=message):
        embedder.run(graph, inputs)


def test_graph_inputs_the_pytorch_model_takes_give_its_embeddings(embedder, onnx_export):
    import torch

    from modeling_eclip.serving.onnx_export import EMBEDDING_GRAPHS

    model = tiny_model(seed=1)
    tokens = make_processor()(text=["red shoe", "blue denim jacket"], return_tensors="np")
    unpadded = tokens["input_ids"][:1, : int(tokens["attention_mask"][0].sum())]
    # No attention_mask and no padding: all ones, as the PyTorch model assumes without one.
    expected = model.get_text_features(input_ids=torch.from_numpy(unpadded), return_dict=True).pooler_output
    np.testing.assert_allclose(embedder.run("text", {"input_ids": unpadded}), expected.detach().numpy(), atol=1e-4)
    # float64 pixels, torch tensors (even with requires_grad), boolean masks and int32 ids are what they say.
    values = torch.from_numpy(pixels()).requires_grad_()
    expected = EMBEDDING_GRAPHS["image"].module(model)(values).detach().numpy()
    np.testing.assert_allclose(embedder.run("image", {"pixel_values": values}), expected, atol=1e-4)
    np.testing.assert_allclose(
        embedder.run("image", {"pixel_values": pixels().astype(np.float64)}), expected, atol=1e-4
    )
    masked = {"input_ids": tokens["input_ids"].astype(np.int32), "attention_mask": tokens["attention_mask"] == 1}
    reference = embedder.run("text", dict(tokens))
    np.testing.assert_allclose(embedder.run("text", masked), reference, atol=1e-6)


def test_texts_and_images_are_named_by_their_position_in_the_call(onnx_export):
    from modeling_eclip.serving import OnnxEmbedder

    embedder = OnnxEmbedder(onnx_export, batch_size=2)
    with pytest.raises(ValueError, match=r"Cannot decode images\[2\]"):
        embedder.embed_images([np.zeros((8, 8, 3), np.uint8)] * 2 + [b"junk"])
    with pytest.raises(ValueError, match=r"texts\[3\] is ''"):
        embedder.embed_texts(["a", "b", "c", ""])
    with pytest.raises(ValueError, match=r"titles\[2\] is ' '"):
        embedder.embed_products([np.zeros((8, 8, 3), np.uint8)] * 3, ["a", "b", " "])
    with pytest.raises(ValueError, match="texts must be a string or a list of strings"):
        embedder.embed_texts(text for text in ["a", "b"])
    with pytest.raises(ValueError, match="texts is empty"):
        embedder.embed_texts([])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "HSV"])
def test_images_of_any_mode_embed_as_their_rgb_version(embedder, mode):
    from modeling_eclip.processing_eclip import to_rgb_image

    image = (
        Image.new(mode, (24, 20), 4000) if mode == "I;16" else Image.new("RGB", (24, 20), (200, 30, 30)).convert(mode)
    )
    np.testing.assert_allclose(embedder.embed_images([image]), embedder.embed_images([to_rgb_image(image)]), atol=1e-6)
    assert np.isfinite(embedder.embed_images([image])).all()


def test_an_export_before_vocab_size_checks_ids_against_the_tokenizer(onnx_export, tmp_path, caplog):
    from modeling_eclip.serving import OnnxEmbedder

    folder = copy_with_info(
        onnx_export, tmp_path, lambda info: without(json.loads(without(info, "vocab_size")), "max_text_length")
    )
    embedder = OnnxEmbedder(folder)
    assert "predates vocab_size and max_text_length" in caplog.text
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 30522\)"):
        embedder.run("text", {"input_ids": np.full((1, 4), 30522), "attention_mask": np.ones((1, 4))})
    assert embedder.embed_texts(["red shoe"]).shape == (1, 16)


def test_export_arguments_are_checked(tmp_path):
    import torch

    from modeling_eclip.serving import export_embedding_graphs

    with pytest.raises(ValueError, match="exports an EclipModel, got Linear"):
        export_embedding_graphs(torch.nn.Linear(2, 2), make_processor(), tmp_path / "a")
    with pytest.raises(ValueError, match="processor must be the model's EclipProcessor"):
        export_embedding_graphs(tiny_model(), None, tmp_path / "b")


# ----- the serving scripts (case 15) -----


def run_script(name, *arguments, timeout=300):
    command = [sys.executable, str(REPO / "examples" / name), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=timeout)


def run_main(name, arguments, monkeypatch, capsys):
    """An example's main() in this process (seconds faster than a new interpreter): (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "examples" / name)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", [name, *map(str, arguments)])
    try:
        script.main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_script_names_a_missing_model_folder(tmp_path):
    result = run_script("export_onnx.py", "--model", "/no/such/model", "--output", tmp_path / "onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "no model at /no/such/model: that folder does not exist" in result.stderr


@pytest.mark.parametrize("model", ["./no-such-model", "~/no-such-model", "a/b/c", "no-such-folder/"])
def test_export_script_names_any_missing_local_path(model, tmp_path, monkeypatch, capsys):
    code, _, stderr = run_main("export_onnx.py", ["--model", model, "--output", tmp_path / "o"], monkeypatch, capsys)
    assert code == 2 and f"no model at {model}" in stderr


def test_export_script_sends_a_hub_id_to_the_hub_and_names_what_failed(tmp_path, monkeypatch, capsys):
    arguments = ["--model", "someone/no-such-model", "--output", tmp_path / "onnx"]
    code, _, stderr = run_main("export_onnx.py", arguments, monkeypatch, capsys)
    assert code == 2 and "cannot load --model someone/no-such-model" in stderr
    assert "no model at" not in stderr  # the Hub was asked (offline here)


def test_export_script_checks_its_folders_before_exporting(tmp_path, monkeypatch, capsys):
    def export(*arguments):
        return run_main("export_onnx.py", arguments, monkeypatch, capsys)

    (tmp_path / "empty").mkdir()
    code, _, stderr = export("--model", tmp_path / "empty", "--output", tmp_path / "onnx")
    assert code == 2 and "has no config.json" in stderr
    save_tiny_checkpoint(tmp_path / "model")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("kept")
    code, _, stderr = export("--model", tmp_path / "model", "--output", tmp_path / "taken")
    assert code == 2 and "--overwrite" in stderr
    code, _, stderr = export("--model", tmp_path / "model", "--output", tmp_path / "o", "--check-data", tmp_path / "x")
    assert code == 2 and "--check-data" in stderr
    assert not (tmp_path / "o").exists()


def test_serve_script_skips_and_counts_unreadable_images(onnx_export, tmp_path, monkeypatch, capsys):
    for index, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (20, 16), colour).save(tmp_path / f"product-{index}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    arguments = ["--onnx", onnx_export, "--images", tmp_path, "--text", "red", "--k", 9]
    code, stdout, stderr = run_main("serve_embeddings.py", arguments, monkeypatch, capsys)
    assert code == 0, stderr
    assert "Skipped 1 of 4 images that cannot be read" in stderr and "broken.jpg" in stderr
    lines = stdout.splitlines()
    assert lines[0] == f"Indexed 3 images from {tmp_path}"
    assert len(lines) == 2 + 3  # k past the catalogue: all three products


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--k", "0"], "--k: must be a positive integer"),
        (["--text", " "], "--text[0] is ' '"),
        (["--image", "/no/such/query.png"], "Cannot decode --image /no/such/query.png"),
        (["--images", "/no/such/folder"], "--images /no/such/folder is not a folder"),
        (["--onnx", "/no/such/export"], "--onnx: /no/such/export has no export_info.json"),
    ],
)
def test_serve_script_names_bad_arguments(tmp_path, arguments, message, monkeypatch, capsys):
    Image.new("RGB", (20, 16), "red").save(tmp_path / "product.png")
    defaults = {"--onnx": tmp_path / "no-export", "--images": tmp_path}
    defaults.update(dict(zip(arguments[::2], arguments[1::2])))
    arguments = [item for pair in defaults.items() for item in pair]
    code, _, stderr = run_main("serve_embeddings.py", arguments, monkeypatch, capsys)
    assert code == 2 and message in stderr, stderr


def test_an_export_without_its_processor_is_named(onnx_export, tmp_path):
    from modeling_eclip.serving import OnnxEmbedder

    folder = copy_with_info(onnx_export, tmp_path, lambda info: json.dumps(info))
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match=r"has no usable processor.*export the model again"):
        OnnxEmbedder(folder)


def test_token_type_ids_the_graphs_cannot_take_are_refused(embedder):
    tokens = dict(make_processor()(text=["red shoe"], return_tensors="np"))
    assert embedder.run("text", tokens).shape == (1, 16)  # the processor's zeros: what the graph embeds
    with pytest.raises(ValueError, match="token_type_ids"):
        embedder.run("text", {**tokens, "token_type_ids": np.ones_like(tokens["input_ids"])})
