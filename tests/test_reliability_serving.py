# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 28, bad input at serving and search: a saved search index beside the wrong catalogue or model, faiss
factories and knobs, the ONNX embedder's files and inputs, and the serving scripts. Each case is a correct result, a
counted skip, or a clear error naming the input and what to do; never a bare library error."""

import importlib.util
import io
import json
import shutil

import datasets
import numpy as np
import pytest
from helpers import make_processor, tiny_model
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
