# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of `EclipModel` / `EclipInstanceDecoder`: what transformers' common model tests check, plus the paper's
equations (Eq. 1-5) against plain loop references."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from helpers import MINILM_DIR, TINY_IMAGE_SIZE, TINY_NUM_QUERIES, TINY_PROJECTION_DIM, tiny_config, tiny_model
from helpers import tiny_pixel_values as pixels
from safetensors.torch import load_file, save_file
from transformers import AutoModel, ViTConfig, ViTModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from modeling_eclip import (
    EclipForPreTraining,
    EclipForPreTrainingOutput,
    EclipModel,
    EclipOutput,
)

ATOL = 1e-5
NUM_PATCHES = (TINY_IMAGE_SIZE // 8) ** 2
OUTPUT_KEYS = ("text_embeds", "image_embeds", "instance_embeds", "grounding_maps", "logits_per_image")


def assert_outputs_close(actual, expected, keys=OUTPUT_KEYS, atol=ATOL):
    for key in keys:
        assert actual[key] is not None and expected[key] is not None, key
        torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


def text_inputs(processor, texts):
    return dict(processor(text=texts))


# ----------------------------------------------------------------------------------------------------------
# Save / load
# ----------------------------------------------------------------------------------------------------------


def test_pretraining_checkpoints_keep_the_0d_logit_scale_both_ways(tmp_path):
    model = EclipForPreTraining(tiny_config())
    with torch.no_grad():
        model.eclip.logit_scale.fill_(3.3)
        model.momentum_eclip.logit_scale.fill_(2.2)
    model.save_pretrained(tmp_path / "pretraining")
    saved = load_file(tmp_path / "pretraining" / "model.safetensors")
    assert saved["eclip.logit_scale"].shape == () and saved["momentum_eclip.logit_scale"].shape == ()
    loaded = EclipForPreTraining.from_pretrained(tmp_path / "pretraining")
    assert loaded.eclip.logit_scale.tolist() == [pytest.approx(3.3)]
    assert loaded.momentum_eclip.logit_scale.tolist() == [pytest.approx(2.2)]
    inference = EclipModel.from_pretrained(tmp_path / "pretraining")  # the online model of a pretraining checkpoint
    assert inference.logit_scale.tolist() == [pytest.approx(3.3)]


def test_save_load_round_trip_is_exact(tmp_path, processor_inputs):
    model = tiny_model(decoder_config={"negative_query_mode": "ema"})
    with torch.no_grad():  # non-default values, so a value that is not saved cannot pass by re-initialisation
        model.logit_scale.fill_(3.3)
        model.ema_negative_queries.copy_(torch.randn(model.ema_negative_queries.shape))
    expected = model(**processor_inputs)
    model.save_pretrained(tmp_path)

    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    saved = load_file(tmp_path / "model.safetensors")
    assert "logit_scale" in saved and "ema_negative_queries" in saved
    assert "gaussian_negative_queries" not in saved  # non-persistent: regenerated from the seed
    # CLIP's 0-d layout on disk (every earlier checkpoint has it), one element in the model (FSDP2 shards no 0-d).
    assert saved["logit_scale"].shape == () and model.logit_scale.shape == (1,)

    loaded = EclipModel.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.dtype == torch.float32
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, loaded_state[name]), name
    for (name, buffer), (_, loaded_buffer) in zip(model.named_buffers(), loaded.named_buffers()):
        assert torch.equal(buffer, loaded_buffer), name
    actual = loaded(**processor_inputs)
    for key in OUTPUT_KEYS:
        assert torch.equal(actual[key], expected[key]), key


def _unrelated_checkpoint(tmp_path, config):
    config.save_pretrained(tmp_path)
    save_file({"unrelated.weight": torch.zeros(2)}, tmp_path / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("source", ["unrelated_checkpoint", "empty_state_dict"])
def test_from_pretrained_with_every_weight_missing_initialises_like_init(tmp_path, source):
    config = tiny_config()
    torch.manual_seed(0)
    fresh = EclipModel(config)
    torch.manual_seed(0)
    if source == "unrelated_checkpoint":
        _unrelated_checkpoint(tmp_path, config)
        loaded = EclipModel.from_pretrained(tmp_path)
    else:  # what transformers' `test_can_init_all_missing_weights` does
        loaded = EclipModel.from_pretrained(None, config=tiny_config(), state_dict={})

    fresh_parameters = dict(fresh.named_parameters())
    assert fresh_parameters.keys() == dict(loaded.named_parameters()).keys()
    for name, parameter in loaded.named_parameters():
        reference = fresh_parameters[name].detach()
        parameter = parameter.detach()
        assert torch.isfinite(parameter).all(), name
        assert parameter.abs().max() < 1.5 or name == "logit_scale", f"{name}: uninitialised values"
        if reference.numel() == 1 or torch.all(reference == reference.flatten()[0]):
            # Constant initialisations (LayerNorm weights, biases, logit scale) must match exactly.
            assert torch.equal(parameter, reference), name
            continue
        # Random initialisations: same distribution as __init__.
        tolerance = 0.5 if reference.numel() < 256 else 0.15
        assert abs(parameter.std() - reference.std()) < tolerance * reference.std(), name
        assert abs(parameter.mean()) < 4 * reference.std() / math.sqrt(reference.numel()) + 1e-3, name
        expected_std = 0.02  # initializer_range, except the slot-attention matrices of Eq. 2-5: N(0, 1/D) (documented)
        slot_attention = (
            "slot_attention.query_proj.weight",
            "slot_attention.output_proj.weight",
            "token_projection.weight",
        )
        if name.endswith(slot_attention):
            expected_std = TINY_PROJECTION_DIM**-0.5
        if name == "decoder.token_projection.weight":  # W_z and W_v of every block
            D = TINY_PROJECTION_DIM
            for part in parameter.view(-1, D, D):
                assert abs(part.std() - expected_std) < 0.15 * expected_std, name
        else:
            assert abs(parameter.std() - expected_std) < tolerance * expected_std, name
        if reference.dim() == 2:  # rows zeroed by __init__ (e.g. the padding embedding) stay zeroed
            assert torch.equal((reference == 0).all(dim=1), (parameter == 0).all(dim=1)), name

    assert loaded.logit_scale.item() == pytest.approx(config.logit_scale_init_value)
    assert torch.equal(loaded.gaussian_negative_queries, fresh.draw_gaussian_negative_queries())
    assert torch.equal(loaded.ema_negative_queries, torch.zeros_like(loaded.ema_negative_queries))
    fresh_buffers = dict(fresh.named_buffers())
    for name, buffer in loaded.named_buffers():
        assert torch.equal(buffer, fresh_buffers[name]), name


@torch.no_grad()
def test_init_weights_can_init_buffers_on_meta(processor_inputs):
    """Built on the meta device, materialised with `to_empty` and re-initialised: every buffer equals `__init__`'s
    and no tensor is left behind on meta (transformers' `test_init_weights_can_init_buffers`)."""
    fresh = tiny_model()
    with torch.device("meta"):
        model = EclipModel(tiny_config())
    model.to_empty(device="cpu")
    model.init_weights()
    model.eval()
    fresh_buffers = dict(fresh.named_buffers())
    assert fresh_buffers.keys() == dict(model.named_buffers()).keys()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, fresh_buffers[name]), name
    assert model.logit_scale.item() == pytest.approx(tiny_config().logit_scale_init_value)
    for name, parameter in model.named_parameters():
        if name != "logit_scale":
            assert torch.isfinite(parameter).all() and parameter.abs().max() < 2.0, name
    output = model(**processor_inputs)
    for key in OUTPUT_KEYS:
        assert torch.isfinite(output[key]).all(), key


def test_from_pretrained_missing_weights_gives_a_working_model(tmp_path, processor_inputs):
    _unrelated_checkpoint(tmp_path, tiny_config())
    loaded = EclipModel.from_pretrained(tmp_path)
    output = loaded(**processor_inputs)
    for key in OUTPUT_KEYS:
        assert torch.isfinite(output[key]).all(), key
    assert output.logits_per_image.abs().max() <= math.exp(tiny_config().logit_scale_init_value) + 1e-4


# ----------------------------------------------------------------------------------------------------------
# Determinism, batching, attention implementations
# ----------------------------------------------------------------------------------------------------------


def test_eval_mode_is_deterministic(model, processor_inputs):
    first = model(**processor_inputs, prompt_pixel_values=pixels(2, seed=5))
    second = model(**processor_inputs, prompt_pixel_values=pixels(2, seed=5))
    for key in OUTPUT_KEYS:
        assert torch.equal(first[key], second[key]), key


def test_dropout_is_active_only_in_training():
    model = tiny_model(text_config={"hidden_dropout_prob": 0.5}, vision_config={"hidden_dropout_prob": 0.5})
    inputs = {"pixel_values": pixels(2), "input_ids": torch.tensor([[101, 2417, 10818, 102]] * 2)}
    assert torch.equal(model(**inputs).instance_embeds, model(**inputs).instance_embeds)
    model.train()
    torch.manual_seed(1)
    first = model(**inputs).instance_embeds
    torch.manual_seed(2)
    assert not torch.allclose(first, model(**inputs).instance_embeds)


@pytest.mark.parametrize("prompt", ["text", "image_prompt", "image_only"])
def test_batch_equals_items_one_by_one(model, processor, prompt):
    texts = ["red shoe", "a blue cotton t-shirt with a round neck and short sleeves", "brown leather bag with strap"]
    images = pixels(3, seed=3)
    prompt_images = pixels(3, seed=4)

    def run(index):
        selected = slice(None) if index is None else slice(index, index + 1)
        chosen = texts if index is None else [texts[index]]
        kwargs = {"pixel_values": images[selected]}
        if prompt != "image_only":
            kwargs.update(text_inputs(processor, chosen))
        if prompt == "image_prompt":
            kwargs["prompt_pixel_values"] = prompt_images[selected]
        return model(**kwargs)

    batched = run(None)
    if prompt != "image_only":
        assert (batched_mask := text_inputs(processor, texts)["attention_mask"]).sum(1).unique().numel() == 3
        assert not batched_mask.all()  # the batch is padded
    keys = ("image_embeds", "instance_embeds", "grounding_maps")
    if prompt != "image_only":
        keys += ("text_embeds",)
    for index in range(3):
        single = run(index)
        for key in keys:
            torch.testing.assert_close(batched[key][index : index + 1], single[key], atol=ATOL, rtol=0, msg=key)


def _attention_spy(monkeypatch):
    calls = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def spy(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return sdpa(module, *args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", spy)
    return calls


def _implementations(model):
    return {
        name: module.config._attn_implementation
        for name, module in (("", model), ("vision", model.vision_model), ("text", model.text_model))
    } | {"decoder": model.decoder.config._attn_implementation}


def test_eager_equals_sdpa_with_padding(tmp_path, processor_inputs, monkeypatch):
    tiny_model().save_pretrained(tmp_path)
    eager = EclipModel.from_pretrained(tmp_path, attn_implementation="eager")
    sdpa = EclipModel.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert set(_implementations(eager).values()) == {"eager"}
    assert set(_implementations(sdpa).values()) == {"sdpa"}
    assert not processor_inputs["attention_mask"].all()

    calls = _attention_spy(monkeypatch)
    eager_output = eager(**processor_inputs, prompt_pixel_values=pixels(2, seed=8))
    assert calls == []
    sdpa_output = sdpa(**processor_inputs, prompt_pixel_values=pixels(2, seed=8))
    assert {"EclipSelfAttention", "ViTAttention", "BertSelfAttention"} <= set(calls)
    assert_outputs_close(sdpa_output, eager_output)


def test_eager_equals_sdpa_when_built_from_config(processor_inputs):
    torch.manual_seed(0)
    eager = EclipModel._from_config(tiny_config(), attn_implementation="eager").eval()
    sdpa = EclipModel._from_config(tiny_config(), attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    assert set(_implementations(eager).values()) == {"eager"}
    assert set(_implementations(sdpa).values()) == {"sdpa"}
    assert_outputs_close(sdpa(**processor_inputs), eager(**processor_inputs))


def test_set_attn_implementation_at_runtime(model, processor_inputs, monkeypatch):
    calls = _attention_spy(monkeypatch)
    reference = model(**processor_inputs)
    assert {"EclipSelfAttention", "ViTAttention", "BertSelfAttention"} <= set(calls)

    model.set_attn_implementation("eager")
    assert set(_implementations(model).values()) == {"eager"}
    calls.clear()
    eager_output = model(**processor_inputs)
    assert calls == []
    assert_outputs_close(eager_output, reference)

    model.set_attn_implementation("sdpa")
    assert set(_implementations(model).values()) == {"sdpa"}
    calls.clear()
    assert_outputs_close(model(**processor_inputs), reference)
    assert "EclipSelfAttention" in calls


def test_output_hidden_states(model, processor_inputs):
    output = model(**processor_inputs, output_hidden_states=True)
    assert len(output.vision_model_output.hidden_states) == 3
    assert len(output.text_model_output.hidden_states) == 3
    decoder_states = output.decoder_output.hidden_states
    assert len(decoder_states) == 3  # H^0 and one per block
    assert torch.equal(decoder_states[0], torch.zeros_like(decoder_states[0]))
    assert len(output.decoder_output.assignment_maps) == 2
    tuple_output = model(**processor_inputs, return_dict=False, output_hidden_states=True)
    assert isinstance(tuple_output, tuple)
    assert torch.equal(tuple_output[0], output.logits_per_image)
    # Tuples all the way down, the towers' and the decoder's outputs too, as CLIP's.
    assert not any(isinstance(value, ModelOutput) for value in tuple_output)
    flat = EclipForPreTrainingOutput(loss=output.logits_per_image, decoder_output=output.decoder_output).to_tuple()
    assert isinstance(flat[1], tuple) and torch.equal(flat[1][0], output.decoder_output.last_hidden_state)


# ----------------------------------------------------------------------------------------------------------
# Training, activation checkpointing, bf16
# ----------------------------------------------------------------------------------------------------------


def _training_loss(model, processor_inputs):
    output = model(**processor_inputs, prompt_pixel_values=pixels(2, seed=6), return_loss=True)
    weights = torch.linspace(-1.0, 1.0, output.instance_embeds.numel()).view_as(output.instance_embeds)
    map_weights = torch.linspace(0.5, 2.0, output.grounding_maps.numel()).view_as(output.grounding_maps)
    return output.loss + (output.instance_embeds * weights).sum() + (output.grounding_maps * map_weights).sum()


def _gradients(model, processor_inputs):
    model.train()
    model.zero_grad()
    _training_loss(model, processor_inputs).backward()
    return {name: parameter.grad for name, parameter in model.named_parameters()}


def _counting(checkpoint, name, calls):
    def counting(*args, **kwargs):
        calls.append(name)
        return checkpoint(*args, **kwargs)

    return counting


@pytest.mark.parametrize("checkpointing", [None, "reentrant", "non_reentrant", "deprecated_alias"])
def test_training_step_updates_every_parameter(processor_inputs, checkpointing):
    reference_gradients = _gradients(tiny_model(), processor_inputs)
    model = tiny_model()
    calls = []
    if checkpointing is not None:
        kwargs = {"use_reentrant": checkpointing == "reentrant"}
        if checkpointing == "deprecated_alias":
            with pytest.warns(FutureWarning):
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_enable(kwargs)
        layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
        assert len(layers) == 6 and all(layer.gradient_checkpointing for layer in layers)
        for layer in layers:
            checkpoint = layer._gradient_checkpointing_func
            assert checkpoint.keywords["use_reentrant"] is kwargs["use_reentrant"]
            layer._gradient_checkpointing_func = _counting(checkpoint, type(layer).__name__, calls)

    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    gradients = _gradients(model, processor_inputs)
    if checkpointing is not None:
        # 2 text layers, 2 vision layers for the images and 2 for the prompt images, 2 decoder blocks.
        assert Counter(calls) == {"BertLayer": 2, "ViTLayer": 4, "EclipDecoderLayer": 2}

    for name, gradient in gradients.items():
        assert gradient is not None, f"{name} gets no gradient"
        assert torch.isfinite(gradient).all(), name
        assert gradient.abs().max() > 0, f"{name} has a zero gradient"
        torch.testing.assert_close(gradient, reference_gradients[name], atol=1e-6, rtol=1e-5, msg=name)
    # Both prompt types were used (image prompt positive, text-type negatives): both type rows learn.
    type_gradient = gradients["query_type_embeddings.weight"]
    assert (type_gradient.abs().sum(dim=1) > 0).all()

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    for name, parameter in model.named_parameters():
        assert not torch.equal(parameter.detach(), before[name]), f"{name} was not updated"


def test_text_prompt_training_reaches_decoder_and_text_tower(processor_inputs):
    model = tiny_model().train()
    output = model(**processor_inputs)
    # Not a plain sum: at init the final LayerNorm's output has zero mean and a fixed norm, so the sum of the
    # normalised instance embedding is a constant.
    directions = torch.randn(output.instance_embeds.shape, generator=torch.Generator().manual_seed(0))
    (output.instance_embeds * directions).sum().backward()
    # With a text prompt the text tower feeds the decoder's queries (Eq. 1).
    assert model.text_projection.weight.grad.abs().max() > 0
    assert model.text_model.embeddings.word_embeddings.weight.grad.abs().max() > 0
    assert model.decoder.token_projection.weight.grad.abs().max() > 0


@torch.no_grad()
def test_bf16_checkpoint_loading(tmp_path, processor_inputs):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    bf16 = EclipModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    assert bf16.gaussian_negative_queries.dtype == torch.bfloat16
    inputs = {**processor_inputs, "pixel_values": processor_inputs["pixel_values"].bfloat16()}
    output = bf16(**inputs)
    expected = model(**processor_inputs)
    for key in ("image_embeds", "text_embeds", "instance_embeds", "grounding_maps"):
        assert torch.isfinite(output[key]).all(), key
        torch.testing.assert_close(output[key].float(), expected[key], atol=5e-2, rtol=0, msg=key)


def test_bf16_autocast_forward_backward(processor_inputs):
    model = tiny_model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**processor_inputs, prompt_pixel_values=pixels(2, seed=6), return_loss=True)
        loss = output.loss + output.instance_embeds.float().sum() + output.grounding_maps.float().sum()
    assert torch.isfinite(loss)
    for key in OUTPUT_KEYS:
        assert torch.isfinite(output[key]).all(), key
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    maps = output.decoder_output.assignment_maps[-1].float()
    torch.testing.assert_close(maps.sum(-1), torch.ones_like(maps.sum(-1)), atol=1e-2, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Public methods
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_get_text_features(model, processor_inputs):
    input_ids, attention_mask = processor_inputs["input_ids"], processor_inputs["attention_mask"]
    output = model.get_text_features(input_ids, attention_mask)
    assert isinstance(output, ModelOutput)
    assert output.last_hidden_state.shape == (2, input_ids.shape[1], 32)
    expected = model.text_projection(output.last_hidden_state[:, 0])
    assert output.pooler_output.shape == (2, TINY_PROJECTION_DIM)
    torch.testing.assert_close(output.pooler_output, expected, atol=0, rtol=0)
    forward = model(input_ids=input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(F.normalize(output.pooler_output, dim=-1), forward.text_embeds, atol=1e-6, rtol=0)
    assert forward.image_embeds is None and forward.instance_embeds is None and forward.logits_per_image is None
    as_tuple = model.get_text_features(input_ids, attention_mask, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], output.last_hidden_state)
    assert any(isinstance(item, torch.Tensor) and torch.equal(item, output.pooler_output) for item in as_tuple)


@torch.no_grad()
def test_get_image_features(model):
    images = pixels(2)
    output = model.get_image_features(images)
    assert isinstance(output, BaseModelOutputWithPooling)
    assert output.last_hidden_state.shape == (2, NUM_PATCHES + 1, 32)
    torch.testing.assert_close(output.pooler_output, model.visual_projection(output.last_hidden_state[:, 0]))
    forward = model(pixel_values=images)
    torch.testing.assert_close(F.normalize(output.pooler_output, dim=-1), forward.image_embeds, atol=1e-6, rtol=0)
    assert forward.text_embeds is None and forward.logits_per_image is None and forward.loss is None
    as_tuple = model.get_image_features(images, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], output.last_hidden_state)
    assert torch.equal(as_tuple[1], output.pooler_output)


@torch.no_grad()
def test_get_features_follow_config_return_dict(model, processor_inputs):
    """Like transformers' `can_return_tuple` methods (CLIP): `config.return_dict=False` gives tuples."""
    model.config.return_dict = False
    assert isinstance(model(**processor_inputs), tuple)
    assert isinstance(model.get_image_features(processor_inputs["pixel_values"]), tuple)
    assert isinstance(model.get_text_features(processor_inputs["input_ids"]), tuple)


@torch.no_grad()
def test_instance_methods_work_when_config_return_dict_is_false(model, processor_inputs):
    images = processor_inputs["pixel_values"]
    expected_maps = model.get_grounding_map(images)
    expected_features = model.get_instance_features(images).pooler_output
    model.config.return_dict = False
    maps = model.get_grounding_map(images)
    torch.testing.assert_close(maps, expected_maps, atol=0, rtol=0)
    features = model.get_instance_features(images)
    pooled = features[1] if isinstance(features, tuple) else features.pooler_output
    torch.testing.assert_close(pooled, expected_features, atol=0, rtol=0)


@torch.no_grad()
def test_get_instance_features(model, processor_inputs):
    images = processor_inputs["pixel_values"]
    text = {key: processor_inputs[key] for key in ("input_ids", "attention_mask")}
    prompt_images = pixels(2, seed=11)

    with_text = model.get_instance_features(images, **text)
    assert isinstance(with_text, BaseModelOutputWithPooling)
    assert with_text.last_hidden_state.shape == (2, TINY_NUM_QUERIES, TINY_PROJECTION_DIM)
    assert with_text.pooler_output.shape == (2, TINY_PROJECTION_DIM)
    torch.testing.assert_close(with_text.pooler_output, with_text.last_hidden_state[:, 0], atol=0, rtol=0)
    forward = model(pixel_values=images, **text)
    torch.testing.assert_close(F.normalize(with_text.pooler_output, dim=-1), forward.instance_embeds, atol=1e-6, rtol=0)

    # An image prompt is encoded by the image tower and typed as an image (Eq. 1).
    with_image_prompt = model.get_instance_features(images, prompt_pixel_values=prompt_images)
    prompt_embeds = model.get_image_features(prompt_images).pooler_output
    patches = model.get_patch_features(images)
    expected = model.decode_instances(patches, prompt_embeds, torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(with_image_prompt.pooler_output, expected.last_hidden_state[:, 0], atol=ATOL, rtol=0)
    as_text_typed = model.decode_instances(patches, prompt_embeds, torch.zeros(2, dtype=torch.long))
    assert not torch.allclose(as_text_typed.last_hidden_state[:, 0], with_image_prompt.pooler_output, atol=1e-4)
    # The prompt image takes precedence over the text.
    both = model.get_instance_features(images, **text, prompt_pixel_values=prompt_images)
    torch.testing.assert_close(both.pooler_output, with_image_prompt.pooler_output, atol=ATOL, rtol=0)

    # Image only: the image's own embedding is the (image-typed) prompt.
    image_only = model.get_instance_features(images)
    own = model.get_image_features(images).pooler_output
    expected = model.decode_instances(patches, own, torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(image_only.pooler_output, expected.last_hidden_state[:, 0], atol=ATOL, rtol=0)
    assert not torch.allclose(image_only.pooler_output, with_text.pooler_output, atol=1e-4)

    # Ready-made prompt embeddings take precedence over everything else.
    explicit = model.get_instance_features(images, **text, prompt_embeds=own)
    expected = model.decode_instances(patches, own, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(explicit.pooler_output, expected.last_hidden_state[:, 0], atol=ATOL, rtol=0)

    as_tuple = model.get_instance_features(images, **text, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[1], with_text.pooler_output)


@torch.no_grad()
def test_get_grounding_map(model, processor_inputs):
    images = processor_inputs["pixel_values"]
    text = {key: processor_inputs[key] for key in ("input_ids", "attention_mask")}
    last = model.get_grounding_map(images, **text)
    assert last.shape == (2, 4, 4)
    assert ((last >= 0) & (last <= 1)).all()
    output = model(pixel_values=images, **text)
    torch.testing.assert_close(last, output.grounding_maps, atol=0, rtol=0)
    maps = output.decoder_output.assignment_maps
    first = model.get_grounding_map(images, **text, layer=0)
    assert first.shape == (2, 4, 4)
    torch.testing.assert_close(first, maps[0][:, :, 0].reshape(2, 4, 4), atol=0, rtol=0)
    assert not torch.allclose(first, last)
    # Patch (row, column) of the map is ViT patch number row * 4 + column.
    assert torch.equal(last[:, 1, 2], maps[-1][:, 1 * 4 + 2, 0])
    single = model.get_grounding_map(images[:1])
    assert single.shape == (1, 4, 4)
    prompted = model.get_grounding_map(images, prompt_pixel_values=pixels(2, seed=12))
    assert prompted.shape == (2, 4, 4)


@torch.no_grad()
def test_get_patch_features(model):
    patches = model.get_patch_features(pixels(3))
    assert patches.shape == (3, NUM_PATCHES, TINY_PROJECTION_DIM)


@torch.no_grad()
def test_forward_returns_everything_from_one_pass(model, processor_inputs):
    calls = []
    handle = model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    output = model(**processor_inputs, return_loss=True)
    handle.remove()
    assert len(calls) == 1  # the image is encoded once for the embeddings, the decoder and the grounding maps
    assert isinstance(output, EclipOutput)
    assert output.text_embeds.shape == output.image_embeds.shape == (2, TINY_PROJECTION_DIM)
    assert output.instance_embeds.shape == (2, TINY_PROJECTION_DIM)
    assert output.grounding_maps.shape == (2, 4, 4)
    assert output.logits_per_image.shape == (2, 2)
    torch.testing.assert_close(output.logits_per_text, output.logits_per_image.t())
    for key in ("text_embeds", "image_embeds", "instance_embeds"):
        torch.testing.assert_close(output[key].norm(dim=-1), torch.ones(2), msg=key)
    scale = model.logit_scale.exp()
    torch.testing.assert_close(output.logits_per_image, scale * output.image_embeds @ output.text_embeds.t())
    labels = torch.arange(2)
    expected_loss = 0.5 * (
        F.cross_entropy(output.logits_per_image, labels) + F.cross_entropy(output.logits_per_text, labels)
    )
    torch.testing.assert_close(output.loss, expected_loss)


@torch.no_grad()
def test_logit_scale_is_clamped(model, processor_inputs):
    model.logit_scale.fill_(10.0)
    output = model(**processor_inputs)
    expected = math.exp(model.config.logit_scale_max) * output.image_embeds @ output.text_embeds.t()
    torch.testing.assert_close(output.logits_per_image, expected)


# ----------------------------------------------------------------------------------------------------------
# Pretrained towers and the decoder alone
# ----------------------------------------------------------------------------------------------------------


def test_from_vision_text_pretrained_with_real_minilm(tmp_path, processor):
    vit_dir = tmp_path / "vit"
    vit_config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    ViTModel(vit_config).save_pretrained(vit_dir)
    decoder_config = {"num_hidden_layers": 2, "num_queries": 4, "num_attention_heads": 2, "intermediate_size": 32}
    model = EclipModel.from_vision_text_pretrained(
        str(vit_dir), str(MINILM_DIR), projection_dim=16, decoder_config=decoder_config
    ).eval()
    assert model.config.text_config.hidden_size == 384
    assert model.config.decoder_config.hidden_size == 16
    assert model.config.decoder_config.num_queries == 4

    minilm = AutoModel.from_pretrained(MINILM_DIR)
    assert torch.equal(model.text_model.embeddings.word_embeddings.weight, minilm.embeddings.word_embeddings.weight)
    minilm_state = minilm.state_dict()
    for name, tensor in model.text_model.state_dict().items():
        assert torch.equal(tensor, minilm_state[name]), name
    vit_state = ViTModel.from_pretrained(vit_dir).state_dict()
    for name, tensor in model.vision_model.state_dict().items():
        assert torch.equal(tensor, vit_state[name]), name

    inputs = dict(processor(text=["red shoe", "a blue cotton t-shirt with a round neck"]))
    assert not inputs["attention_mask"].all()
    with torch.no_grad():
        output = model(pixel_values=pixels(2), **inputs, return_loss=True)
        # The towers compute exactly what the checkpoints compute, padding mask included.
        torch.testing.assert_close(
            output.text_model_output.last_hidden_state[:, 0],
            minilm.eval()(**inputs).last_hidden_state[:, 0],
            atol=ATOL,
            rtol=0,
        )
        alone = model(pixel_values=pixels(2)[:1], **dict(processor(text=["red shoe"])))
    assert output.instance_embeds.shape == (2, 16)
    assert output.grounding_maps.shape == (2, 4, 4)
    assert torch.isfinite(output.loss)
    for key in ("text_embeds", "instance_embeds"):
        torch.testing.assert_close(output[key][:1], alone[key], atol=ATOL, rtol=0, msg=key)
    assert set(_implementations(model).values()) <= {"sdpa", "eager"}, _implementations(model)

    model.save_pretrained(tmp_path / "eclip")
    reloaded = EclipModel.from_pretrained(tmp_path / "eclip")
    with torch.no_grad():
        assert_outputs_close(reloaded(pixel_values=pixels(2), **inputs), output)


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(model, processor_inputs):
    input_ids = processor_inputs["input_ids"]
    with pytest.raises(ValueError, match="return_loss=True needs one text per image"):
        model(pixel_values=pixels(3), input_ids=input_ids, return_loss=True)
    with pytest.raises(ValueError, match="image_size=32"):
        model(pixel_values=pixels(2, size=64), input_ids=input_ids)
    with pytest.raises(ValueError, match="image_size=32"):
        model.get_image_features(pixels(2, size=16))
    with pytest.raises(ValueError, match="at least one modality"):
        model()
    with pytest.raises(ValueError, match="at least one modality"):
        model(attention_mask=processor_inputs["attention_mask"])
    with pytest.raises(ValueError, match="prompt_embeds"):
        model(pixel_values=pixels(2), prompt_embeds=torch.randn(2, 8))
    with pytest.raises(ValueError, match="prompt_embeds"):
        model(pixel_values=pixels(2), prompt_embeds=torch.randn(3, 16))
    with pytest.raises(ValueError, match="prompt_pixel_values"):
        model(pixel_values=pixels(2), prompt_pixel_values=pixels(2, size=64))
    with pytest.raises(ValueError, match="prompt_pixel_values"):
        model(pixel_values=pixels(2), prompt_pixel_values=pixels(3))


def test_tiny_model_is_small(model):
    # The MiniLM vocabulary alone is 30522 x 32 = 977k parameters; everything else must stay tiny.
    word_embeddings = model.text_model.embeddings.word_embeddings.weight.numel()
    assert sum(parameter.numel() for parameter in model.parameters()) - word_embeddings < 100_000
