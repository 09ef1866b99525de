# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot product grounding heat maps (paper Sec. 4.2.4, Fig. 4a).

For ad and customer images of a shard catalogue, grounds every pictured product from its title (text prompt) and
from a catalog image of it (image prompt: "find this product in that scene"), ranks candidate boxes (jittered true
boxes and sliding windows) by the score map, and saves one PNG per product: the image, the text-prompt heat map and
the image-prompt heat map side by side, each with the top-ranked box in green and the true box in white::

    python examples/grounding.py --model outputs/eclip-demo --data data/demo --num-images 6 --output outputs/grounding
"""

import argparse
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
from modeling_eclip.data.source import CatalogueSource
from modeling_eclip.grounding_eclip import (
    box_iou,
    candidate_boxes,
    grounding_score_maps,
    overlay_heatmap,
    rank_boxes,
)
from modeling_eclip.processing_eclip import to_rgb_image


def grounding_targets(data: Path, split: str, kinds: list[str], num_images: int) -> list[dict]:
    """Up to `num_images` scene images of `kinds` with, per pictured product, its box, title and a catalog image."""
    source = CatalogueSource(str(data))
    products = {row["product_id"]: row for name in source.split_names() for row in source.iter_products(name)}
    targets = []
    for row in source.iter_products(split):
        for image in row["images"]:
            if image["kind"] not in kinds or len(targets) >= num_images:
                continue
            objects = []
            for box, product_id in zip(image["boxes"], image["box_product_ids"]):
                product = products.get(product_id)
                catalog = [other for other in product["images"] if other["kind"] == "catalog"] if product else []
                if catalog:  # a product of this catalogue with a catalog image to prompt with
                    objects.append({"box": box, "title": product["title"], "prompt": catalog[0]["image"]})
            if objects:
                targets.append(
                    {"name": f"{row['product_id']}-{image['kind']}", "image": image["image"], "objects": objects}
                )
    return targets


def side_by_side(panels: list[Image.Image]) -> Image.Image:
    width, height = panels[0].size
    canvas = Image.new("RGB", (width * len(panels), height), "white")
    for index, panel in enumerate(panels):
        canvas.paste(panel, (index * width, 0))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported ECLIP checkpoint folder (or Hub id)")
    parser.add_argument("--data", default="data/demo", help="a catalogue in the shard format")
    parser.add_argument("--split", default="test")
    parser.add_argument("--kinds", nargs="+", default=["ad", "customer"], choices=("ad", "customer", "catalog"))
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--output", default="outputs/grounding", help="folder for the PNG overlays")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jittered candidate boxes")
    args = parser.parse_args()

    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    hits = {"text": [], "image": []}

    for target in grounding_targets(Path(args.data), args.split, args.kinds, args.num_images):
        # The one decoder: upright by EXIF, transparency on white, errors naming the image.
        scene = to_rgb_image(target["image"], f"the {target['name']} image")
        objects = target["objects"]
        scenes = [scene] * len(objects)
        maps = {
            "text": grounding_score_maps(model, processor, scenes, texts=[o["title"] for o in objects]),
            "image": grounding_score_maps(model, processor, scenes, prompt_images=[o["prompt"] for o in objects]),
        }
        for number, target_object in enumerate(objects):
            true_box = torch.tensor(target_object["box"])
            candidates = candidate_boxes(true_box, scene.size, generator)
            panels, report = [scene], []
            for prompt, prompt_maps in maps.items():
                best = candidates[rank_boxes(prompt_maps[number], candidates)[0]]
                iou = box_iou(best, true_box).item()
                hits[prompt].append(iou)
                panels.append(overlay_heatmap(scene, prompt_maps[number], boxes=torch.stack([best, true_box])))
                report.append(f"{prompt} IoU {iou:.2f}")
            path = output / f"{target['name']}-{number}.png"
            side_by_side(panels).save(path)
            print(f"{path}  {target_object['title']!r}: {', '.join(report)}")

    for prompt, ious in hits.items():
        if ious:
            accuracy = {threshold: sum(iou >= threshold for iou in ious) / len(ious) for threshold in (0.5, 0.7)}
            print(f"{prompt} prompt, {len(ious)} products: Acc@0.5 {accuracy[0.5]:.2f}, Acc@0.7 {accuracy[0.7]:.2f}")


if __name__ == "__main__":
    main()
