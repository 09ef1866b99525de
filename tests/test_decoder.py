# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of the instance decoder (`EclipInstanceDecoder`, Sec. 3.2, Eq. 2-5) against reference implementations written
from the equations, of the instance queries (Eq. 1) and negative queries (Sec. 3.4, Table 6) `EclipModel` builds for
it, and of the decoder as a model of its own. `EclipModel` as a whole: `test_modeling.py`."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_IMAGE_SIZE, TINY_NUM_QUERIES, TINY_PROJECTION_DIM, tiny_model
from helpers import tiny_pixel_values as pixels
from transformers import AutoModel

from modeling_eclip import EclipDecoderConfig, EclipDecoderOutput, EclipInstanceDecoder, EclipModel

ATOL = 1e-5
NUM_PATCHES = (TINY_IMAGE_SIZE // 8) ** 2


# ----------------------------------------------------------------------------------------------------------
# The decoder follows Eq. 2-5
# ----------------------------------------------------------------------------------------------------------


def reference_decoder(decoder, queries, tokens):
    """Eq. 2-5 with loops over tokens i and queries t, then MSA + FFN (pre-LN), H^0 = 0, final LayerNorm."""
    config = decoder.config
    D, T, N, B = config.hidden_size, queries.shape[1], tokens.shape[1], queries.shape[0]
    heads, head_dim = config.num_attention_heads, D // config.num_attention_heads
    W_all, b_all = decoder.token_projection.weight, decoder.token_projection.bias
    slots, maps = [torch.zeros(B, T, D)], []
    H = torch.zeros(B, T, D)
    for block, layer in enumerate(decoder.layers):
        sa = layer.slot_attention
        W_z, b_z = W_all[2 * block * D : (2 * block + 1) * D], b_all[2 * block * D : (2 * block + 1) * D]
        W_v, b_v = W_all[(2 * block + 1) * D : (2 * block + 2) * D], b_all[(2 * block + 1) * D : (2 * block + 2) * D]
        new_H = torch.empty_like(H)
        block_maps = torch.empty(B, N, T)
        for b in range(B):
            Zn = F.layer_norm(tokens[b], (D,), decoder.token_layernorm.weight, decoder.token_layernorm.bias, 1e-6)
            Kz = [Zn[i] @ W_z.T + b_z for i in range(N)]
            Vz = [Zn[i] @ W_v.T + b_v for i in range(N)]
            q_side = [
                sa.query_proj(F.layer_norm(queries[b, t] + H[b, t], (D,), sa.query_layernorm.weight,
                                           sa.query_layernorm.bias, 1e-6))
                for t in range(T)
            ]  # fmt: skip
            M = torch.empty(N, T)
            for i in range(N):
                scores = torch.stack([torch.dot(Kz[i], q_side[t]) / math.sqrt(D) for t in range(T)])  # Eq. 2
                M[i] = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()  # Eq. 3
            block_maps[b] = M
            for t in range(T):
                weight_sum = sum(M[i, t] for i in range(N))
                delta = sum(M[i, t] * Vz[i] for i in range(N)) / (weight_sum + config.slot_attention_epsilon)  # Eq. 4
                new_H[b, t] = H[b, t] + sa.output_proj(delta)  # Eq. 5
        H = new_H
        # Multi-head self-attention over the T slots, then the FFN, each a pre-LN residual branch.
        attention = layer.self_attention
        X = layer.self_attention_layernorm(H)
        q, k, v = attention.q_proj(X), attention.k_proj(X), attention.v_proj(X)
        out = torch.empty_like(H)
        for b in range(B):
            head_outputs = []
            for h in range(heads):
                part = slice(h * head_dim, (h + 1) * head_dim)
                probabilities = torch.softmax(q[b, :, part] @ k[b, :, part].T / math.sqrt(head_dim), dim=-1)
                head_outputs.append(probabilities @ v[b, :, part])
            out[b] = torch.cat(head_outputs, dim=-1)
        H = H + attention.o_proj(out)
        H = H + layer.mlp.fc2(F.gelu(layer.mlp.fc1(layer.mlp_layernorm(H))))
        slots.append(H)
        maps.append(block_maps)
    return decoder.layernorm(H), slots, maps


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_decoder_follows_equations_2_to_5(attn_implementation):
    config = EclipDecoderConfig(
        hidden_size=16, num_hidden_layers=2, num_queries=4, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    decoder = EclipInstanceDecoder._from_config(config, attn_implementation=attn_implementation).eval()
    for parameter in decoder.parameters():  # non-trivial LayerNorm affine parameters and biases
        parameter.add_(0.05 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    queries = 4 * torch.randn(2, 4, 16, generator=generator)
    tokens = torch.randn(2, 9, 16, generator=generator)

    output = decoder(queries, tokens, output_hidden_states=True, output_assignment_maps=True)
    assert isinstance(output, EclipDecoderOutput)
    expected_last, expected_slots, expected_maps = reference_decoder(decoder, queries, tokens)

    torch.testing.assert_close(output.last_hidden_state, expected_last, atol=ATOL, rtol=0)
    assert len(output.hidden_states) == len(expected_slots) == 3
    for actual, expected in zip(output.hidden_states, expected_slots):
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    assert len(output.assignment_maps) == 2
    for actual, expected in zip(output.assignment_maps, expected_maps):
        assert actual.shape == (2, 9, 4)
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    # Eq. 3: every token's assignment is a distribution over the T queries, and the queries compete.
    final_map = output.assignment_maps[-1]
    torch.testing.assert_close(final_map.sum(-1), torch.ones(2, 9), atol=1e-6, rtol=0)
    assert final_map.max() > 0.3 and final_map.min() < 0.2

    as_tuple = decoder(queries, tokens, output_assignment_maps=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], output.last_hidden_state)


def test_decoder_gradients_follow_equations_2_to_5():
    """The decoder applies W_z and W_v on the slot side (associativity) instead of to every token: its gradients
    with respect to every parameter and both inputs must still be those of the loop reference, which projects every
    token z_i by W_z and W_v as Eq. 2 and 4 are written. A slot that gets almost no token exercises the epsilon."""
    config = EclipDecoderConfig(
        hidden_size=16, num_hidden_layers=2, num_queries=4, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    decoder = EclipInstanceDecoder._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for parameter in decoder.parameters():  # non-trivial LayerNorm affine parameters and biases
            parameter.add_(0.05 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    queries = 4 * torch.randn(2, 4, 16, generator=generator)
    queries[:, -1] = -queries[:, 0]  # an anti-aligned query: its slot receives (almost) no token
    tokens = torch.randn(2, 9, 16, generator=generator)
    slot_weights = torch.randn(2, 4, 16, generator=generator)
    map_weights = torch.randn(2, 9, 4, generator=generator)

    def gradients(decode):
        inputs = [queries.clone().requires_grad_(), tokens.clone().requires_grad_()]
        last, slots, maps = decode(*inputs)
        loss = (last * slot_weights).sum() + (slots[1] * slot_weights).sum()
        loss = loss + sum((block_map * map_weights).sum() for block_map in maps)
        parameters = list(decoder.parameters())
        return torch.autograd.grad(loss, inputs + parameters)

    def optimised(q, z):
        output = decoder(q, z, output_hidden_states=True, output_assignment_maps=True)
        return output.last_hidden_state, output.hidden_states, output.assignment_maps

    names = ["queries", "tokens"] + [name for name, _ in decoder.named_parameters()]
    actual, expected = gradients(optimised), gradients(lambda q, z: reference_decoder(decoder, q, z))
    for name, got, want in zip(names, actual, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=name)
    assert actual[names.index("token_projection.weight")].abs().max() > 0


@torch.no_grad()
def test_forward_feeds_the_decoder_eq1_queries_and_projected_patches(model, processor_inputs):
    output = model(**processor_inputs, output_hidden_states=True)
    patches = model.get_patch_features(processor_inputs["pixel_values"])
    vision_tokens = output.vision_model_output.last_hidden_state
    # Z = g_I(v_1..v_N): the patch tokens go through the image projection of v_cls (Sec. 3.1-3.2).
    torch.testing.assert_close(patches, model.visual_projection(vision_tokens[:, 1:]), atol=0, rtol=0)
    text = model.get_text_features(processor_inputs["input_ids"], processor_inputs["attention_mask"]).pooler_output
    positive = F.normalize(text, dim=-1) * math.sqrt(TINY_PROJECTION_DIM)
    negatives = model.draw_gaussian_negative_queries().expand(2, -1, -1)
    queries = model.build_instance_queries(positive, torch.zeros(2, dtype=torch.long), negatives)
    expected_last, expected_slots, expected_maps = reference_decoder(model.decoder, queries, patches)
    torch.testing.assert_close(output.decoder_output.last_hidden_state, expected_last, atol=ATOL, rtol=0)
    torch.testing.assert_close(output.instance_embeds, F.normalize(expected_last[:, 0], dim=-1), atol=ATOL, rtol=0)
    torch.testing.assert_close(output.grounding_maps, expected_maps[-1][:, :, 0].reshape(2, 4, 4), atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Eq. 1 instance queries and negative queries
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_build_instance_queries_eq1(model):
    T, D, B = TINY_NUM_QUERIES, TINY_PROJECTION_DIM, 4
    torch.nn.init.normal_(model.query_type_embeddings.weight)
    torch.nn.init.normal_(model.query_position_embeddings.weight)
    positives = torch.randn(B, D)
    negatives = torch.randn(B, T - 1, D)
    positive_types = torch.tensor([0, 1, 1, 0])
    negative_types = torch.tensor([[0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    slots = torch.tensor([0, 1, 2, 3])
    queries = model.build_instance_queries(positives, positive_types, negatives, negative_types, slots)
    assert queries.shape == (B, T, D)
    position = model.query_position_embeddings.weight
    kind = model.query_type_embeddings.weight
    for b in range(B):
        r = int(slots[b])
        negative_index = 0
        for t in range(T):
            if t == r:
                expected = positives[b] + position[t] + kind[positive_types[b]]
            else:  # negatives fill the other slots in their original order
                expected = negatives[b, negative_index] + position[t] + kind[negative_types[b, negative_index]]
                negative_index += 1
            torch.testing.assert_close(queries[b, t], expected, atol=1e-6, rtol=0)

    default = model.build_instance_queries(positives, positive_types, negatives)
    for b in range(B):  # default: positive in slot 0, negatives are text-typed
        torch.testing.assert_close(default[b, 0], positives[b] + position[0] + kind[positive_types[b]])
        for t in range(1, T):
            torch.testing.assert_close(default[b, t], negatives[b, t - 1] + position[t] + kind[0])

    with pytest.raises(ValueError, match="negative_queries"):
        model.build_instance_queries(positives, positive_types, negatives[:, :-1])


def test_prompts_to_query_space(model):
    prompts = torch.randn(3, TINY_PROJECTION_DIM) * torch.tensor([[0.1], [1.0], [10.0]])
    scaled = model.prompts_to_query_space(prompts)
    torch.testing.assert_close(scaled.norm(dim=-1), torch.full((3,), math.sqrt(TINY_PROJECTION_DIM)))
    torch.testing.assert_close(F.normalize(scaled, dim=-1), F.normalize(prompts, dim=-1))


def test_gaussian_negatives_are_reproducible_from_the_seed(tmp_path):
    first, second = tiny_model(seed=0), tiny_model(seed=123)
    generator = torch.Generator().manual_seed(0)
    expected = torch.randn(TINY_NUM_QUERIES - 1, TINY_PROJECTION_DIM, generator=generator)
    assert torch.equal(first.gaussian_negative_queries, expected)
    assert torch.equal(second.gaussian_negative_queries, expected)
    assert torch.equal(first.draw_gaussian_negative_queries(), expected)
    assert torch.equal(first.inference_negative_queries(torch.randn(2, 16)), expected.expand(2, -1, -1))
    other_seed = tiny_model(decoder_config={"negative_query_seed": 1})
    assert not torch.equal(other_seed.gaussian_negative_queries, expected)
    first.save_pretrained(tmp_path)
    assert torch.equal(EclipModel.from_pretrained(tmp_path).gaussian_negative_queries, expected)


def test_gaussian_instance_embedding_does_not_depend_on_the_batch(model, processor):
    texts = ["red shoe", "blue shirt with stripes", "leather bag", "wooden chair"]
    images = pixels(4, seed=9)
    alone = model(pixel_values=images[:1], **dict(processor(text=texts[:1]))).instance_embeds
    for companions in ([1], [2, 3], [3, 1, 2]):
        indices = [0, *companions]
        batched = model(pixel_values=images[indices], **dict(processor(text=[texts[i] for i in indices])))
        torch.testing.assert_close(batched.instance_embeds[:1], alone, atol=ATOL, rtol=0)


@torch.no_grad()
def test_text_negative_mode(processor):
    model = tiny_model(decoder_config={"negative_query_mode": "text"})
    D, T = TINY_PROJECTION_DIM, TINY_NUM_QUERIES
    gaussian = model.gaussian_negative_queries
    for B in (1, 2, 3, 6):
        positives = torch.randn(B, D)
        negatives = model.inference_negative_queries(positives)
        assert negatives.shape == (B, T - 1, D)
        num_others = min(B - 1, T - 1)
        for b in range(B):
            others = [positives[j] for j in range(B) if j != b]
            for column in range(num_others):
                assert any(torch.equal(negatives[b, column], other) for other in others)
                assert not torch.equal(negatives[b, column], positives[b])
            assert len({tuple(negatives[b, c].tolist()) for c in range(num_others)}) == num_others
            assert torch.equal(negatives[b, num_others:], gaussian[: T - 1 - num_others])

    texts = ["red shoe", "blue shirt with stripes", "leather bag"]
    images = pixels(3, seed=9)
    output = model(pixel_values=images, **dict(processor(text=texts)))
    assert output.instance_embeds.shape == (3, D)
    assert output.grounding_maps.shape == (3, 4, 4)
    # Text negatives are the other products of the batch, so the embedding depends on them (Table 6).
    swapped = model(pixel_values=images[[0, 2]], **dict(processor(text=[texts[0], texts[2]])))
    assert not torch.allclose(swapped.instance_embeds[0], output.instance_embeds[0], atol=1e-4)


@torch.no_grad()
def test_ema_negative_mode(processor):
    model = tiny_model(decoder_config={"negative_query_mode": "ema"})
    D, T = TINY_PROJECTION_DIM, TINY_NUM_QUERIES
    assert model.ema_negative_queries.shape == (T - 1, D)
    model.ema_negative_queries.copy_(torch.randn(T - 1, D))
    negatives = model.inference_negative_queries(torch.randn(3, D))
    assert negatives.shape == (3, T - 1, D)
    assert torch.equal(negatives, model.ema_negative_queries.expand(3, -1, -1))

    texts = ["red shoe", "blue shirt with stripes", "leather bag"]
    images = pixels(3, seed=9)
    output = model(pixel_values=images, **dict(processor(text=texts)))
    assert output.instance_embeds.shape == (3, D)
    alone = model(pixel_values=images[1:2], **dict(processor(text=texts[1:2])))
    torch.testing.assert_close(output.instance_embeds[1:2], alone.instance_embeds, atol=ATOL, rtol=0)
    gaussian = tiny_model(decoder_config={"negative_query_mode": "gaussian"})
    gaussian.load_state_dict(model.state_dict())
    assert not torch.allclose(
        gaussian(pixel_values=images[:1]).instance_embeds, model(pixel_values=images[:1]).instance_embeds
    )


# ----------------------------------------------------------------------------------------------------------
# The decoder alone: its checkpoints and its inputs
# ----------------------------------------------------------------------------------------------------------


def test_decoder_from_full_checkpoint(tmp_path, model):
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.add_(0.01)
    model.save_pretrained(tmp_path)
    decoder = EclipInstanceDecoder.from_pretrained(tmp_path)
    assert decoder.config.model_type == "eclip_decoder"
    assert decoder.config.num_queries == TINY_NUM_QUERIES
    assert decoder.config.hidden_size == TINY_PROJECTION_DIM
    expected = model.decoder.state_dict()
    actual = decoder.state_dict()
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    queries, tokens = torch.randn(2, TINY_NUM_QUERIES, 16), torch.randn(2, NUM_PATCHES, 16)
    with torch.no_grad():
        torch.testing.assert_close(decoder(queries, tokens).last_hidden_state, model.decoder(queries, tokens)[0])


def test_decoder_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    decoder = EclipInstanceDecoder(EclipDecoderConfig(hidden_size=16, num_attention_heads=2, num_queries=3))
    decoder.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, EclipInstanceDecoder)
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_decoder_bad_inputs_raise_clear_errors(model):
    decoder = model.decoder
    with pytest.raises(ValueError, match="query_embeds"):
        decoder(torch.randn(2, 4, 8), torch.randn(2, 16, 16))
    with pytest.raises(ValueError, match="query_embeds"):
        decoder(torch.randn(4, 16), torch.randn(2, 16, 16))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        decoder(torch.randn(2, 4, 16), torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        decoder(torch.randn(2, 4, 16), torch.randn(16, 16))
    with pytest.raises(ValueError, match="batch size"):
        decoder(torch.randn(2, 4, 16), torch.randn(3, 16, 16))
