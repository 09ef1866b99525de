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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.output_folder import replacing_output_folder
from ..processing_eclip import DEFAULT_MAX_TEXT_LENGTH, check_texts, to_rgb_images
from .export_info import EXPORT_FORMAT, EXPORT_INFO_FILE, read_export_info

logger = logging.getLogger(__name__)

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
    graphs = [graphs] if isinstance(graphs, str) else list(graphs)
    unknown = sorted(set(graphs) - set(EMBEDDING_GRAPHS))
    if unknown or not graphs:
        raise ValueError(f"graphs must be a non-empty subset of {sorted(EMBEDDING_GRAPHS)}, got {graphs}.")
    if not hasattr(model, "get_instance_features") or not hasattr(getattr(model, "config", None), "decoder_config"):
        raise ValueError(f"export_embedding_graphs exports an EclipModel, got {type(model).__name__}.")
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ValueError(f"processor must be the model's EclipProcessor, got {type(processor).__name__}.")
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
            "format": EXPORT_FORMAT,
            "projection_dim": config.projection_dim,
            "image_size": config.image_size,
            "num_channels": config.vision_config.num_channels,
            # What the embedder checks token ids and lengths against (onnxruntime's own errors name graph nodes).
            "vocab_size": config.text_config.vocab_size,
            "max_text_length": max_text_length,
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

    The embedder is an edge of the library: `export_info.json` is checked as it is read, images and texts as the
    processor and the PyTorch model check them, and `run`'s ready inputs before onnxruntime sees them (onnxruntime
    would embed NaN pixels as NaN, read a negative token id from the end of the vocabulary, and fail on the rest with
    errors about graph nodes). Errors are ValueErrors naming the file or the input.
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.info = read_export_info(info_file, {name: graph.inputs for name, graph in EMBEDDING_GRAPHS.items()})
        self.batch_size = batch_size
        self.logit_scale = float(self.info["logit_scale"])
        try:
            self.processor = EclipProcessor.from_pretrained(export_dir)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{export_dir} has no usable processor ({error}); export the model again (examples/export_onnx.py)."
            ) from error
        tokenizer = self.processor.tokenizer
        # Exports before these were recorded: the tokenizer's bounds, and onnxruntime's errors past them.
        if "vocab_size" not in self.info or "max_text_length" not in self.info:
            logger.warning(
                "%s predates vocab_size and max_text_length; token ids are checked against the tokenizer instead. "
                "Export again to record the model's.",
                info_file,
            )
        self.vocab_size = self.info.get("vocab_size", len(tokenizer))
        self.max_text_length = self.info.get("max_text_length", tokenizer.model_max_length)
        self.num_channels = self.info.get("num_channels", 3)
        self.pad_token_id = tokenizer.pad_token_id
        providers = [providers] if isinstance(providers, str) else list(providers)  # one name, not its letters
        names = [provider[0] if isinstance(provider, (tuple, list)) else provider for provider in providers]
        unknown = [name for name in names if name not in onnxruntime.get_available_providers()]
        if unknown or not names:
            # onnxruntime would only warn and fall back to the CPU.
            raise ValueError(
                f"providers {unknown or providers} are not available in this onnxruntime; it has "
                f"{onnxruntime.get_available_providers()}."
            )
        self.sessions = {}
        for name, entry in self.info["graphs"].items():
            if int8 and "int8_file" not in entry:
                raise ValueError(f"{export_dir} has no int8 graph for {name!r}: export with quantize_int8=True.")
            path = export_dir / entry["int8_file" if int8 else "file"]
            if not path.is_file():
                raise ValueError(f"{path}, listed in {info_file} for the {name!r} graph, is missing; export again.")
            try:
                self.sessions[name] = onnxruntime.InferenceSession(
                    str(path), sess_options=session_options, providers=providers
                )
            except Exception as error:  # onnxruntime's errors derive from Exception only
                raise ValueError(f"onnxruntime cannot load {path}: {error}; export again.") from error

    def run(self, graph: str, inputs: Mapping[str, Any]) -> np.ndarray:
        """The raw (unnormalised) output of one graph on ready inputs (numpy or torch, as the processor gives
        them), `(batch, projection_dim)`.

        The inputs are checked as the PyTorch model checks its own: float pixels `(batch, channels, size, size)`,
        finite; integer token ids of the vocabulary, at most the exported text length; an attention mask of 0 and
        1 of their shape, attending to at least one token a row. Without `attention_mask` the texts are taken as
        unpadded and given one of ones, as the PyTorch model does without one; token ids holding the padding id
        are refused then, since attending to the padding would change their embeddings silently.
        """
        if graph not in self.sessions:
            raise ValueError(f"This export has no {graph!r} graph; it has {sorted(self.sessions)}.")
        if not isinstance(inputs, Mapping):
            raise ValueError(f"inputs must be a dict of input name to array, got {type(inputs).__name__}.")
        needed = self.info["graphs"][graph]["inputs"]
        feed = {}
        for name in needed:
            if name in inputs:
                feed[name] = _as_array(inputs[name], name)
            elif name != "attention_mask" or "input_ids" not in inputs:
                raise ValueError(f"the {graph!r} graph takes {', '.join(needed)}; {name} is missing.")
        token_types = inputs.get("token_type_ids")
        if "input_ids" in feed and token_types is not None and _as_array(token_types, "token_type_ids").any():
            # The graphs embed every token as segment 0, as the processor gives them; other values would be dropped.
            raise ValueError("The exported graphs take no token_type_ids; texts are embedded as all zeros.")
        if "pixel_values" in feed:
            feed["pixel_values"] = self._checked_pixels(feed["pixel_values"])
        if "input_ids" in feed:
            feed["input_ids"], feed["attention_mask"] = self._checked_text(
                feed["input_ids"], feed.get("attention_mask")
            )
        if "pixel_values" in feed and "input_ids" in feed and len(feed["pixel_values"]) != len(feed["input_ids"]):
            raise ValueError(
                f"Got {len(feed['pixel_values'])} pixel_values rows but {len(feed['input_ids'])} input_ids rows; "
                "pass one text per image."
            )
        try:
            return self.sessions[graph].run(None, feed)[0]
        except Exception as error:  # past the checks above: name the graph and the shapes it was given
            shapes = {name: value.shape for name, value in feed.items()}
            raise ValueError(f"onnxruntime cannot run the {graph!r} graph on inputs {shapes}: {error}") from error

    def _checked_pixels(self, pixels: np.ndarray) -> np.ndarray:
        size, channels = self.info["image_size"], self.num_channels
        if pixels.ndim != 4 or pixels.shape[1:] != (channels, size, size):
            raise ValueError(
                f"pixel_values must be (batch, {channels}, {size}, {size}) for this export's image_size={size}, got "
                f"{pixels.shape}; prepare images with the export's processor (embed_images does)."
            )
        if len(pixels) == 0:
            raise ValueError(f"pixel_values is an empty batch {pixels.shape}: pass at least one image.")
        if not np.issubdtype(pixels.dtype, np.floating):
            # Raw 0-255 pixels would run as if normalised and give plausible-looking nonsense.
            raise ValueError(
                f"pixel_values has dtype {pixels.dtype}: the graph takes rescaled and normalised float pixels; run the "
                "images through the export's processor."
            )
        if not np.isfinite(pixels).all():
            rows = np.flatnonzero(~np.isfinite(pixels.reshape(len(pixels), -1)).all(axis=1)).tolist()
            raise ValueError(f"pixel_values has NaN or infinite values (rows {rows[:10]}).")
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def _checked_text(self, input_ids: np.ndarray, attention_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if input_ids.ndim != 2:
            hint = "; add the batch dimension (input_ids[None])" if input_ids.ndim == 1 else ""
            raise ValueError(f"input_ids must be (batch, sequence_length), got shape {input_ids.shape}{hint}.")
        if input_ids.size == 0:
            raise ValueError(f"input_ids is empty, shape {input_ids.shape}: pass at least one tokenized text.")
        if not np.issubdtype(input_ids.dtype, np.integer):
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}.")
        if input_ids.shape[1] > self.max_text_length:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens, more than this export's max_text_length="
                f"{self.max_text_length}; tokenize with truncation (as the export's processor does)."
            )
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"input_ids must lie in [0, {self.vocab_size}), got values in [{low}, {high}].")
        if attention_mask is None:
            if self.pad_token_id is not None and (input_ids == self.pad_token_id).any():
                raise ValueError(
                    f"input_ids hold the padding id {self.pad_token_id} but no attention_mask says which tokens are "
                    "padding; pass the processor's attention_mask."
                )
            attention_mask = np.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {input_ids.shape}, got {attention_mask.shape}."
            )
        if attention_mask.dtype.kind not in "biuf" or not np.isin(attention_mask, (0, 1)).all():
            raise ValueError("attention_mask holds 0 and 1 (1: a token to attend to), got other values.")
        empty = np.flatnonzero(attention_mask.sum(axis=1) == 0).tolist()
        if empty:
            raise ValueError(f"row {empty[0]} of attention_mask attends to no token; each text needs at least one.")
        return input_ids.astype(np.int64), attention_mask.astype(np.int64)

    def _embed(self, graph: str, images: list[Any] | None = None, texts: list[str] | None = None) -> np.ndarray:
        count = len(images if images is not None else texts)
        # The processor's 55 tokens (Sec. 4.1), unless the exported text tower takes fewer.
        text_kwargs = {"max_length": min(DEFAULT_MAX_TEXT_LENGTH, self.max_text_length)}
        chunks = []
        for start in range(0, count, self.batch_size):
            inputs = self.processor(
                images=None if images is None else images[start : start + self.batch_size],
                text=None if texts is None else texts[start : start + self.batch_size],
                return_tensors="np",
                **(text_kwargs if texts is not None else {}),
            )
            chunks.append(self.run(graph, inputs))
        embeds = np.concatenate(chunks).astype(np.float32)
        return embeds / np.linalg.norm(embeds, axis=-1, keepdims=True).clip(min=1e-12)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings g_T, `(len(texts), projection_dim)`; errors name `texts[i]`."""
        return self._embed("text", texts=check_texts(texts, "texts"))

    def embed_images(self, images: Any) -> np.ndarray:
        """L2-normalised image embeddings g_I, `(len(images), projection_dim)`; errors name `images[i]`."""
        return self._embed("image", images=to_rgb_images(images, "images"))

    def embed_products(self, images: Any, titles: Sequence[str] | None = None) -> np.ndarray:
        """L2-normalised instance embeddings h (Sec. 3.4) of products: images prompted by their titles, or by
        themselves where `titles` is None; errors name `images[i]` / `titles[i]`."""
        images = to_rgb_images(images, "images")
        if titles is None:
            return self._embed("image_instance", images=images)
        titles = check_texts(titles, "titles")
        if len(titles) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(titles)} titles; pass one title per image.")
        return self._embed("instance", images=images, texts=titles)


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array or a tensor: {error}") from None
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array or tensor, got an array of objects (ragged rows?).")
    return array


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
