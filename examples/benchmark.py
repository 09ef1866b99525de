# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Side-by-side training and inference benchmark of ECLIP vs. its CLIP (ITC-only) baseline, in one run.

Everything is measured in the same process on the same inputs, interleaved repeat by repeat (A, B, A, B, ...) so
that load from other processes on a shared machine hits both sides of every ratio alike:

1. samples/s of an ITC-only training step (the CLIP baseline: same towers, same batch) and of the full ECLIP step
   (all five objectives, momentum model, queue), each forward + backward + fused AdamW step (+ the EMA update);
2. the instance decoder's forward + backward time vs. the image tower's (ViT) forward + backward;
3. achieved FLOP/s of each training step (FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``, i.e.
   matmuls/convolutions/attention, forward + backward) vs. a large matmul of the same dtype timed in this run;
4. inference: instance embeddings/s (image + text -> h, ``get_instance_features``) vs. image + text embeddings/s
   (``get_image_features`` + ``get_text_features``);
5. peak memory of each step: on CUDA ``torch.cuda.max_memory_allocated`` above the pre-step allocation; on CPU the
   peak of live tensor bytes above the pre-step level, from the allocation/free events of ``torch.profiler`` with
   ``profile_memory=True`` (the same quantity as the CUDA figure; process RSS is not used because the C allocator
   keeps freed pages, so RSS deltas after warm-up say little).

Inputs are realistic: random pixels at the preset's image size, product titles in the demo catalogue's templates
encoded by the real MiniLM WordPiece tokenizer (padded to the batch's longest title), duplicate-free product ids.
Times are medians over ``--repeats`` after ``--warmup`` runs, reported with min and max::

    .venv/bin/python examples/benchmark.py --output benchmark.json

With ``--serving-model`` it benchmarks serving instead: embeddings/s of the text, image and instance embedding paths
in eager PyTorch (fp32) vs. onnxruntime on the graphs of ``examples/export_onnx.py`` (fp32 and int8 dynamic
quantisation), interleaved on one batch of real catalogue images and titles, and the zero-shot Acc@1 of each backend
on the catalogue's test products (image + title instance embeddings vs. the categories' text embeddings)::

    .venv/bin/python examples/benchmark.py --serving-model outputs/eclip-tiny-demo/model \
        --serving-onnx outputs/eclip-tiny-demo/onnx --serving-data data/demo --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_eclip import EclipConfig, EclipForPreTraining
from modeling_eclip.demo.products import BRANDS, COLOURS, GOODS_TEMPLATES, SIZES
from modeling_eclip.training.arguments import read_model_config
from modeling_eclip.training.builders import build_processor

PRODUCT_NAMES = (
    "Running Shoe", "Cotton T-Shirt", "Leather Handbag", "Wireless Headphones", "Ceramic Coffee Mug",
    "Backpack", "Wrist Watch", "Sunglasses", "Desk Lamp", "Water Bottle", "Wool Scarf", "Umbrella",
)  # fmt: skip
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Targets per preset: (key, comparison, bound). The tiny preset's are issue 7's (batch 32, bf16 autocast, 2 CPU
# cores); at the paper's sizes the towers dominate, so the bars are relative to the work itself (issue 17): the step
# ratio within 5% of its FLOP-count bound, the decoder a tenth of the ViT, half of the matmul peak achieved.
TINY_TARGETS = (
    ("step_ratio_eclip_vs_itc", ">=", 0.75),
    ("decoder_vs_image_tower", "<=", 0.25),
    ("flops_ratio_eclip_vs_itc", ">=", 1.0),
    ("embedding_ratio_instance_vs_dual", ">=", 0.85),
)
PAPER_TARGETS = (
    ("step_ratio_vs_flop_count_bound", ">=", 0.95),
    ("decoder_vs_image_tower", "<=", 0.10),
    ("eclip_step_fraction_of_matmul_flops_per_s", ">=", 0.5),
    ("embedding_ratio_instance_vs_dual", ">=", 0.85),
)
RATIO_KEYS = (
    "step_ratio_eclip_vs_itc",
    "step_ratio_vs_flop_count_bound",
    "decoder_vs_image_tower",
    "flops_ratio_eclip_vs_itc",
    "eclip_step_fraction_of_matmul_flops_per_s",
    "embedding_ratio_instance_vs_dual",
)
PRESET_TARGETS = {"eclip-tiny": TINY_TARGETS, "eclip-vit-b16": PAPER_TARGETS, "eclip-vit-l16": PAPER_TARGETS}


def load_preset(preset: str) -> EclipConfig:
    """A preset shipped with the package (e.g. `eclip-tiny`) or a path to a config JSON."""
    try:
        return EclipConfig(**read_model_config(preset if Path(preset).is_file() else preset.removesuffix(".json")))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"--preset {preset!r}: {error}") from error


def make_titles(batch_size: int, rng: np.random.Generator) -> list[str]:
    """Product titles of realistic length, in the demo catalogue's templates."""
    titles = []
    for _ in range(batch_size):
        template = GOODS_TEMPLATES[rng.integers(len(GOODS_TEMPLATES))]
        fill = {
            "name": PRODUCT_NAMES[rng.integers(len(PRODUCT_NAMES))],
            "brand": BRANDS[rng.integers(len(BRANDS))],
            "adj": COLOURS[rng.integers(len(COLOURS))],
            "size": SIZES[rng.integers(len(SIZES))],
        }
        titles.append(template.format(**fill))
    return titles


def make_batch(config: EclipConfig, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    """Two random images per product, its title as MiniLM token ids, distinct product ids."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    processor = build_processor(size)
    text = processor(text=make_titles(batch_size, rng), padding=True, return_tensors="pt")
    batch = {
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=generator),
        "positive_pixel_values": torch.randn(batch_size, 3, size, size, generator=generator),
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
        "product_ids": torch.from_numpy(rng.permutation(10 * batch_size)[:batch_size]).long(),
    }
    return {name: value.to(device) for name, value in batch.items()}


def itc_only_config(config: EclipConfig) -> EclipConfig:
    """The CLIP baseline of Table 5: the same model with every objective but L_itc switched off."""
    itc = EclipConfig.from_dict(config.to_dict())
    for name in config.loss_weight_names:
        if name != "itc_loss_weight":
            setattr(itc, name, 0.0)
    return itc


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where this torch build supports it for the device (CPU and CUDA in recent torch)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(parameters, lr=1e-4, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(parameters, lr=1e-4, foreach=device.type == "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Benchmark:
    """Runs named callables interleaved, times them, counts their FLOPs and measures their peak memory."""

    def __init__(self, device: torch.device, dtype: torch.dtype, repeats: int, warmup: int):
        self.device, self.dtype, self.repeats, self.warmup = device, dtype, repeats, warmup

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def time_interleaved(self, functions: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
        """Seconds per call of each function; warm-up calls first, then `repeats` rounds of one call each."""
        for _ in range(self.warmup):
            for function in functions.values():
                function()
        times: dict[str, list[float]] = {name: [] for name in functions}
        for _ in range(self.repeats):
            for name, function in functions.items():
                synchronize(self.device)
                start = time.perf_counter()
                function()
                synchronize(self.device)
                times[name].append(time.perf_counter() - start)
        return times

    def count_flops(self, function: Callable[[], None]) -> int:
        with FlopCounterMode(display=False) as counter:
            function()
        return counter.get_total_flops()

    def peak_memory(self, function: Callable[[], None]) -> int:
        """Peak bytes of live tensors above the level before the call (see the module docstring)."""
        if self.device.type == "cuda":
            synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            function()
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(
            activities=activities, profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            function()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "memory.json"
            with warnings.catch_warnings():  # deprecated in favour of a CUDA-only API; still the CPU route
                warnings.simplefilter("ignore", FutureWarning)
                prof.export_memory_timeline(str(path), device="cpu")
            _, sizes = json.loads(path.read_text())  # bytes per tensor category at every event
        totals = [sum(sizes_at_event) for sizes_at_event in sizes]
        return max(totals) - totals[0]

    def matmul_flops_per_s(self, size: int) -> dict:
        """FLOP/s of a `size` x `size` matmul in the benchmark's dtype (no autocast: the dtype itself)."""
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(self.device, self.dtype)
        b = torch.randn(size, size, generator=generator).to(self.device, self.dtype)
        times = self.time_interleaved({"matmul": lambda: torch.matmul(a, b)})["matmul"]
        return {"size": size, **summarise(times), "flops": 2 * size**3, "flops_per_s": 2 * size**3 / median(times)}


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarise(times: list[float], batch_size: int | None = None) -> dict:
    summary = {"median_s": median(times), "min_s": min(times), "max_s": max(times)}
    if batch_size is not None:
        summary["samples_per_s"] = {
            "median": batch_size / median(times),
            "min": batch_size / max(times),
            "max": batch_size / min(times),
        }
    return summary


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    bench = Benchmark(device, dtype, args.repeats, args.warmup)
    config = load_preset(args.preset)
    batch = make_batch(config, args.batch_size, device, seed=args.seed)
    batch_size = args.batch_size

    itc_config = itc_only_config(config)
    if args.attn_implementation is not None:  # towers and decoder alike (the config setter recurses)
        config._attn_implementation = itc_config._attn_implementation = args.attn_implementation
    torch.manual_seed(args.seed)
    full = EclipForPreTraining(config).to(device).train()
    full.config.check_global_batch_size(batch_size)
    itc = EclipForPreTraining(itc_config).to(device).train()
    itc.load_state_dict(full.state_dict())
    optimizers = {"itc": make_optimizer(itc, device), "eclip": make_optimizer(full, device)}

    def training_step(model: EclipForPreTraining, optimizer: torch.optim.Optimizer) -> None:
        with bench.autocast():
            output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if model.config.uses_decoder_objectives:
            model.momentum_update()
            model.enqueue(output)

    steps = {
        "itc_step": lambda: training_step(itc, optimizers["itc"]),
        "eclip_step": lambda: training_step(full, optimizers["eclip"]),
    }

    # Decoder vs. image tower, both forward + backward under the same autocast, on the step's shapes.
    eclip = full.eclip
    decoder_config = config.decoder_config
    generator = torch.Generator().manual_seed(args.seed)
    num_patches = config.num_patches_per_side**2
    dim = config.projection_dim
    queries = torch.randn(batch_size, decoder_config.num_queries, dim, generator=generator).to(device)
    patches = torch.randn(batch_size, num_patches, dim, generator=generator).to(device)
    queries.requires_grad_(True)
    patches.requires_grad_(True)
    slot_weights = torch.randn(batch_size, decoder_config.num_queries, dim, generator=generator).to(device)
    map_weights = torch.randn(batch_size, num_patches, decoder_config.num_queries, generator=generator).to(device)

    def decoder_step() -> None:
        with bench.autocast():
            output = eclip.decoder(queries, patches, output_assignment_maps=True, return_dict=True)
        # What the objectives use: the final slots (Eq. 8-9) and the last assignment map (Eq. 10).
        loss = (output.last_hidden_state.float() * slot_weights).sum()
        loss = loss + (output.assignment_maps[-1].float() * map_weights).sum()
        loss.backward()
        eclip.decoder.zero_grad(set_to_none=True)
        queries.grad = patches.grad = None

    def image_tower_step() -> None:
        with bench.autocast():
            tokens = eclip.vision_model(pixel_values=batch["pixel_values"], return_dict=True).last_hidden_state
        tokens.float().sum().backward()
        eclip.vision_model.zero_grad(set_to_none=True)

    parts = {"decoder_fwd_bwd": decoder_step, "image_tower_fwd_bwd": image_tower_step}

    @torch.no_grad()
    def instance_embeddings() -> None:
        with bench.autocast():
            eclip.get_instance_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])

    @torch.no_grad()
    def dual_embeddings() -> None:
        with bench.autocast():
            eclip.get_image_features(batch["pixel_values"])
            eclip.get_text_features(batch["input_ids"], batch["attention_mask"])

    embeddings = {"instance_embeddings": instance_embeddings, "image_text_embeddings": dual_embeddings}

    results: dict[str, dict] = {}
    groups = (steps, parts, embeddings)
    for group in groups:
        inference = group is embeddings
        eclip.train(not inference)
        for name, times in bench.time_interleaved(group).items():
            results[name] = summarise(times, batch_size)
        for name, function in group.items():
            results[name]["flops"] = bench.count_flops(function)
            if not inference:
                results[name]["peak_memory_bytes"] = bench.peak_memory(function)
    eclip.train()

    matmul = bench.matmul_flops_per_s(args.matmul_size)
    for result in results.values():
        result["achieved_flops_per_s"] = result["flops"] / result["median_s"]
        result["fraction_of_matmul_flops_per_s"] = result["achieved_flops_per_s"] / matmul["flops_per_s"]

    def ratio(numerator: str, denominator: str, key: str) -> float:
        return results[numerator][key] / results[denominator][key]

    # Every ratio is a speed ratio (> 1: the first named is faster) except decoder_vs_image_tower (a time ratio).
    report = {
        "step_ratio_eclip_vs_itc": ratio("itc_step", "eclip_step", "median_s"),
        "decoder_vs_image_tower": ratio("decoder_fwd_bwd", "image_tower_fwd_bwd", "median_s"),
        "flops_ratio_eclip_vs_itc": ratio("eclip_step", "itc_step", "achieved_flops_per_s"),
        "embedding_ratio_instance_vs_dual": ratio("image_text_embeddings", "instance_embeddings", "median_s"),
    }
    # What each ratio would be if both sides ran at the same FLOP/s: the bound set by the work itself.
    report["flop_count_bounds"] = {
        "step_ratio_eclip_vs_itc": ratio("itc_step", "eclip_step", "flops"),
        "decoder_vs_image_tower": ratio("decoder_fwd_bwd", "image_tower_fwd_bwd", "flops"),
        "embedding_ratio_instance_vs_dual": ratio("image_text_embeddings", "instance_embeddings", "flops"),
    }
    report["step_ratio_vs_flop_count_bound"] = (
        report["step_ratio_eclip_vs_itc"] / report["flop_count_bounds"]["step_ratio_eclip_vs_itc"]
    )
    report["eclip_step_fraction_of_matmul_flops_per_s"] = results["eclip_step"]["fraction_of_matmul_flops_per_s"]
    # A config file of the user's is held to the paper-size bars unless it is a shipped tiny preset.
    targets = PRESET_TARGETS.get(Path(args.preset).stem, PAPER_TARGETS)
    report["targets"] = {
        key: {"target": f"{op} {bound}", "met": report[key] >= bound if op == ">=" else report[key] <= bound}
        for key, op, bound in targets
    }
    report["measurements"] = results
    report["matmul"] = matmul
    report["setup"] = {
        "preset": args.preset,
        "batch_size": batch_size,
        "dtype": args.dtype,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "sequence_length": int(batch["input_ids"].shape[1]),
        "attn_implementation": full.eclip.decoder.config._attn_implementation,
        "optimizer": "AdamW(fused)" if optimizers["eclip"].defaults.get("fused") else "AdamW",
        "torch": torch.__version__,
        "platform": platform.platform(),
        "memory": "CUDA max_memory_allocated" if device.type == "cuda" else "torch.profiler live tensor bytes",
    }
    return report


def format_table(report: dict) -> str:
    """The report as a markdown table: one row per measurement, then the ratios with their targets."""
    setup, results = report["setup"], report["measurements"]
    lines = [
        f"Preset {setup['preset']}, batch {setup['batch_size']}, {setup['dtype']}, {setup['device']} "
        f"({setup['threads']} threads), {setup['attn_implementation']} attention, median of {setup['repeats']} "
        f"(min-max), {setup['optimizer']}",
        "",
        "| measurement | time ms | samples/s | GFLOP | achieved GFLOP/s (share of matmul) | peak memory MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        time_ms = f"{1e3 * result['median_s']:.1f} ({1e3 * result['min_s']:.1f}-{1e3 * result['max_s']:.1f})"
        rate = result["samples_per_s"]
        samples = f"{rate['median']:.1f} ({rate['min']:.1f}-{rate['max']:.1f})"
        flops = f"{result['achieved_flops_per_s'] / 1e9:.1f} ({100 * result['fraction_of_matmul_flops_per_s']:.0f}%)"
        memory = f"{result['peak_memory_bytes'] / 2**20:.0f}" if "peak_memory_bytes" in result else ""
        lines.append(f"| {name} | {time_ms} | {samples} | {result['flops'] / 1e9:.2f} | {flops} | {memory} |")
    matmul = report["matmul"]
    lines.append(
        f"| matmul {matmul['size']}x{matmul['size']} {setup['dtype']} | {1e3 * matmul['median_s']:.1f} | | "
        f"{matmul['flops'] / 1e9:.2f} | {matmul['flops_per_s'] / 1e9:.1f} (100%) | |"
    )
    lines += [
        "",
        "| ratio | value | at equal FLOP/s (FLOP-count bound) | target | met |",
        "| --- | ---: | ---: | ---: | :---: |",
    ]
    for key in RATIO_KEYS:
        bound = report["flop_count_bounds"].get(key)
        bound = f"{bound:.3f}" if bound is not None else ""
        target = report["targets"].get(key)
        met = "" if target is None else "yes" if target["met"] else "no"
        lines.append(f"| {key} | {report[key]:.3f} | {bound} | {target['target'] if target else ''} | {met} |")
    return "\n".join(lines)


SERVING_GRAPHS = ("text", "image", "instance")


def run_serving(args: argparse.Namespace) -> dict:
    """Eager PyTorch vs. onnxruntime fp32 and int8 embeddings/s per graph, and each backend's zero-shot Acc@1."""
    import onnxruntime
    from transformers import AutoModel

    from modeling_eclip.evaluation.search import load_catalogue
    from modeling_eclip.pipeline_eclip import DEFAULT_HYPOTHESIS_TEMPLATE
    from modeling_eclip.serving import EMBEDDING_GRAPHS, OnnxEmbedder

    if args.threads:
        torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as PyTorch
    model = AutoModel.from_pretrained(args.serving_model).eval()
    embedders = {
        "onnxruntime fp32": OnnxEmbedder(args.serving_onnx, session_options=options),
        "onnxruntime int8": OnnxEmbedder(args.serving_onnx, int8=True, session_options=options),
    }
    processor = embedders["onnxruntime fp32"].processor

    @torch.no_grad()
    def eager(graph: str, inputs: dict) -> np.ndarray:
        arguments = [torch.as_tensor(inputs[name]) for name in EMBEDDING_GRAPHS[graph].inputs]
        return EMBEDDING_GRAPHS[graph].module(model)(*arguments).numpy()

    runners = {"pytorch eager fp32": eager} | {name: embedder.run for name, embedder in embedders.items()}
    products = load_catalogue(args.serving_data, "test")
    rows = [index % len(products) for index in range(args.batch_size)]
    chosen = products.select(rows)
    batch = processor(images=list(chosen["image"]), text=list(chosen["title"]), return_tensors="np")

    bench = Benchmark(torch.device("cpu"), torch.float32, args.repeats, args.warmup)
    results: dict[str, dict] = {}
    for graph in SERVING_GRAPHS:
        functions = {name: (lambda run=run, graph=graph: run(graph, batch)) for name, run in runners.items()}
        for name, times in bench.time_interleaved(functions).items():
            results[f"{graph} / {name}"] = summarise(times, args.batch_size)

    def embed(run: Callable, graph: str, images: list | None = None, texts: list | None = None) -> np.ndarray:
        count = len(images if images is not None else texts)
        chunks = []
        for start in range(0, count, args.batch_size):
            inputs = processor(
                images=None if images is None else images[start : start + args.batch_size],
                text=None if texts is None else texts[start : start + args.batch_size],
                return_tensors="np",
            )
            chunks.append(run(graph, inputs))
        embeds = np.concatenate(chunks)
        return embeds / np.linalg.norm(embeds, axis=-1, keepdims=True)

    labels = sorted(set(products["category"]))
    targets = np.array([labels.index(category) for category in products["category"]])
    prompts = [DEFAULT_HYPOTHESIS_TEMPLATE.format(label) for label in labels]
    accuracy = {}
    for name, run in runners.items():
        instances = embed(run, "instance", images=list(products["image"]), texts=list(products["title"]))
        predictions = (instances @ embed(run, "text", texts=prompts).T).argmax(-1)
        accuracy[name] = float((predictions == targets).mean())
    return {
        "serving": results,
        "zero_shot_acc1": accuracy,
        "setup": {
            "model": args.serving_model,
            "onnx": args.serving_onnx,
            "data": args.serving_data,
            "test_products": len(products),
            "categories": len(labels),
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sequence_length": int(batch["input_ids"].shape[1]),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "platform": platform.platform(),
        },
    }


def format_serving_table(report: dict) -> str:
    """The serving report as a markdown table: embeddings/s per graph and backend, speed-up over eager, Acc@1."""
    setup, results, accuracy = report["setup"], report["serving"], report["zero_shot_acc1"]
    lines = [
        f"Batch {setup['batch_size']} of catalogue images and titles ({setup['sequence_length']} tokens), CPU "
        f"({setup['threads']} threads), median of {setup['repeats']} (min-max); zero-shot Acc@1 on "
        f"{setup['test_products']} test products, {setup['categories']} categories",
        "",
        "| graph | backend | time ms | embeddings/s | vs. eager | zero-shot Acc@1 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, result in results.items():
        graph, backend = key.split(" / ")
        eager = results[f"{graph} / pytorch eager fp32"]["median_s"]
        time_ms = f"{1e3 * result['median_s']:.1f} ({1e3 * result['min_s']:.1f}-{1e3 * result['max_s']:.1f})"
        acc = f"{accuracy[backend]:.3f}" if graph == "instance" else ""
        speedup = eager / result["median_s"]
        lines.append(
            f"| {graph} | {backend} | {time_ms} | {result['samples_per_s']['median']:.1f} | {speedup:.2f}x | {acc} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="eclip-tiny", help="a shipped preset (configuration/) or a config JSON")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="autocast dtype (fp32: no autocast)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs per measurement (default 3)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the reference matmul")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--attn-implementation", choices=("eager", "sdpa"), help="attention of towers and decoder (default: sdpa)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the JSON report here")
    parser.add_argument("--serving-model", help="benchmark serving of this checkpoint instead (needs the next two)")
    parser.add_argument("--serving-onnx", help="its graphs from examples/export_onnx.py --int8")
    parser.add_argument("--serving-data", help="a shard catalogue: the batch and the zero-shot test products")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0.")
    if args.serving_model and not (args.serving_onnx and args.serving_data):
        parser.error("--serving-model needs --serving-onnx and --serving-data.")

    if args.serving_model:
        report = run_serving(args)
        print(format_serving_table(report))
    else:
        report = run(args)
        print(format_table(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
