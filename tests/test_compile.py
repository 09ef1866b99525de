# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`torch.compile(fullgraph=True)` of ECLIP's embedding methods and forward passes: no graph break and the outputs of
eager mode.

A value read inside them (`.item()`, `bool(tensor)`, `int(tensor)`, a shape that depends on the values) makes every
call wait for the device; dynamo breaks the graph at each, and `fullgraph=True` turns the break into an error, so these
tests guard the rule that `forward` checks shapes only (values are checked at the edges, see
`processing_eclip.check_model_inputs`). The graph breaks are dynamo's, whatever the backend, so the "eager" backend
(no AOT tracing, no kernels) keeps the tests fast on CPU.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import make_batch, tiny_config, tiny_model, tiny_pretraining_config
from helpers import tiny_pixel_values as pixels

from modeling_eclip import EclipForObjectDetection, EclipForPreTraining

BACKEND = "eager"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch (no graph or recompilation limit carried over from another test)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled(function):
    return torch.compile(function, fullgraph=True, backend=BACKEND)


@torch.no_grad()
def test_get_image_features_compiles_without_graph_breaks(model):
    inputs = {"pixel_values": pixels(2)}
    torch.testing.assert_close(compiled(model.get_image_features)(**inputs), model.get_image_features(**inputs))


@torch.no_grad()
def test_get_text_features_compiles_without_graph_breaks(model, processor_inputs):
    inputs = {key: processor_inputs[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    torch.testing.assert_close(compiled(model.get_text_features)(**inputs), model.get_text_features(**inputs))


@torch.no_grad()
@pytest.mark.parametrize("prompt", ["text", "image itself", "prompt image", "prompt embeds"])
def test_get_instance_features_compiles_without_graph_breaks(model, processor_inputs, prompt):
    inputs = {"pixel_values": processor_inputs["pixel_values"]}
    if prompt == "text":
        inputs.update({key: processor_inputs[key] for key in ("input_ids", "attention_mask")})
    elif prompt == "prompt image":
        inputs["prompt_pixel_values"] = pixels(2, seed=1)
    elif prompt == "prompt embeds":
        inputs["prompt_embeds"] = F.normalize(pixels(2, seed=2).flatten(1)[:, : model.config.projection_dim], dim=-1)
    expected = model.get_instance_features(**inputs)
    torch.testing.assert_close(compiled(model.get_instance_features)(**inputs), expected)


@torch.no_grad()
@pytest.mark.parametrize("negative_query_mode", ["gaussian", "text", "ema"])
def test_forward_compiles_without_graph_breaks(processor_inputs, negative_query_mode):
    """One text per image (image + title, with L_itc). The Gaussian negatives are first needed inside the compiled
    call (a fresh model), so their move to the device is traced too. (`output_hidden_states` / `output_attentions` are
    left out: transformers collects the towers' outputs with hooks that dynamo cannot trace.)"""
    model = tiny_model(decoder_config={"negative_query_mode": negative_query_mode})
    inputs = {**processor_inputs, "return_loss": True}
    output = compiled(model)(**inputs)
    torch.testing.assert_close(output, model(**inputs))
    assert output.loss is not None and output.grounding_maps.shape == (2, 4, 4)


@torch.no_grad()
def test_forward_with_category_prompts_compiles_without_graph_breaks(model, processor):
    """Texts that are not one per image are only scored (zero-shot classification), each image prompting itself."""
    inputs = {**processor(text=["shoes", "bags", "watches"]), "pixel_values": pixels(2)}
    output = compiled(model)(**inputs)
    torch.testing.assert_close(output, model(**inputs))
    assert output.logits_per_image.shape == (2, 3)


@pytest.mark.parametrize("negative_prompt_sampling", ["random", "hard"])
def test_pretraining_forward_compiles_without_graph_breaks(negative_prompt_sampling):
    """A training step's forward with every objective on: the same losses as eager under the same random draws."""
    torch.manual_seed(0)
    model = EclipForPreTraining(tiny_pretraining_config(negative_prompt_sampling=negative_prompt_sampling)).train()
    batch = make_batch(torch.arange(8))
    torch.manual_seed(1)
    output = compiled(model)(**batch)
    torch.manual_seed(1)
    expected = model(**batch)
    for name in ("loss", "loss_itc", "loss_inter", "loss_itm", "loss_intra", "loss_entropy", "enqueue_embeds"):
        torch.testing.assert_close(output[name], expected[name], msg=name)


@torch.no_grad()
def test_object_detection_forward_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = EclipForObjectDetection(tiny_config(num_labels=3)).eval()
    inputs = {"pixel_values": pixels(2)}
    torch.testing.assert_close(compiled(model)(**inputs), model(**inputs))
