# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product search: catalogue loading from shards, embeddings, the faiss index against brute force, bad input."""

import io
import logging

import datasets
import faiss
import numpy as np
import pytest
from helpers import make_processor, tiny_model
from PIL import Image

from modeling_eclip.data import shard_format
from modeling_eclip.evaluation.search import ProductSearchIndex, embed_products, exact_top_k, load_catalogue

COLOURS = ["red", "green", "blue", "orange", "purple", "white"]
TITLES = ["red shoe", "green garden hose", "blue denim jacket", "orange juicer", "purple yoga mat", "white mug"]


def png(colour, size=(24, 20), spot=(4, 4, 12, 12)):
    image = Image.new("RGB", size, colour)
    image.paste((0, 0, 0), spot)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_entry(product_id, colour, kind, source="shop"):
    return {
        "image": png(colour, spot=(2, 2, 8, 8) if kind == "customer" else (4, 4, 12, 12)),
        "source": source,
        "kind": kind,
        "boxes": [[1.0, 2.0, 20.0, 18.0]],
        "box_product_ids": [product_id],
    }


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory):
    """Six products with a catalog and a customer image each; the last one has no catalog image."""
    rows = []
    for index, (colour, title) in enumerate(zip(COLOURS, TITLES)):
        product_id = f"p{index}"
        kinds = ["customer"] if index == len(COLOURS) - 1 else ["catalog", "customer"]
        rows.append(
            {
                "product_id": product_id,
                "title": title,
                "category": "clothes" if index % 2 else "home",
                "split": "test",
                "images": [image_entry(product_id, colour, kind) for kind in kinds],
            }
        )
    root = tmp_path_factory.mktemp("catalogue")
    shard_format.write_shards(rows, root, "test")
    return root


@pytest.fixture(scope="module")
def catalogue(catalogue_dir):
    return load_catalogue(catalogue_dir, "test", kind="catalog")


@pytest.fixture(scope="module")
def index(catalogue):
    return ProductSearchIndex.build(tiny_model(), make_processor(), catalogue, batch_size=2)


def test_load_catalogue_picks_one_image_per_product_and_reports_the_rest(catalogue_dir, caplog):
    with caplog.at_level(logging.WARNING):
        catalogue = load_catalogue(catalogue_dir, "test", kind="catalog")
    assert catalogue["product_id"] == [f"p{index}" for index in range(5)]
    assert "1 of 6 products have no catalog image" in caplog.text
    assert catalogue[0]["image"] == png("red") and catalogue[0]["box"] == [1.0, 2.0, 20.0, 18.0]
    customers = load_catalogue(catalogue_dir, "test", kind="customer", source="shop")
    assert len(customers) == 6 and customers[5]["image"] == png("white", spot=(2, 2, 8, 8))
    with pytest.raises(FileNotFoundError, match="has no split 'train'"):
        load_catalogue(catalogue_dir, "train")


def brute_force(gallery, queries, k):
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_index_matches_brute_force_for_every_query_kind(index, catalogue):
    gallery = np.asarray(index.catalogue["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
    images = [png(colour, spot=(2, 2, 8, 8)) for colour in COLOURS[:3]]
    queries = {
        "image+title": dict(images=images, titles=TITLES[:3]),
        "title": dict(titles=["red running shoe", "hose", "denim"]),
        "image": dict(images=images),
    }
    for kind, query in queries.items():
        results = index.search_batch(**query, k=3)
        expected_order, expected_scores = brute_force(gallery, embed_products(index.model, index.processor, **query), 3)
        assert [[hit["index"] for hit in hits] for hits in results] == expected_order.tolist(), kind
        np.testing.assert_allclose([[hit["score"] for hit in hits] for hits in results], expected_scores, atol=1e-5)
        for hits in results:
            assert [hit["product_id"] for hit in hits] == [catalogue[hit["index"]]["product_id"] for hit in hits]
            assert "image" not in hits[0] and "embeddings" not in hits[0]


def test_a_catalogue_product_finds_itself_first(index, catalogue):
    for position in (0, 3):
        hits = index.search(image=catalogue[position]["image"], title=catalogue[position]["title"], k=2)
        assert hits[0]["index"] == position and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert hits[0]["score"] >= hits[1]["score"]


def test_batching_does_not_change_results(index):
    titles = TITLES * 2
    index.batch_size = 5
    try:
        large = index.search_batch(titles=titles, k=4)
    finally:
        index.batch_size = 2
    small = index.search_batch(titles=titles, k=4)
    for large_hits, small_hits in zip(large, small):
        assert [hit["index"] for hit in large_hits] == [hit["index"] for hit in small_hits]
        np.testing.assert_allclose([h["score"] for h in large_hits], [h["score"] for h in small_hits], atol=1e-5)


def test_title_catalogue_and_k_larger_than_the_catalogue(catalogue):
    index = ProductSearchIndex.build(tiny_model(), make_processor(), catalogue, embedding="title")
    hits = index.search(title=TITLES[2], k=50)
    assert len(hits) == len(catalogue)
    assert hits[0]["product_id"] == "p2" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_index_over_ready_embeddings():
    generator = np.random.default_rng(0)
    embeddings = generator.standard_normal((200, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    catalogue = datasets.Dataset.from_dict({"product_id": [f"p{i}" for i in range(200)], "embeddings": embeddings})
    index = ProductSearchIndex(catalogue)
    queries = embeddings[[5, 17]] + 0.01 * generator.standard_normal((2, 8)).astype(np.float32)
    results = index.search_embeddings(queries, k=5)
    expected_order, expected_scores = brute_force(embeddings, queries, 5)
    assert [[hit["index"] for hit in hits] for hits in results] == expected_order.tolist()
    assert [hits[0]["product_id"] for hits in results] == ["p5", "p17"]
    np.testing.assert_allclose([[hit["score"] for hit in hits] for hits in results], expected_scores, atol=1e-5)
    with pytest.raises(ValueError, match="without a model"):
        index.search(title="red shoe")


def test_bad_input_gets_a_clear_error(index, catalogue):
    with pytest.raises(ValueError, match="at least one query"):
        index.search_batch()
    with pytest.raises(ValueError, match="2 query images but 1 titles"):
        index.search_batch(images=[png("red"), png("blue")], titles=["red shoe"])
    with pytest.raises(ValueError, match="k must be"):
        index.search(title="red shoe", k=0)
    with pytest.raises(ValueError, match="Cannot decode image: "):
        index.search(image=b"not an image")
    with pytest.raises(ValueError, match="embedding must be one of"):
        ProductSearchIndex.build(index.model, index.processor, catalogue, embedding="text")
    with pytest.raises(ValueError, match="no column"):
        ProductSearchIndex.build(index.model, index.processor, catalogue, title_column="name")
    with pytest.raises(ValueError, match="'embeddings' column"):
        ProductSearchIndex(catalogue)


def unit_rows(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def two_cluster_catalogue(per_cluster: int = 1000, dim: int = 16) -> tuple[datasets.Dataset, np.ndarray]:
    """Sorted by cluster, as catalogues sorted by category are: the first half is all cluster A."""
    generator = np.random.default_rng(0)
    centres = np.eye(dim, dtype=np.float32)[:2] * 12.0
    embeddings = unit_rows(np.repeat(centres, per_cluster, axis=0) + generator.standard_normal((2 * per_cluster, dim)))
    product_ids = [f"p{i}" for i in range(2 * per_cluster)]
    return datasets.Dataset.from_dict({"product_id": product_ids, "embeddings": embeddings}), embeddings


def test_index_factory_trains_on_random_rows_and_reports_recall_against_exact_search():
    catalogue, embeddings = two_cluster_catalogue()
    index = ProductSearchIndex(catalogue, string_factory="IVF2,Flat", train_size=100, search_parameters="nprobe=2")
    # Trained on the first 100 rows (all cluster A), both lists would split A and B would fall into one of them.
    invlists = faiss.extract_index_ivf(index.faiss_index).invlists
    assert sorted(invlists.list_size(i) for i in range(2)) == [1000, 1000]
    queries = unit_rows(embeddings[::97] + 0.1)
    assert index.recall_at_k(queries, k=10) == 1.0  # every list probed: exact
    expected = exact_top_k(catalogue, queries, 10)
    assert [[hit["index"] for hit in hits] for hits in index.search_embeddings(queries, k=10)] == expected.tolist()

    index = ProductSearchIndex(catalogue, string_factory="IVF16,PQ2x4", train_size=2000, search_parameters="nprobe=1")
    recall = index.recall_at_k(queries, k=10)
    assert 0.0 < recall < 1.0  # approximate, and measured as such


def test_saved_index_loads_beside_its_catalogue_with_the_same_results(tmp_path):
    catalogue, embeddings = two_cluster_catalogue(per_cluster=300)
    index = ProductSearchIndex(catalogue, string_factory="HNSW8", search_parameters="efSearch=16")
    queries = unit_rows(embeddings[::31] + 0.05)
    before = index.search_embeddings(queries, k=5)
    index.save(tmp_path / "index")
    assert index.search_embeddings(queries, k=5) == before  # saving leaves the index usable
    loaded = ProductSearchIndex.load(tmp_path / "index")
    assert loaded.string_factory == "HNSW8" and loaded.search_parameters == "efSearch=16"
    assert loaded.search_embeddings(queries, k=5) == before
    assert sorted(set(loaded.catalogue.column_names)) == ["embeddings", "product_id"]


def test_index_factory_bad_input(tmp_path):
    catalogue, _ = two_cluster_catalogue(per_cluster=50)
    with pytest.raises(ValueError, match="cannot build the index 'IVF2,Nonsense'"):
        ProductSearchIndex(catalogue, string_factory="IVF2,Nonsense")
    with pytest.raises(ValueError, match="train_size must be >= 1"):
        ProductSearchIndex(catalogue, string_factory="IVF2,Flat", train_size=0)
    with pytest.raises(ValueError, match="empty"):
        ProductSearchIndex(catalogue.select([]))
    with pytest.raises(FileNotFoundError, match="not a saved ProductSearchIndex"):
        ProductSearchIndex.load(tmp_path)
    ProductSearchIndex(catalogue).save(tmp_path / "a")
    other, _ = two_cluster_catalogue(per_cluster=60)
    ProductSearchIndex(other).save(tmp_path / "b")
    (tmp_path / "a" / "index.faiss").replace(tmp_path / "b" / "index.faiss")
    with pytest.raises(ValueError, match="do not belong together"):
        ProductSearchIndex.load(tmp_path / "b")
