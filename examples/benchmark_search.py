# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product search at catalogue scale: index build time and queries/s over random product embeddings.

    python examples/benchmark_search.py                      # 1 M products, D=256, flat inner-product index
    python examples/benchmark_search.py --num-products 100000 --string-factory "IVF1024,Flat"

The embeddings are random unit vectors (the model's cost is the same per product whatever the catalogue size and
is measured by examples/benchmark.py); this measures `datasets` + faiss as `ProductSearchIndex` uses them. Each
query's nearest neighbour is planted (a noisy copy of a catalogue vector), so the benchmark also checks the results.
"""

import argparse
import json
import time

import datasets
import faiss
import numpy as np
import pyarrow as pa

from modeling_eclip.evaluation.search import EMBEDDING_COLUMN, ProductSearchIndex


def random_catalogue(num_products: int, dim: int, seed: int) -> tuple[datasets.Dataset, np.ndarray]:
    """A catalogue of `num_products` random unit embeddings (and product ids), built without python lists."""
    generator = np.random.default_rng(seed)
    embeddings = generator.standard_normal((num_products, dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim)
    product_ids = pa.array(np.char.add("product-", np.arange(num_products).astype(str)))
    table = pa.table({"product_id": product_ids, EMBEDDING_COLUMN: column})
    return datasets.Dataset(table), embeddings


def planted_queries(embeddings: np.ndarray, num_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of random catalogue vectors; the copied product should come back first."""
    generator = np.random.default_rng(seed + 1)
    targets = generator.choice(len(embeddings), size=num_queries, replace=False)
    queries = embeddings[targets] + 0.05 * generator.standard_normal((num_queries, embeddings.shape[1]), np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32), targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-products", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256, help="embedding size D (projection_dim)")
    parser.add_argument("--num-queries", type=int, default=300, help="batched queries to time")
    parser.add_argument("--query-batch-size", type=int, default=100)
    parser.add_argument("--single-queries", type=int, default=20, help="one-at-a-time queries to time (latency)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--string-factory", default=None, help="faiss index factory string; default: flat (exact)")
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss' own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)

    start = time.perf_counter()
    catalogue, embeddings = random_catalogue(args.num_products, args.dim, args.seed)
    data_seconds = time.perf_counter() - start

    start = time.perf_counter()
    index = ProductSearchIndex(catalogue, string_factory=args.string_factory)
    build_seconds = time.perf_counter() - start

    queries, targets = planted_queries(embeddings, args.num_queries, args.seed)
    index.search_embeddings(queries[:1], k=args.k)  # warm-up
    start = time.perf_counter()
    results = [
        hits
        for begin in range(0, len(queries), args.query_batch_size)
        for hits in index.search_embeddings(queries[begin : begin + args.query_batch_size], k=args.k)
    ]
    batched_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for query in queries[: args.single_queries]:
        index.search_embeddings(query[None], k=args.k)
    single_seconds = time.perf_counter() - start

    recall_at_1 = float(np.mean([hits[0]["index"] == target for hits, target in zip(results, targets)]))
    numbers = {
        "num_products": args.num_products,
        "dim": args.dim,
        "index": args.string_factory or "Flat (exact inner product)",
        "faiss_threads": faiss.omp_get_max_threads(),
        "catalogue_dataset_seconds": round(data_seconds, 2),
        "index_build_seconds": round(build_seconds, 2),
        "batched_queries_per_second": round(args.num_queries / batched_seconds, 1),
        "query_batch_size": args.query_batch_size,
        "single_query_latency_ms": round(1000 * single_seconds / max(args.single_queries, 1), 2),
        "planted_neighbour_recall_at_1": recall_at_1,
    }
    width = max(len(key) for key in numbers)
    for key, value in numbers.items():
        print(f"{key:<{width}}  {value}")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(numbers, file, indent=2)


if __name__ == "__main__":
    main()
