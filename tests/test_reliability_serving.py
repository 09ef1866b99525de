# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 28, bad input at serving and search: a saved search index beside the wrong catalogue or model, faiss
factories and knobs, the ONNX embedder's files and inputs, and the serving scripts. Each case is a correct result, a
counted skip, or a clear error naming the input and what to do; never a bare library error."""

import importlib.util
import json
import shutil

import datasets
import numpy as np
import pytest
from helpers import make_processor, tiny_model

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs the search extra (faiss)")


@pytest.fixture(scope="module")
def search():
    """The search module (imports faiss)."""
    pytest.importorskip("faiss", reason="needs the search extra: pip install '.[search]'")
    from modeling_eclip.evaluation import search

    return search


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
