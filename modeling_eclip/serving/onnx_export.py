# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of ECLIP's embedding paths, with dynamic batch size, and an onnxruntime embedder over them.

`export_embedding_graphs(model, processor, output_dir)` writes one ONNX graph per embedding path, through
`torch.onnx.export(dynamo=True)` (torch.export, the maintained exporter), with the batch (and the text length)
dynamic, the processor beside them and `export_info.json` describing them:

* `text.onnx`: `input_ids`, `attention_mask` -> `text_embeds`, g_T(w_cls) (`EclipModel.get_text_features`);
* `image.onnx`: `pixel_values` -> `image_embeds`, g_I(v_cls) (`EclipModel.get_image_features`);
* `instance.onnx`: `pixel_values`, `input_ids`, `attention_mask` -> `instance_embeds`, the instance embedding h of the
  image prompted by its title: the transfer recipe of Sec. 3.4, the positive prompt in slot 0 and the fixed Gaussian
  negative queries in the other T-1 slots (`EclipModel.get_instance_features`);
* `image_instance.onnx`: `pixel_values` -> `instance_embeds`, the same recipe with the image as its own prompt (a
  photo without a title: the query side of "find this product in my photo", and a catalogue without titles).

Outputs are unnormalised, as the PyTorch methods return them; `OnnxEmbedder` L2-normalises. The fixed negatives make
every embedding independent of the other rows of its batch, which a served model needs: a model whose
`negative_query_mode` is `"text"` (the other products of the batch as negatives) is refused.

Not remote code: needs `onnx`, `onnxscript` and `onnxruntime` (the `serving` extra).
"""

import json
import logging
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.output_folder import replacing_output_folder

logger = logging.getLogger(__name__)

EXPORT_INFO_FILE = "export_info.json"
# Example batch of the trace: torch.export specialises sizes 0 and 1, so the traced batch must be at least 2.
_TRACE_BATCH = 2
_TRACE_TEXT_LENGTH = 8


class _TextEmbedding(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)[
            "pooler_output"
        ]


class _ImageEmbedding(_TextEmbedding):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values, return_dict=True)["pooler_output"]


class _InstanceEmbedding(_TextEmbedding):
    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.model.get_instance_features(
            pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        )["pooler_output"]


class _ImageInstanceEmbedding(_TextEmbedding):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_instance_features(pixel_values=pixel_values, return_dict=True)["pooler_output"]


@dataclass(frozen=True)
class ExportedEmbeddingGraph:
    """One exported embedding path: its file stem, the module that computes it, its inputs and its output."""

    name: str
    module: type[nn.Module]
    inputs: tuple[str, ...]
    output: str
    description: str


EMBEDDING_GRAPHS = {
    graph.name: graph
    for graph in (
        ExportedEmbeddingGraph(
            "text", _TextEmbedding, ("input_ids", "attention_mask"), "text_embeds", "g_T(w_cls) of a text"
        ),
        ExportedEmbeddingGraph("image", _ImageEmbedding, ("pixel_values",), "image_embeds", "g_I(v_cls) of an image"),
        ExportedEmbeddingGraph(
            "instance",
            _InstanceEmbedding,
            ("pixel_values", "input_ids", "attention_mask"),
            "instance_embeds",
            "instance embedding h of an image prompted by its title (Sec. 3.4, fixed Gaussian negatives)",
        ),
        ExportedEmbeddingGraph(
            "image_instance",
            _ImageInstanceEmbedding,
            ("pixel_values",),
            "instance_embeds",
            "instance embedding h of an image prompted by itself (Sec. 3.4, fixed Gaussian negatives)",
        ),
    )
}


def _dynamic_shapes(graph: ExportedEmbeddingGraph, max_text_length: int) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1, max=65536)
    sequence = torch.export.Dim("sequence", min=1, max=max_text_length)
    shapes = {
        "pixel_values": {0: batch},
        "input_ids": {0: batch, 1: sequence},
        "attention_mask": {0: batch, 1: sequence},
    }
    return {name: shapes[name] for name in graph.inputs}


def _trace_inputs(model: nn.Module, graph: ExportedEmbeddingGraph) -> tuple[torch.Tensor, ...]:
    config = model.config
    generator = torch.Generator().manual_seed(0)
    size = config.image_size
    vocab_size = config.text_config.vocab_size
    examples = {
        "pixel_values": torch.randn(_TRACE_BATCH, 3, size, size, generator=generator),
        "input_ids": torch.randint(vocab_size, (_TRACE_BATCH, _TRACE_TEXT_LENGTH), generator=generator),
        # Padding in the trace so the mask's path through attention is the general one.
        "attention_mask": torch.tensor([[1] * _TRACE_TEXT_LENGTH, [1] * (_TRACE_TEXT_LENGTH - 3) + [0] * 3]),
    }
    return tuple(examples[name] for name in graph.inputs)


def export_embedding_graphs(
    model: nn.Module,
    processor: Any,
    output_dir: str | os.PathLike,
    graphs: Sequence[str] = tuple(EMBEDDING_GRAPHS),
    quantize_int8: bool = False,
    opset_version: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Exports the embedding paths of an `EclipModel` to `output_dir` as ONNX graphs with dynamic batch size.

    Args:
        model: an `EclipModel` (float32; it is put in eval mode on the CPU).
        processor: its `EclipProcessor`, saved beside the graphs so a service prepares inputs as training did.
        output_dir: where `<graph>.onnx`, the processor files and `export_info.json` go.
        graphs: which of `EMBEDDING_GRAPHS` to export (default all four).
        quantize_int8: also write `<graph>.int8.onnx`, onnxruntime's dynamic int8 quantisation of every weight of
            the MatMul and Gemm nodes (activations are quantised per batch at run time).
        opset_version: ONNX opset (default: the exporter's).
        overwrite: replace a non-empty `output_dir` (refused otherwise); the new export replaces it whole.
    Returns:
        The export info written to `export_info.json`: the graphs with their inputs and outputs, `logit_scale` (the
        learned 1/tau, clamped as the model does, for zero-shot scores) and `projection_dim`.
    """
    unknown = sorted(set(graphs) - set(EMBEDDING_GRAPHS))
    if unknown or not graphs:
        raise ValueError(f"graphs must be a non-empty subset of {sorted(EMBEDDING_GRAPHS)}, got {list(graphs)}.")
    config = model.config
    mode = config.decoder_config.negative_query_mode
    if mode == "text":
        raise ValueError(
            "negative_query_mode='text' makes an instance embedding depend on the other products of its batch, which "
            "a served embedding must not; set model.config.decoder_config.negative_query_mode = 'gaussian' (the "
            "fixed Gaussian negatives of Sec. 3.4) before exporting."
        )
    if model.dtype != torch.float32:
        raise ValueError(f"Export a float32 model (got {model.dtype}); quantise the ONNX graphs instead.")
    # Built beside the output and swapped in whole: no graph of an earlier export (another model, other graphs)
    # survives next to the new ones.
    with replacing_output_folder(output_dir, overwrite) as output_dir:
        model = model.eval().to("cpu")
        # Computes the cached Gaussian negatives eagerly, so the trace sees a constant tensor (Sec. 3.4: fixed).
        model.gaussian_negative_queries  # noqa: B018
        max_text_length = min(config.text_config.max_position_embeddings, processor.tokenizer.model_max_length)

        info = {
            "format": "eclip-onnx-embeddings",
            "projection_dim": config.projection_dim,
            "image_size": config.image_size,
            "negative_query_mode": mode,
            "logit_scale": float(model.logit_scale.detach().clamp(max=config.logit_scale_max).exp()),
            "graphs": {},
        }
        for name in graphs:
            graph = EMBEDDING_GRAPHS[name]
            path = output_dir / f"{name}.onnx"
            logger.info("Exporting %s -> %s", name, path)
            with torch.no_grad():
                program = torch.onnx.export(
                    graph.module(model).eval(),
                    _trace_inputs(model, graph),
                    dynamic_shapes=_dynamic_shapes(graph, max_text_length),
                    input_names=list(graph.inputs),
                    output_names=[graph.output],
                    opset_version=opset_version,
                    dynamo=True,
                    verbose=False,
                )
            program.save(str(path))
            entry = {
                "file": path.name,
                "inputs": list(graph.inputs),
                "output": graph.output,
                "description": graph.description,
            }
            if quantize_int8:
                entry["int8_file"] = quantize_graph(path, output_dir / f"{name}.int8.onnx").name
            info["graphs"][name] = entry
        processor.save_pretrained(output_dir)
        (output_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def quantize_graph(source: str | os.PathLike, target: str | os.PathLike) -> pathlib.Path:
    """onnxruntime's dynamic int8 quantisation of `source` (weights int8, activations per batch) to `target`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = pathlib.Path(target)
    graph = onnx.load(str(source))
    # The exporter's optimiser folds transposes into weights but keeps their old shape annotations, which the
    # quantiser's strict shape inference rejects; inference recomputes them all.
    del graph.graph.value_info[:]
    prepared = target.with_name(target.name + ".prepared")
    onnx.save(graph, str(prepared))
    try:
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return target


class OnnxEmbedder:
    r"""
    L2-normalised ECLIP embeddings from an `export_embedding_graphs` folder, with onnxruntime: the few lines a service
    needs, no PyTorch model.

    `embed_texts(titles)` gives g_T, `embed_images(images)` g_I, `embed_products(images, titles)` the instance
    embedding h (prompted by the titles, or by the images themselves without titles). Instance embeddings of products
    compare with text embeddings of queries or categories, as the zero-shot pipeline does.
    """

    def __init__(
        self,
        export_dir: str | os.PathLike,
        int8: bool = False,
        batch_size: int = 32,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        session_options: Any = None,
    ):
        import onnxruntime

        from ..processing_eclip import EclipProcessor

        export_dir = pathlib.Path(export_dir)
        info_file = export_dir / EXPORT_INFO_FILE
        if not info_file.is_file():
            raise FileNotFoundError(f"{export_dir} has no {EXPORT_INFO_FILE}: export it with export_embedding_graphs.")
        self.info = json.loads(info_file.read_text())
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size
        self.logit_scale = float(self.info["logit_scale"])
        self.processor = EclipProcessor.from_pretrained(export_dir)
        self.sessions = {}
        for name, entry in self.info["graphs"].items():
            if int8 and "int8_file" not in entry:
                raise ValueError(f"{export_dir} has no int8 graph for {name!r}: export with quantize_int8=True.")
            path = export_dir / entry["int8_file" if int8 else "file"]
            self.sessions[name] = onnxruntime.InferenceSession(
                str(path), sess_options=session_options, providers=list(providers)
            )

    def run(self, graph: str, inputs: dict[str, Any]) -> np.ndarray:
        """The raw (unnormalised) output of one graph on ready inputs (numpy or torch), `(batch, projection_dim)`."""
        if graph not in self.sessions:
            raise ValueError(f"This export has no {graph!r} graph; it has {sorted(self.sessions)}.")
        feed = {name: np.asarray(inputs[name]) for name in self.info["graphs"][graph]["inputs"]}
        for name in ("input_ids", "attention_mask"):
            if name in feed:
                feed[name] = feed[name].astype(np.int64)
        return self.sessions[graph].run(None, feed)[0]

    def _embed(self, graph: str, count: int, images: Any = None, texts: Sequence[str] | None = None) -> np.ndarray:
        chunks = []
        for start in range(0, count, self.batch_size):
            inputs = self.processor(
                images=None if images is None else list(images[start : start + self.batch_size]),
                text=None if texts is None else list(texts[start : start + self.batch_size]),
                return_tensors="np",
            )
            chunks.append(self.run(graph, inputs))
        embeds = np.concatenate(chunks).astype(np.float32)
        return embeds / np.linalg.norm(embeds, axis=-1, keepdims=True).clip(min=1e-12)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings g_T, `(len(texts), projection_dim)`."""
        texts = _as_list(texts, "texts")
        return self._embed("text", len(texts), texts=texts)

    def embed_images(self, images: Any) -> np.ndarray:
        """L2-normalised image embeddings g_I, `(len(images), projection_dim)`."""
        images = _as_list(images, "images")
        return self._embed("image", len(images), images=images)

    def embed_products(self, images: Any, titles: Sequence[str] | None = None) -> np.ndarray:
        """L2-normalised instance embeddings h (Sec. 3.4) of products: images prompted by their titles, or by
        themselves where `titles` is None."""
        images = _as_list(images, "images")
        if titles is None:
            return self._embed("image_instance", len(images), images=images)
        titles = _as_list(titles, "titles")
        if len(titles) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(titles)} titles; pass one title per image.")
        return self._embed("instance", len(images), images=images, texts=titles)


def _as_list(values: Any, name: str) -> list[Any]:
    values = [values] if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) else list(values)
    if not values:
        raise ValueError(f"{name} is empty.")
    return values


@torch.no_grad()
def parity(model: nn.Module, embedder: OnnxEmbedder, images: Sequence[Any], titles: Sequence[str]) -> dict[str, float]:
    """Max absolute difference between onnxruntime's and the PyTorch model's raw outputs, per graph, on one batch of
    images and titles (one title per image)."""
    inputs = embedder.processor(images=list(images), text=list(titles), return_tensors="pt")
    differences = {}
    for name in embedder.sessions:
        graph = EMBEDDING_GRAPHS[name]
        arguments = [inputs[input_name] for input_name in graph.inputs]
        expected = graph.module(model.eval()).eval()(*arguments).numpy()
        actual = embedder.run(name, {input_name: inputs[input_name].numpy() for input_name in graph.inputs})
        differences[name] = float(np.abs(actual - expected).max())
    return differences


__all__ = ["EMBEDDING_GRAPHS", "ExportedEmbeddingGraph", "OnnxEmbedder", "export_embedding_graphs", "parity"]
