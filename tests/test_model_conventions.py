# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What transformers' common model tests (`ModelTesterMixin`) and CLIP users expect of the ECLIP classes: attention
outputs, a model that is the same however it is built, `main_input_name`, and CLIP-style logits that serve the stock
`zero-shot-image-classification` pipeline."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    TINY_IMAGE_SIZE,
    TINY_NUM_QUERIES,
    make_batch,
    make_processor,
    run_without_package,
    tiny_config,
    tiny_model,
    tiny_pretraining_config,
)
from helpers import tiny_pixel_values as pixels
from PIL import Image
from transformers import AutoModelForZeroShotImageClassification, pipeline
from transformers.initialization import no_init_weights

from modeling_eclip import EclipForPreTraining, EclipInstanceDecoder, EclipModel

NUM_PATCHES = (TINY_IMAGE_SIZE // 8) ** 2
TEXTS = ["red shoe", "a blue cotton t-shirt with a round neck"]


# ----------------------------------------------------------------------------------------------------------
# output_attentions reaches the decoder
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_decoder_returns_self_and_slot_attentions(attn_implementation):
    model = EclipModel(tiny_config(attn_implementation=attn_implementation)).eval()
    decoder, batch = model.decoder, 3
    assert decoder.config._attn_implementation == attn_implementation
    queries, tokens = torch.randn(batch, TINY_NUM_QUERIES, 16), torch.randn(batch, NUM_PATCHES, 16)
    output = decoder(queries, tokens, output_attentions=True, output_assignment_maps=True)
    layers, heads = decoder.config.num_hidden_layers, decoder.config.num_attention_heads
    assert len(output.attentions) == len(output.cross_attentions) == layers
    for attention, slots, assignment in zip(output.attentions, output.cross_attentions, output.assignment_maps):
        assert attention.shape == (batch, heads, TINY_NUM_QUERIES, TINY_NUM_QUERIES)
        torch.testing.assert_close(attention.sum(-1), torch.ones(batch, heads, TINY_NUM_QUERIES))
        # DETR layout (batch, heads, queries, tokens), one head: the assignment M of Eq. 3, which sums to 1 over T.
        assert slots.shape == (batch, 1, TINY_NUM_QUERIES, NUM_PATCHES)
        torch.testing.assert_close(slots[:, 0], assignment.transpose(1, 2))
        torch.testing.assert_close(slots.sum(2), torch.ones(batch, 1, NUM_PATCHES))
    # Asking for the weights changes nothing else, and without asking there are none.
    plain = decoder(queries, tokens)
    torch.testing.assert_close(output.last_hidden_state, plain.last_hidden_state, atol=1e-5, rtol=0)
    assert plain.attentions is None and plain.cross_attentions is None
    assert len(decoder(queries, tokens, output_attentions=True, return_dict=False)) == 3


@torch.no_grad()
def test_model_and_pretraining_pass_output_attentions_and_hidden_states_on(processor_inputs):
    model = tiny_model(attn_implementation="eager")
    output = model(**processor_inputs, output_attentions=True, output_hidden_states=True)
    decoder_layers = model.config.decoder_config.num_hidden_layers
    assert len(output.decoder_output.attentions) == decoder_layers
    assert len(output.decoder_output.cross_attentions) == decoder_layers
    assert len(output.decoder_output.hidden_states) == decoder_layers + 1
    assert len(output.vision_model_output.attentions) == model.config.vision_config.num_hidden_layers
    assert len(output.text_model_output.attentions) == model.config.text_config.num_hidden_layers
    decoded = model.decode_instances(
        torch.randn(2, NUM_PATCHES, 16), torch.randn(2, 16), torch.zeros(2, dtype=torch.long), output_attentions=True
    )
    assert len(decoded.attentions) == decoder_layers

    torch.manual_seed(0)
    pretrainer = EclipForPreTraining(tiny_pretraining_config(attn_implementation="eager")).train()
    out = pretrainer(**make_batch([1, 2, 3, 4]), output_attentions=True, output_hidden_states=True)
    assert len(out.decoder_output.attentions) == decoder_layers
    assert len(out.vision_model_output.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    assert len(out.text_model_output.attentions) == model.config.text_config.num_hidden_layers
    # Not asked: a training step keeps no tower or decoder outputs alive.
    plain = pretrainer(**make_batch([1, 2, 3, 4]))
    assert plain.vision_model_output is None and plain.text_model_output is None and plain.decoder_output is None


# ----------------------------------------------------------------------------------------------------------
# The same model however it is built
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    model = tiny_model(seed=3)
    model.save_pretrained(directory)
    processor = make_processor()
    inputs = dict(processor(images=[Image.new("RGB", (40, 30), "red")] * 2, text=TEXTS))
    with torch.no_grad():
        expected = model(**inputs).instance_embeds
    return directory, inputs, expected


def _state(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def _built_without_init(directory):
    with no_init_weights():
        model = EclipModel(tiny_config())
    model.load_state_dict(EclipModel.from_pretrained(directory).state_dict())
    return model


def _built_empty_then_dispatched(directory):
    from accelerate import init_empty_weights, load_checkpoint_and_dispatch

    with init_empty_weights():
        model = EclipModel(tiny_config())
    # The safetensors keep the towers' original names; from_pretrained converts them, so load through it once.
    converted = directory / "converted"
    if not converted.exists():
        EclipModel.from_pretrained(directory).save_pretrained(converted, save_original_format=False)
    return load_checkpoint_and_dispatch(model, str(converted / "model.safetensors"), device_map={"": "cpu"})


def _loaded_with_device_map(directory):
    return EclipModel.from_pretrained(directory, device_map="cpu")


@torch.no_grad()
@pytest.mark.parametrize("build", [_built_without_init, _built_empty_then_dispatched, _loaded_with_device_map])
def test_instance_embeddings_do_not_depend_on_how_the_model_was_built(saved_model, build):
    directory, inputs, expected = saved_model
    model = build(directory).eval()
    torch.testing.assert_close(model(**inputs).instance_embeds, expected, atol=1e-6, rtol=0)


def test_gaussian_negatives_are_derived_even_on_the_meta_device():
    with torch.device("meta"):
        model = EclipModel(tiny_config())
    assert model.gaussian_negative_queries.is_meta
    model.to_empty(device="cpu")
    assert torch.equal(model.gaussian_negative_queries, model.draw_gaussian_negative_queries())
    # No other ECLIP buffer depends on _init_weights alone: each is in the state dict, which load_state_dict fills
    # (the towers' own buffers are transformers' business).
    for module_class in (EclipModel, EclipForPreTraining):
        built = module_class(tiny_config())
        own = {name for name, _ in built.named_buffers() if "vision_model." not in name and "text_model." not in name}
        assert own and own <= set(built.state_dict()), own - set(built.state_dict())


def test_gaussian_negatives_first_drawn_under_inference_mode_serve_training():
    torch.manual_seed(0)
    pretrainer = EclipForPreTraining(tiny_pretraining_config()).train()
    with torch.inference_mode():
        cached = pretrainer.eclip.gaussian_negative_queries  # cached here first
    # A normal tensor: an inference tensor in the cache would fail any later op that autograd saves or updates it.
    assert not cached.is_inference()
    torch.testing.assert_close(cached, pretrainer.eclip.draw_gaussian_negative_queries(), atol=0, rtol=0)
    loss = pretrainer(**make_batch([1, 2, 3, 4])).loss
    loss.backward()
    assert pretrainer.eclip.gaussian_negative_queries is cached  # the training step used the cached tensor
    assert torch.isfinite(loss) and pretrainer.eclip.query_position_embeddings.weight.grad is not None


# ----------------------------------------------------------------------------------------------------------
# main_input_name
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [EclipModel, EclipForPreTraining, EclipInstanceDecoder])
def test_main_input_name_is_the_first_input_of_forward(model_class):
    first = list(inspect.signature(model_class.forward).parameters)[1]
    assert model_class.main_input_name == first


def test_activation_checkpointing_reads_the_main_input():
    torch.manual_seed(0)
    pretrainer = EclipForPreTraining(tiny_pretraining_config()).train()
    pretrainer.activation_checkpointing_enable()
    # transformers hooks the input embeddings to require grads only when the main input is input_ids; the images
    # come first here, so the text tower's embeddings are left alone.
    assert getattr(pretrainer, "_require_grads_hook", None) is None
    pretrainer(**make_batch([1, 2, 3, 4])).loss.backward()


# ----------------------------------------------------------------------------------------------------------
# CLIP-style logits
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_images_against_any_number_of_texts_give_clip_style_logits(model, processor):
    labels = ["a photo of a shoe.", "a photo of a shirt.", "a photo of a bag."]
    images = pixels(2, seed=5)
    text = dict(processor(text=labels))
    output = model(pixel_values=images, **text)
    assert output.logits_per_image.shape == (2, 3)
    torch.testing.assert_close(output.logits_per_text, output.logits_per_image.t())
    image = F.normalize(model.get_image_features(images).pooler_output, dim=-1)
    texts = F.normalize(model.get_text_features(**text).pooler_output, dim=-1)
    torch.testing.assert_close(output.logits_per_image, model.logit_scale.exp() * image @ texts.t())
    # The labels are not product texts: each image prompts its own decoder, as without text.
    torch.testing.assert_close(output.instance_embeds, model(pixel_values=images).instance_embeds)
    # As CLIPModel is called by users: one image, several texts.
    single = model(pixel_values=images[:1], **text)
    torch.testing.assert_close(single.logits_per_image, output.logits_per_image[:1])


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clip_style")
    tiny_model().save_pretrained(directory)
    make_processor().save_pretrained(directory)
    Image.new("RGB", (40, 30), "red").save(directory / "image.png")
    return directory


def _expected_scores(directory, labels, template):
    model = EclipModel.from_pretrained(directory).eval()
    processor = make_processor()
    inputs = processor(images=Image.open(directory / "image.png"), text=[template.format(x) for x in labels])
    with torch.no_grad():
        return model(**inputs).logits_per_image[0].softmax(-1)


def test_stock_zero_shot_image_classification_pipeline_runs_on_an_eclip_checkpoint(saved_checkpoint):
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(saved_checkpoint), EclipModel)
    classifier = pipeline("zero-shot-image-classification", model=str(saved_checkpoint))
    labels = ["shoe", "shirt", "bag"]
    result = classifier(str(saved_checkpoint / "image.png"), candidate_labels=labels)
    expected = _expected_scores(saved_checkpoint, labels, "This is a photo of {}.")
    scores = {entry["label"]: entry["score"] for entry in result}
    torch.testing.assert_close(torch.tensor([scores[label] for label in labels]), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_stock_pipeline_loads_the_checkpoint_as_remote_code(saved_checkpoint, tmp_path):
    script = """
import sys
from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model=sys.argv[1], trust_remote_code=True)
result = classifier(sys.argv[1] + "/image.png", candidate_labels=["shoe", "shirt", "bag"])
assert type(classifier.model).__name__ == "EclipModel", type(classifier.model)
assert abs(sum(entry["score"] for entry in result) - 1) < 1e-5, result
"""
    run_without_package(script, saved_checkpoint, tmp_path)
