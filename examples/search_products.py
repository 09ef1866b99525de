# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product search over a shard catalogue with ECLIP embeddings and a faiss index (paper Sec. 4.2.3).

Builds an index of the catalogue's catalog images (image + title instance embeddings), then answers queries from
customer photos of the same products: by image, by title, and by image + title. Own queries with `--title` and/or
`--image`::

    python examples/search_products.py --model outputs/eclip-demo --data data/demo
    python examples/search_products.py --model outputs/eclip-demo --title "red running shoe" --image photo.jpg
"""

import argparse
import time

from transformers import AutoModel, AutoProcessor

import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
from modeling_eclip.evaluation.search import ProductSearchIndex, load_catalogue


def show(name: str, hits: list[dict], expected: str | None = None) -> None:
    print(name)
    for rank, hit in enumerate(hits, 1):
        mark = " <- the query's product" if hit["product_id"] == expected else ""
        print(f"  {rank}. {hit['score']:.3f}  {hit['product_id']}  {hit['title']!r} [{hit['category']}]{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported ECLIP checkpoint folder (or Hub id)")
    parser.add_argument("--data", default="data/demo", help="a catalogue in the shard format")
    parser.add_argument("--split", default="test")
    parser.add_argument("--gallery-source", default=None, help="index catalog images of this source only")
    parser.add_argument("--num-queries", type=int, default=3, help="customer photos to print results for")
    parser.add_argument("--title", default=None, help="your own query title")
    parser.add_argument("--image", default=None, help="your own query image")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    catalogue = load_catalogue(args.data, args.split, kind="catalog", source=args.gallery_source)
    start = time.perf_counter()
    index = ProductSearchIndex.build(model, processor, catalogue, batch_size=args.batch_size)
    print(f"Indexed {len(index)} products in {time.perf_counter() - start:.1f} s\n")

    if args.title is not None or args.image is not None:
        show(f"Query: title={args.title!r}, image={args.image!r}", index.search(args.image, args.title, k=args.k))
        return

    photos = load_catalogue(args.data, args.split, kind="customer")
    for photo in photos.select(range(min(args.num_queries, len(photos)))):
        expected = photo["product_id"]
        show(f"Customer photo of {expected} (image):", index.search(image=photo["image"], k=args.k), expected)
        show(f"Its title {photo['title']!r}:", index.search(title=photo["title"], k=args.k), expected)
        show("Image + title:", index.search(image=photo["image"], title=photo["title"], k=args.k), expected)
        print()

    # How often the photographed product is among the top k, over every customer photo (a quick check; the full
    # metrics are in examples/evaluate_eclip.py).
    results = index.search_batch(images=list(photos["image"]), k=args.k)
    ranks = [
        [hit["product_id"] for hit in hits].index(expected) if expected in {hit["product_id"] for hit in hits} else None
        for hits, expected in zip(results, photos["product_id"])
    ]
    recall_1 = sum(rank == 0 for rank in ranks) / len(ranks)
    recall_k = sum(rank is not None for rank in ranks) / len(ranks)
    print(f"Customer photos -> catalogue, {len(ranks)} queries: R@1 {recall_1:.3f}, R@{args.k} {recall_k:.3f}")


if __name__ == "__main__":
    main()
