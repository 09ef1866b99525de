# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product search at catalogue scale: index build time, memory per product, queries/s and recall@10 against exact
search, over synthetic clustered product embeddings.

    python examples/benchmark_search.py                                   # 1 M products, D=256, exact (Flat)
    python examples/benchmark_search.py --string-factory HNSW32 --search-parameters efSearch=64
    python examples/benchmark_search.py --num-products 10000000 --string-factory "IVF4096,PQ32,Refine(SQ8)" \\
        --train-size 200000 --search-parameters "nprobe=16,k_factor_rf=16" "nprobe=32,k_factor_rf=16"

The embeddings are clustered like a catalogue's (products of one category near one another: `--clusters` centres,
each product its centre plus Gaussian noise of `--spread` times the centre's norm, unit length; at the default 0.5 two
products of one category have a cosine of about 0.8, at 1.0 about 0.5), and the queries are new products drawn the
same way. Each `--search-parameters` setting is timed and scored on the same index.
They are written in chunks to an Arrow file and memory-mapped as a `datasets.Dataset`, as `ProductSearchIndex.load`
does, so the raw vectors of 10 M products (10 GB at D=256) need not fit in memory; only the index does. The model's
cost per product does not depend on the catalogue size and is measured by examples/benchmark.py.
"""

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import datasets
import faiss
import numpy as np
import pyarrow as pa

from modeling_eclip.evaluation.search import EMBEDDING_COLUMN, ProductSearchIndex, exact_top_k

GENERATION_CHUNK = 500_000


def clustered_embeddings(count: int, centres: np.ndarray, generator: np.random.Generator, spread: float) -> np.ndarray:
    """`count` unit vectors, each a random centre plus Gaussian noise whose expected norm is `spread` x the centre's."""
    dim = centres.shape[1]
    vectors = centres[generator.integers(len(centres), size=count)]
    vectors += generator.standard_normal((count, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def write_catalogue(
    path: Path, num_products: int, centres: np.ndarray, generator: np.random.Generator, spread: float
) -> datasets.Dataset:
    """Writes the catalogue in chunks as an Arrow stream file and memory-maps it back."""
    dim = centres.shape[1]
    schema = pa.schema([("product_id", pa.int64()), (EMBEDDING_COLUMN, pa.list_(pa.float32(), dim))])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, num_products, GENERATION_CHUNK):
            count = min(GENERATION_CHUNK, num_products - start)
            vectors = clustered_embeddings(count, centres, generator, spread)
            column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
            writer.write_table(pa.table({"product_id": np.arange(start, start + count), EMBEDDING_COLUMN: column}))
    return datasets.Dataset.from_file(str(path))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def index_bytes(index: object, folder: Path) -> int:
    path = folder / "index.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def time_search(
    index: ProductSearchIndex, queries: np.ndarray, exact: np.ndarray, parameters: str | None, args: argparse.Namespace
) -> dict:
    """Queries/s (batched), one-query latency and recall@k against `exact` under one faiss run-time setting."""
    if parameters:
        faiss.ParameterSpace().set_index_parameters(index.faiss_index, parameters)
    index.search_embeddings(queries[:1], k=args.k)  # warm-up
    start = time.perf_counter()
    for begin in range(0, len(queries), args.query_batch_size):
        index.search_embeddings(queries[begin : begin + args.query_batch_size], k=args.k)
    batched_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for query in queries[: args.single_queries]:
        index.search_embeddings(query[None], k=args.k)
    single_seconds = time.perf_counter() - start
    recall = index.recall_at_k(queries, args.k, exact=exact)  # exact search done once for every setting
    return {
        "search_parameters": parameters or "default",
        "batched_queries_per_second": round(len(queries) / batched_seconds, 1),
        "single_query_latency_ms": round(1000 * single_seconds / max(args.single_queries, 1), 2),
        f"recall_at_{args.k}_vs_exact": round(recall, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-products", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256, help="embedding size D (projection_dim)")
    parser.add_argument("--clusters", type=int, default=10_000, help="centres of the synthetic catalogue")
    parser.add_argument("--string-factory", default="Flat", help="faiss index factory string")
    parser.add_argument("--spread", type=float, default=0.5, help="noise norm / centre norm of a product's embedding")
    parser.add_argument(
        "--search-parameters", nargs="*", default=[None], help='faiss run-time settings to compare, e.g. "nprobe=16"'
    )
    parser.add_argument("--train-size", type=int, default=200_000, help="random products an index is trained on")
    parser.add_argument("--num-queries", type=int, default=1000, help="queries for queries/s and recall@k")
    parser.add_argument("--query-batch-size", type=int, default=100)
    parser.add_argument("--single-queries", type=int, default=50, help="one-at-a-time queries to time (latency)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss' own)")
    parser.add_argument("--workdir", default=None, help="where the memory-mapped catalogue is written (a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if not args.spread > 0:
        parser.error(f"--spread must be > 0, got {args.spread}")
    for name in ("num_products", "dim", "clusters", "num_queries", "query_batch_size", "k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)

    generator = np.random.default_rng(args.seed)
    centres = generator.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        start = time.perf_counter()
        catalogue = write_catalogue(work / "catalogue.arrow", args.num_products, centres, generator, args.spread)
        data_seconds = time.perf_counter() - start
        rss_before = peak_rss_gib()

        start = time.perf_counter()
        index = ProductSearchIndex(
            catalogue, string_factory=args.string_factory, train_size=args.train_size, seed=args.seed
        )
        build_seconds = time.perf_counter() - start
        size = index_bytes(index.faiss_index, work)

        queries = clustered_embeddings(args.num_queries, centres, generator, args.spread)
        start = time.perf_counter()
        exact = exact_top_k(catalogue, queries, args.k)
        exact_seconds = time.perf_counter() - start
        settings = [time_search(index, queries, exact, parameters, args) for parameters in args.search_parameters]

    bytes_per_product = size / args.num_products
    needs_no_training = faiss.index_factory(args.dim, args.string_factory, faiss.METRIC_INNER_PRODUCT).is_trained
    numbers = {
        "num_products": args.num_products,
        "dim": args.dim,
        "spread": args.spread,
        "index": args.string_factory,
        "trained_on_products": 0 if needs_no_training else min(args.train_size, args.num_products),
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
        "catalogue_write_seconds": round(data_seconds, 1),
        "index_build_seconds": round(build_seconds, 1),
        "index_bytes_per_product": round(bytes_per_product, 1),
        "index_gib": round(size / 2**30, 3),
        "index_gib_at_100m_products": round(bytes_per_product * 1e8 / 2**30, 1),
        "peak_rss_gib_before_index": round(rss_before, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "exact_search_seconds_for_recall": round(exact_seconds, 1),
        "query_batch_size": args.query_batch_size,
    }
    for setting in settings:
        for key, value in setting.items():
            numbers[f"{setting['search_parameters']}: {key}"] = value
    width = max(len(key) for key in numbers)
    for key, value in numbers.items():
        print(f"{key:<{width}}  {value}")
    if args.output:
        Path(args.output).write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
