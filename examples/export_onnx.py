# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Exports an ECLIP checkpoint's embedding paths to ONNX for serving (`modeling_eclip.serving`).

Writes `text.onnx` (g_T), `image.onnx` (g_I), `instance.onnx` (h of image + title, Sec. 3.4 with the fixed Gaussian
negatives) and `image_instance.onnx` (h of an image prompting itself), all with dynamic batch size, the processor and
`export_info.json`; `--int8` adds dynamically quantised copies. `--check-data` then compares onnxruntime with the
PyTorch model on catalogue images and titles at batch sizes 1 and 7 (fewer if the test split is smaller) and prints
the largest absolute differences::

    python examples/export_onnx.py --model outputs/eclip-tiny-demo/model --output outputs/eclip-tiny-demo/onnx \\
        --int8 --check-data data/demo

`--model` is a checkpoint folder or a Hub id (`owner/name`); a path that does not exist is an error, not a Hub id.
"""

import argparse
import json
import os
import pathlib

from transformers import AutoModel, AutoProcessor

import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
from modeling_eclip.data.output_folder import check_output_folder
from modeling_eclip.evaluation.search import load_catalogue
from modeling_eclip.serving import EMBEDDING_GRAPHS, OnnxEmbedder, export_embedding_graphs
from modeling_eclip.serving.onnx_export import parity

PARITY_BATCH_SIZES = (1, 7)


def looks_local(value: str) -> bool:
    """A path, not a Hub id: absolute, relative to `.` / `..` / `~`, or more than the one `/` of `owner/name`."""
    return (
        os.path.isabs(value)
        or value.startswith((".", "~"))
        or "\\" in value
        or value.count("/") > 1
        or value.endswith("/")
    )


def model_location(parser: argparse.ArgumentParser, value: str) -> str:
    """`value` as a checkpoint folder, or as a Hub id when it is not a path; errors say what is missing."""
    path = pathlib.Path(value).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            parser.error(f"--model {value} has no config.json: pass an ECLIP checkpoint folder (save_pretrained's)")
        return str(path)
    if looks_local(value):
        parser.error(f"no model at {value}: that folder does not exist (a Hub id is 'owner/name')")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an ECLIP checkpoint folder or Hub id")
    parser.add_argument("--output", required=True, help="where the ONNX graphs and the processor go")
    parser.add_argument("--graphs", nargs="+", default=list(EMBEDDING_GRAPHS), choices=list(EMBEDDING_GRAPHS))
    parser.add_argument("--int8", action="store_true", help="also write dynamically int8-quantised graphs")
    parser.add_argument("--check-data", default=None, help="a shard catalogue whose test images check parity")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output (refused otherwise)")
    args = parser.parse_args()

    # Everything that can be wrong with the arguments is said before the minutes of the export.
    model_name = model_location(parser, args.model)
    try:
        check_output_folder(args.output, args.overwrite)
    except FileExistsError as error:
        parser.error(f"--output: {error}")
    products = None
    if args.check_data:
        try:
            products = load_catalogue(args.check_data, "test")
        except (FileNotFoundError, ValueError) as error:
            parser.error(f"--check-data {args.check_data}: {error}")
        products = products.select(range(min(max(PARITY_BATCH_SIZES), len(products))))
    try:
        model = AutoModel.from_pretrained(model_name)
        processor = AutoProcessor.from_pretrained(model_name)
    except (OSError, ValueError) as error:
        parser.error(f"cannot load --model {args.model}: {error}")
    try:
        info = export_embedding_graphs(
            model, processor, args.output, graphs=args.graphs, quantize_int8=args.int8, overwrite=args.overwrite
        )
    except (ValueError, FileExistsError) as error:
        parser.error(f"cannot export --model {args.model}: {error}")
    print(f"Exported {', '.join(info['graphs'])} to {args.output}")
    if products is not None:
        embedder = OnnxEmbedder(args.output)
        sizes = sorted({min(size, len(products)) for size in PARITY_BATCH_SIZES})
        report = {
            f"batch {size}": parity(model, embedder, products["image"][:size], products["title"][:size])
            for size in sizes
        }
        print("Max |onnxruntime - PyTorch| per graph:")
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
