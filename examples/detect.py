# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Detect products in an image with a fine-tuned ECLIP detection checkpoint (transformers' object-detection
pipeline) and draw the boxes with their labels and scores:

    python examples/detect.py photo.png --model outputs/detection-eclip/model --output detections.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw
from transformers import pipeline

import modeling_eclip  # noqa: F401  (registers EclipForObjectDetection with AutoModelForObjectDetection)
from modeling_eclip.processing_eclip import to_rgb_image

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#808000")


def draw_detections(image: Image.Image, detections: list[dict]) -> Image.Image:
    """A copy of the image with each detection's box and "label score" drawn on it."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    for index, detection in enumerate(detections):
        box = detection["box"]
        colour = COLOURS[index % len(COLOURS)]
        corners = (box["xmin"], box["ymin"], box["xmax"], box["ymax"])
        draw.rectangle(corners, outline=colour, width=max(1, round(min(canvas.size) / 150)))
        caption = f"{detection['label']} {detection['score']:.2f}"
        left, top, right, bottom = draw.textbbox((box["xmin"], box["ymin"]), caption)
        draw.rectangle((left, top, right, bottom), fill=colour)
        draw.text((box["xmin"], box["ymin"]), caption, fill="white")
    return canvas


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="An image path, URL or base64 string.")
    parser.add_argument("--model", default="outputs/detection-eclip/model", help="A fine-tuned detection export.")
    parser.add_argument("--threshold", type=float, default=0.5, help="Lowest score drawn.")
    parser.add_argument("--output", default="detections.png", help="Where the drawing is written.")
    args = parser.parse_args(argv)
    # Before any loading: a score above 1 (or NaN) would silently draw nothing, an unknown format fail at the end.
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold is a score in [0, 1], got {args.threshold}")
    if Path(args.output).suffix.lower() not in Image.registered_extensions():
        parser.error(f"--output {args.output}: no image format for its extension; name a .png or .jpg file")
    image = to_rgb_image(args.image)
    # The export names its own pipeline in config.json (the package's image decoder, not transformers' load_image),
    # which transformers builds only with trust_remote_code=True; it carries the code, so no install is needed.
    detector = pipeline("object-detection", model=args.model, trust_remote_code=True)
    detections = detector(image, threshold=args.threshold)
    draw_detections(image, detections).save(args.output)
    print(json.dumps(detections, indent=2))
    print(f"{len(detections)} detections drawn on {args.output}")
    return detections


if __name__ == "__main__":
    main()
