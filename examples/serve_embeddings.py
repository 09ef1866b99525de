# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Serving on the exported graphs alone (onnxruntime + faiss, no PyTorch model): embeds a folder of product images
into a faiss index, then answers text or image queries::

    python examples/serve_embeddings.py --onnx outputs/eclip-tiny-demo/onnx --images photos/ --text "red shoe"
    python examples/serve_embeddings.py --onnx outputs/eclip-tiny-demo/onnx --images photos/ --image query.jpg

Catalogue images are embedded with the instance embedding h of each image prompting itself (Sec. 3.4); a text query
with g_T, an image query with h, so both compare with the catalogue by cosine similarity (inner product of
L2-normalised vectors).
"""

import argparse
import pathlib

import faiss

from modeling_eclip.serving import OnnxEmbedder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True, help="a folder written by examples/export_onnx.py")
    parser.add_argument("--images", required=True, help="a folder of product images to index")
    parser.add_argument("--text", action="append", default=[], help="a text query (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="an image query (repeatable)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--int8", action="store_true", help="use the int8-quantised graphs")
    args = parser.parse_args()

    embedder = OnnxEmbedder(args.onnx, int8=args.int8)
    files = sorted(path for path in pathlib.Path(args.images).iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        parser.error(f"{args.images} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    index = faiss.IndexFlatIP(embedder.info["projection_dim"])
    index.add(embedder.embed_products(files))
    print(f"Indexed {index.ntotal} images from {args.images}")

    queries = [(f"text {text!r}", embedder.embed_texts([text])) for text in args.text]
    queries += [(f"image {image}", embedder.embed_products([image])) for image in args.image]
    for name, embedding in queries:
        scores, indices = index.search(embedding, min(args.k, index.ntotal))
        print(name)
        for rank, (score, position) in enumerate(zip(scores[0], indices[0]), 1):
            print(f"  {rank}. {score:.3f}  {files[position].name}")


if __name__ == "__main__":
    main()
