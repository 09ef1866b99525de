# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Serving on the exported graphs alone (onnxruntime + faiss, no PyTorch model): embeds a folder of product images
into a faiss index, then answers text or image queries::

    python examples/serve_embeddings.py --onnx outputs/eclip-tiny-demo/onnx --images photos/ --text "red shoe"
    python examples/serve_embeddings.py --onnx outputs/eclip-tiny-demo/onnx --images photos/ --image query.jpg

Catalogue images are embedded with the instance embedding h of each image prompting itself (Sec. 3.4); a text query
with g_T, an image query with h, so both compare with the catalogue by cosine similarity (inner product of
L2-normalised vectors). Images of the folder that cannot be read are skipped, counted and named on stderr; a query
that cannot be read is an error.
"""

import argparse
import pathlib
import sys

import faiss
import numpy as np

from modeling_eclip.processing_eclip import check_texts, to_rgb_image
from modeling_eclip.serving import OnnxEmbedder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return int(value)


def embed_folder(embedder: OnnxEmbedder, files: list[pathlib.Path]) -> tuple[np.ndarray, list[pathlib.Path]]:
    """The embeddings of the images that decode, a batch at a time, and their files; the others are reported."""
    embeddings, kept, skipped = [], [], []
    for start in range(0, len(files), embedder.batch_size):
        images = []
        for path in files[start : start + embedder.batch_size]:
            try:
                images.append(to_rgb_image(path, path.name))
                kept.append(path)
            except ValueError as error:
                skipped.append(str(error))
        if images:
            embeddings.append(embedder.embed_products(images))
    if skipped:
        print(f"Skipped {len(skipped)} of {len(files)} images that cannot be read:", file=sys.stderr)
        for reason in skipped:
            print(f"  {reason}", file=sys.stderr)
    return (np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32)), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True, help="a folder written by examples/export_onnx.py")
    parser.add_argument("--images", required=True, help="a folder of product images to index")
    parser.add_argument("--text", action="append", default=[], help="a text query (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="an image query (repeatable)")
    parser.add_argument("--k", type=positive_int, default=5, help="how many products to show per query")
    parser.add_argument("--int8", action="store_true", help="use the int8-quantised graphs")
    args = parser.parse_args()

    folder = pathlib.Path(args.images)
    if not folder.is_dir():
        parser.error(f"--images {args.images} is not a folder")
    # Queries are checked before the catalogue is embedded: a typo costs nothing.
    try:
        texts = check_texts(args.text, "--text") if args.text else []
        query_images = [to_rgb_image(image, f"--image {image}") for image in args.image]
    except ValueError as error:
        parser.error(str(error))
    try:
        embedder = OnnxEmbedder(args.onnx, int8=args.int8)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"--onnx: {error}")
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        parser.error(f"{args.images} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    embeddings, files = embed_folder(embedder, files)
    if not files:
        parser.error(f"none of the images in {args.images} can be read")
    index = faiss.IndexFlatIP(embedder.info["projection_dim"])
    index.add(embeddings)
    print(f"Indexed {index.ntotal} images from {args.images}")

    queries = [(f"text {text!r}", embedder.embed_texts([text])) for text in texts]
    queries += [(f"image {name}", embedder.embed_products([image])) for name, image in zip(args.image, query_images)]
    for name, embedding in queries:
        scores, indices = index.search(embedding, min(args.k, index.ntotal))
        print(name)
        for rank, (score, position) in enumerate(zip(scores[0], indices[0]), 1):
            print(f"  {rank}. {score:.3f}  {files[position].name}")


if __name__ == "__main__":
    main()
