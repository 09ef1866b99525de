# Copyright 2026 The ECLIP for transformers authors.
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
# compliance with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""PyTorch ECLIP: instance-level multi-modal pretraining for e-commerce (Jin et al., CVPR 2023).

Equation numbers refer to the paper. Where the paper is silent we follow ALBEF / BLIP / open_clip / transformers
and say so in the docstring.
"""

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.detr.modeling_detr import DetrMLPPredictionHead
from transformers.utils import ModelOutput

from .configuration_eclip import DETECTION_LOSS_FIELDS, OBJECTIVES, EclipConfig, EclipDecoderConfig
from .loss_eclip import (
    assignment_entropy_regularizer,
    distributed_rank_and_world_size,
    gather_features,
    image_text_contrastive_loss,
    instance_text_matching_loss,
    inter_product_contrastive_loss,
    intra_product_contrastive_loss,
    mean_over_processes,
    slot_token_entropy,
)
from .pipeline_eclip import OBJECT_DETECTION_PIPELINE, OBJECT_DETECTION_TASK

TEXT_PROMPT = 0
IMAGE_PROMPT = 1
# EclipModel returns CLIP-style logits, so it also serves transformers' zero-shot-image-classification pipeline.
ZERO_SHOT_AUTO_CLASS = "AutoModelForZeroShotImageClassification"


@dataclass
class EclipDecoderOutput(ModelOutput):
    r"""
    Output of [`EclipInstanceDecoder`].

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, hidden_size)`):
        The final instance representations H^L (after the decoder's final LayerNorm).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        H^0 (zeros) and the slots after each of the L blocks, each `(batch_size, num_queries, hidden_size)`.
    assignment_maps (`tuple(torch.FloatTensor)`, *optional*, returned when `output_assignment_maps=True`):
        The soft assignment M of every block (Eq. 3), each `(batch_size, num_patches, num_queries)`: for every
        token, a distribution over the T queries.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        The self-attention weights over the slots of every block, each `(batch_size, num_heads, num_queries,
        num_queries)`, as in DETR-family decoders.
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        The slot attention of every block (the assignment M of Eq. 3, this decoder's attention over the image tokens),
        in the layout of DETR-family cross-attentions: `(batch_size, 1, num_queries, num_patches)`, one head.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    assignment_maps: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class _OutputWithSubOutputs(ModelOutput):
    """A model output that holds other model outputs (the towers' and the decoder's): `to_tuple` turns those into
    tuples too, as `CLIPOutput.to_tuple` does."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class EclipOutput(_OutputWithSubOutputs):
    r"""
    Output of [`EclipModel`].

    loss (`torch.FloatTensor`, *optional*, returned when `return_loss=True`):
        The image-text contrastive loss L_itc (Eq. 6-7).
    logits_per_image (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
        Scaled cosine similarities between image and text embeddings, s(x^I, x^T) / tau.
    logits_per_text (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
        The transpose of `logits_per_image`.
    text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        L2-normalised g_T(w_cls).
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        L2-normalised g_I(v_cls).
    instance_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        L2-normalised product embedding h^L of the positive slot (Sec. 3.4).
    grounding_maps (`torch.FloatTensor` of shape `(batch_size, height_patches, width_patches)`):
        The positive slot's assignment over the patch grid from the last block (Sec. 4.2.4).
    decoder_output (`EclipDecoderOutput`):
        The instance decoder's output.
    text_model_output (`BaseModelOutputWithPooling`):
        The text tower's output.
    vision_model_output (`BaseModelOutputWithPooling`):
        The image tower's output.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    instance_embeds: torch.FloatTensor | None = None
    grounding_maps: torch.FloatTensor | None = None
    decoder_output: EclipDecoderOutput | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class EclipSlotProjection(nn.Linear):
    """A slot-attention matrix (W_q, W_z, W_v, W_o of Eq. 2-5), initialised N(0, 1/D) (see
    `EclipPreTrainedModel._init_weights`)."""


class EclipTokenProjection(EclipSlotProjection):
    """W_z (Eq. 2) and W_v (Eq. 4) of all L blocks in one parameter: rows `[2lD, (2l+1)D)` are block l's W_z and rows
    `[(2l+1)D, (2l+2)D)` its W_v.

    Used as a Linear, it gives every block's `Z W_z` and `Z W_v` in one matmul. The decoder instead applies both
    matrices on the T-slot side (see [`EclipSlotAttention`]): the same maths at T/N of the cost, since T < N.
    """

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__(hidden_size, 2 * num_layers * hidden_size)
        self.hidden_size = hidden_size

    def block(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(W_z, b_z, W_v, b_v)` of block `layer_idx`, views of the one weight and bias."""
        key_rows = slice(2 * layer_idx * self.hidden_size, (2 * layer_idx + 1) * self.hidden_size)
        value_rows = slice(key_rows.stop, key_rows.stop + self.hidden_size)
        return self.weight[key_rows], self.bias[key_rows], self.weight[value_rows], self.bias[value_rows]


class EclipSlotAttention(nn.Module):
    """Slot attention of one decoder block, Eq. 2-5.

    Eq. 2 and 4 project all N tokens by W_z and W_v, but the projections only enter through products with the T
    slots, so both are applied on the slot side (associativity, the same maths; T x D^2 instead of N x D^2 work):

        (Z W_z^T + b_z) q_t = Z (W_z^T q_t) + b_z . q_t                   (Eq. 2)
        sum_i w_it (W_v z_i + b_v) = W_v (sum_i w_it z_i) + b_v sum_i w_it   (Eq. 4)

    Z (after the decoder's shared token LayerNorm) and the [`EclipTokenProjection`] holding this block's W_z, b_z,
    W_v, b_v are passed in by [`EclipInstanceDecoder`]. Pre-LayerNorm on the query side (placement is not given by
    the paper).
    """

    def __init__(self, config: EclipDecoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.scale = config.hidden_size**-0.5
        self.epsilon = config.slot_attention_epsilon
        self.query_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.query_proj = EclipSlotProjection(config.hidden_size, config.hidden_size)  # W_q
        self.output_proj = EclipSlotProjection(config.hidden_size, config.hidden_size)  # W_o

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_embeds: torch.Tensor,
        tokens: torch.Tensor,
        token_projection: EclipTokenProjection,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key_weight, key_bias, value_weight, value_bias = token_projection.block(self.layer_idx)
        queries = self.query_proj(self.query_layernorm(query_embeds + hidden_states))
        # Eq. 2: M = (Z W_z)((Q + H^{l-1}) W_q)^T / sqrt(D), shape (B, N, T), with W_z moved to the query side.
        logits = torch.matmul(tokens, torch.matmul(queries, key_weight).transpose(1, 2))
        logits = (logits + torch.matmul(queries, key_bias).unsqueeze(1)) * self.scale
        # Eq. 3: softmax over the T queries, so queries compete for each token (in fp32 for bf16 stability).
        assignment = logits.softmax(dim=-1, dtype=torch.float32)
        # Eq. 4: weighted mean of W_v z_i over the N tokens, epsilon guards an empty slot; W_v after the mean.
        mass = assignment.sum(dim=1).unsqueeze(-1)  # (B, T, 1)
        pooled = torch.matmul(assignment.transpose(1, 2).to(tokens.dtype), tokens)
        delta = F.linear(pooled / (mass + self.epsilon).to(pooled.dtype), value_weight)
        delta = delta + value_bias * (mass / (mass + self.epsilon)).to(delta.dtype)
        # Eq. 5: residual update h^l = h^{l-1} + W_o delta.
        return hidden_states + self.output_proj(delta), assignment


class EclipSelfAttention(nn.Module):
    """Multi-head self-attention over the T slots, through transformers' attention interface."""

    def __init__(self, config: EclipDecoderConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        # Fused kernels (sdpa, flash) return no weights; the T x T attention over slots is tiny, so when the weights
        # are asked for it runs eagerly instead of returning None.
        attention_interface: Callable = (
            eager_attention_forward
            if output_attentions
            else ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(attn_output.reshape(*input_shape, -1).contiguous()), attn_weights


class EclipMLP(nn.Module):
    def __init__(self, config: EclipDecoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class EclipDecoderLayer(GradientCheckpointingLayer):
    """One decoder block (Sec. 3.2): slot attention (Eq. 2-5), then self-attention over slots and an FFN
    ("as in [24]"), both pre-LayerNorm residual branches."""

    def __init__(self, config: EclipDecoderConfig, layer_idx: int):
        super().__init__()
        self.slot_attention = EclipSlotAttention(config, layer_idx)
        self.self_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attention = EclipSelfAttention(config)
        self.mlp_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EclipMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_embeds: torch.Tensor,
        tokens: torch.Tensor,
        token_projection: EclipTokenProjection,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns the slots after the block, the slot-attention assignment M `(B, N, T)` and, with
        `output_attentions`, the self-attention weights `(B, heads, T, T)` (else None)."""
        hidden_states, assignment = self.slot_attention(hidden_states, query_embeds, tokens, token_projection)
        attn_output, attn_weights = self.self_attention(
            self.self_attention_layernorm(hidden_states), output_attentions=output_attentions, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_layernorm(hidden_states)))
        return hidden_states, assignment, attn_weights if output_attentions else None


class LogitScaleLayout(ConversionOps):
    """Reshapes `logit_scale` between the checkpoint's 0-d tensor (CLIP's layout, that of every saved ECLIP checkpoint)
    and the model's one-element parameter; `save_pretrained` applies the reverse, so checkpoints keep their layout."""

    def __init__(self, shape: tuple[int, ...] = (1,)):
        self.shape = tuple(shape)

    @torch.no_grad()
    def convert(
        self, input_dict: dict[str, Any], source_patterns: list[str], target_patterns: list[str], **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        (tensors,) = input_dict.values()
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor.reshape(self.shape)}

    @property
    def reverse_op(self) -> ConversionOps:
        return LogitScaleLayout(() if self.shape == (1,) else (1,))


# Every ECLIP class loads through it (the mapping is looked up by model_type); re-registered when remote code imports
# this file again.
register_checkpoint_conversion_mapping(
    "eclip", [WeightConverter("logit_scale", "logit_scale", operations=[LogitScaleLayout()])], overwrite=True
)


class EclipPreTrainedModel(PreTrainedModel):
    config: EclipConfig
    base_model_prefix = "eclip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["EclipDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Slot-attention matrices get std 1/sqrt(D). W_q and W_z: the Eq. 2 logits start with unit variance, so the
        # assignment is not uniform and the slots (and Eq. 9-10) get different gradients from the first step. W_v and
        # W_o: the Eq. 4-5 update keeps the scale of the normalised tokens, so H^1 (from H^0 = 0) is of order 1 and
        # the LayerNorm that reads it does not amplify its gradients. (Done on the Linear leaves: transformers skips
        # remote-code modules that own no parameters directly.)
        if isinstance(module, EclipSlotProjection):
            init.normal_(module.weight, std=module.in_features**-0.5)
        if isinstance(module, EclipForPreTraining):
            init.zeros_(module.queue_embeds)
            init.zeros_(module.queue_prompts)
            init.constant_(module.queue_product_ids, -1)
            init.zeros_(module.queue_pointer)
        if isinstance(module, EclipModel):
            init.constant_(module.logit_scale, module.config.logit_scale_init_value)
            init.zeros_(module.ema_negative_queries)


class EclipInstanceDecoder(EclipPreTrainedModel):
    r"""
    The instance decoder of Sec. 3.2: L blocks of slot attention (Eq. 2-5) + self-attention + FFN over T slots.

    Inputs are the instance queries Q (Eq. 1, built by [`EclipModel`]) and the projected patch tokens Z; the
    slots start at H^0 = 0. The token LayerNorm is shared by all blocks because Eq. 2-5 share one Z: it runs once,
    and every block applies its W_z and W_v (held together in [`EclipTokenProjection`]) on the T-slot side rather
    than to all N tokens, the same maths at a fraction of the cost.
    """

    config: EclipDecoderConfig
    base_model_prefix = "decoder"
    main_input_name = "query_embeds"

    def __init__(self, config: EclipDecoderConfig):
        super().__init__(config)
        self.token_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.token_projection = EclipTokenProjection(config.hidden_size, config.num_hidden_layers)
        self.layers = nn.ModuleList([EclipDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        query_embeds: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_assignment_maps: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EclipDecoderOutput | tuple:
        r"""
        query_embeds (`torch.FloatTensor` of shape `(batch_size, num_queries, hidden_size)`):
            The instance queries Q of Eq. 1.
        encoder_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_patches, hidden_size)`):
            The projected patch tokens Z.
        output_assignment_maps (`bool`, *optional*):
            Return every block's assignment map M (Eq. 3).
        output_attentions (`bool`, *optional*, defaults to `config.output_attentions`):
            Return every block's self-attention weights (`attentions`) and slot attention (`cross_attentions`).
        """
        hidden_size = self.config.hidden_size
        if query_embeds.dim() != 3 or query_embeds.shape[-1] != hidden_size:
            raise ValueError(
                f"query_embeds must be (batch, num_queries, {hidden_size}), got {tuple(query_embeds.shape)}."
            )
        if encoder_hidden_states.dim() != 3 or encoder_hidden_states.shape[-1] != hidden_size:
            raise ValueError(
                f"encoder_hidden_states must be (batch, num_patches, {hidden_size}), "
                f"got {tuple(encoder_hidden_states.shape)}."
            )
        if query_embeds.shape[0] != encoder_hidden_states.shape[0]:
            raise ValueError(
                f"query_embeds has batch size {query_embeds.shape[0]} but encoder_hidden_states has "
                f"{encoder_hidden_states.shape[0]}."
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        tokens = self.token_layernorm(encoder_hidden_states)
        hidden_states = torch.zeros_like(query_embeds)  # H^0 = 0
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_assignments, all_attentions, all_cross_attentions = [], [], []
        for layer in self.layers:
            hidden_states, assignment, attn_weights = layer(
                hidden_states,
                query_embeds,
                tokens,
                self.token_projection,
                output_attentions=output_attentions,
                **kwargs,
            )
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            all_assignments.append(assignment)
            if output_attentions:
                all_attentions.append(attn_weights)
                all_cross_attentions.append(assignment.transpose(1, 2).unsqueeze(1))
        output = EclipDecoderOutput(
            last_hidden_state=self.layernorm(hidden_states),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            assignment_maps=tuple(all_assignments) if output_assignment_maps else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            cross_attentions=tuple(all_cross_attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


def _without_pooler(config: PreTrainedConfig) -> dict[str, bool]:
    """`add_pooling_layer=False` for tower classes that take it: ECLIP reads the [CLS] output itself, and an unused
    pooler would get no gradient."""
    model_class = MODEL_MAPPING[type(config)]
    return (
        {"add_pooling_layer": False}
        if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
        else {}
    )


def _build_tower(config: PreTrainedConfig) -> PreTrainedModel:
    """Builds a tower with `AutoModel.from_config`, without a pooler."""
    return AutoModel.from_config(config, **_without_pooler(config))


class EclipModel(EclipPreTrainedModel):
    r"""
    ECLIP (Sec. 3.1-3.2): an image tower (ViT), a text tower (BERT-like), projections g_I and g_T to the joint space
    D (g_I also maps the patch tokens, giving Z), instance queries (Eq. 1) and the instance decoder.

    Prompts enter the query space L2-normalised and scaled to norm sqrt(D) (the expected norm of a standard Gaussian
    vector in R^D). The paper does not say how prompts are scaled; this makes trained prompts and the Gaussian
    negative queries of Sec. 3.4 live on the same scale, so the transfer recipe matches pretraining.

    Inputs: `forward` and the embedding methods check shapes and dtypes only (no device sync, so they compile without
    graph breaks); values (NaN pixels, token ids outside the vocabulary) are checked at the edges: the processor's
    image decoding, the pipeline, the collators, and `processing_eclip.check_model_inputs` for tensors built by hand.
    """

    main_input_name = "pixel_values"
    # Loading the inference model from an EclipForPreTraining checkpoint leaves these behind on purpose.
    _keys_to_ignore_on_load_unexpected = [r"momentum_eclip\.", r"itm_head\.", r"queue_"]

    def __init__(
        self,
        config: EclipConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.vision_model = vision_model if vision_model is not None else _build_tower(config.vision_config)
        self.text_model = text_model if text_model is not None else _build_tower(config.text_config)
        # One config object per tower, shared with the parent, so attention switches reach the towers. A pretrained
        # tower keeps its attention implementation: without one, transformers builds no padding mask at all.
        for tower, tower_config in ((self.vision_model, config.vision_config), (self.text_model, config.text_config)):
            if tower_config._attn_implementation is None:
                tower_config._attn_implementation = tower.config._attn_implementation
            tower.config = tower_config

        dim = config.projection_dim
        decoder_config = config.decoder_config
        # g_I maps every image token into the joint space: v_cls for L_itc and the prompts, v_1..v_N to give Z
        # (Sec. 3.1, "a modality-dependent projection layer"; Sec. 3.2, "the same feature space as the prompt").
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, dim, bias=False)  # g_I
        self.text_projection = nn.Linear(config.text_config.hidden_size, dim, bias=False)  # g_T
        self.query_position_embeddings = nn.Embedding(decoder_config.num_queries, dim)  # q^pos, Eq. 1
        self.query_type_embeddings = nn.Embedding(decoder_config.num_prompt_types, dim)  # q^type, Eq. 1
        self.decoder = EclipInstanceDecoder._from_config(decoder_config)
        # One element, not 0-d: FSDP2's fully_shard refuses scalar parameters. Checkpoints keep CLIP's 0-d layout
        # (see `LogitScaleLayout`).
        self.logit_scale = nn.Parameter(torch.tensor([config.logit_scale_init_value]))
        # "ema" negative mode (Table 6): a moving average of the negative queries seen in pretraining.
        self.register_buffer("ema_negative_queries", torch.zeros(decoder_config.num_queries - 1, dim))
        # The Gaussian negative queries are a function of the config's seed, not state (see gaussian_negative_queries):
        # drawn here, eagerly, so a compiled forward only moves them to its device (no generator inside the graph).
        self._gaussian_draw = (decoder_config.negative_query_seed, self.draw_gaussian_negative_queries())
        self._gaussian_negative_queries: dict[tuple, torch.Tensor] = {}
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """As `PreTrainedModel.save_pretrained`. With remote code registered, `auto_map` also names this class for
        `AutoModelForZeroShotImageClassification` (`register_for_auto_class` records one Auto class per model class),
        so the stock `zero-shot-image-classification` pipeline loads the checkpoint with `trust_remote_code=True`."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map[ZERO_SHOT_AUTO_CLASS] = f"{module}.{type(self).__name__}"
            self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)

    # ----- construction from pretrained towers -----

    @classmethod
    def from_vision_text_pretrained(
        cls, vision_model_name_or_path: str, text_model_name_or_path: str, **kwargs
    ) -> "EclipModel":
        """Initialises the towers from any local or Hub ViT and BERT-like checkpoints; the rest is new.

        Keyword arguments prefixed `vision_` / `text_` go to the towers' `from_pretrained`, the others to
        [`EclipConfig`] (for example `projection_dim=256` or `decoder_config={...}`).
        """
        vision_kwargs = {k.removeprefix("vision_"): kwargs.pop(k) for k in list(kwargs) if k.startswith("vision_")}
        text_kwargs = {k.removeprefix("text_"): kwargs.pop(k) for k in list(kwargs) if k.startswith("text_")}
        vision_model = _load_tower(vision_model_name_or_path, **vision_kwargs)
        text_model = _load_tower(text_model_name_or_path, **text_kwargs)
        config = EclipConfig.from_vision_text_configs(vision_model.config, text_model.config, **kwargs)
        return cls(config, vision_model=vision_model, text_model=text_model)

    # ----- encoders -----

    def _check_pixel_values(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
        """Refuses what cannot be processed images, with a ValueError naming `name`: not a tensor, any shape but
        `(batch, num_channels, image_size, image_size)`, an empty batch, raw pixels (integer dtypes). Shapes and dtype
        only, which need no device sync; NaN / infinite values are refused at the edges (`check_model_inputs`)."""
        size, channels = self.config.image_size, self.config.vision_config.num_channels
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(
                f"{name} must be a torch.Tensor from the model's EclipProcessor, got {type(pixel_values).__name__}."
            )
        expected = f"(batch, {channels}, {size}, {size})"
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (channels, size, size):
            raise ValueError(
                f"{name} must be {expected} for this model's image_size={size}, got {tuple(pixel_values.shape)}; "
                "resize with the model's EclipProcessor."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch {tuple(pixel_values.shape)}: pass at least one image.")
        if not pixel_values.is_floating_point():
            # Raw 0-255 pixels would run as if normalised and give plausible-looking nonsense.
            raise ValueError(
                f"{name} has dtype {pixel_values.dtype}: the model takes rescaled and normalised float pixels; run the "
                "images through the model's EclipProcessor."
            )

    def _check_text_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> None:
        """Refuses `input_ids` the text tower cannot embed (a ValueError naming the argument): not `(batch, length)`,
        an empty batch, non-integer, more tokens than `max_position_embeddings`, and `attention_mask` /
        `token_type_ids` of another shape. Shapes and dtype only; ids outside the vocabulary are refused at the edges
        (`check_model_inputs`)."""
        text_config = self.config.text_config
        if not isinstance(input_ids, torch.Tensor):
            raise ValueError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}.")
        if input_ids.dim() != 2:
            hint = "; add the batch dimension (input_ids[None])" if input_ids.dim() == 1 else ""
            raise ValueError(f"input_ids must be (batch, sequence_length), got shape {tuple(input_ids.shape)}{hint}.")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids is empty, shape {tuple(input_ids.shape)}: pass at least one tokenized text.")
        if input_ids.is_floating_point() or input_ids.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}.")
        max_positions = getattr(text_config, "max_position_embeddings", None)
        if max_positions is not None and input_ids.shape[1] > max_positions:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens, more than the text tower's max_position_embeddings="
                f"{max_positions}; tokenize with truncation (as the EclipProcessor does)."
            )
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor is not None and (not isinstance(tensor, torch.Tensor) or tensor.shape != input_ids.shape):
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}.")

    def encode_image(
        self, pixel_values: torch.Tensor, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, BaseModelOutputWithPooling]:
        """Runs the image tower once and returns (g_I(v_cls), Z, tower output); Z = g_I(v_1..v_N), the patch tokens in
        the joint space of the prompts."""
        self._check_pixel_values(pixel_values)
        return self._run_image_tower(pixel_values, **kwargs)

    def _run_image_tower(
        self, pixel_values: torch.Tensor, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, BaseModelOutputWithPooling]:
        """`encode_image` on pixels its caller has checked (so a training step checks each input once)."""
        vision_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        projected = self.visual_projection(vision_outputs.last_hidden_state)
        return projected[:, 0], projected[:, 1:], vision_outputs

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """Runs the text tower and returns (g_T(w_cls), tower output)."""
        self._check_text_inputs(input_ids, attention_mask, token_type_ids)
        return self._run_text_tower(input_ids, attention_mask, token_type_ids, **kwargs)

    def _run_text_tower(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """`encode_text` on texts its caller has checked (so a training step checks each input once)."""
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        text_outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self.text_projection(text_outputs.last_hidden_state[:, 0]), text_outputs

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """Text tower output whose `pooler_output` is the (unnormalised) text embedding g_T(w_cls)."""
        text_embeds, text_outputs = self.encode_text(input_ids, attention_mask, token_type_ids, **kwargs)
        text_outputs.pooler_output = text_embeds
        return self._maybe_tuple(text_outputs, return_dict)

    def get_image_features(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPooling | tuple:
        """Image tower output whose `pooler_output` is the (unnormalised) image embedding g_I(v_cls)."""
        image_embeds, _, vision_outputs = self.encode_image(pixel_values, **kwargs)
        vision_outputs.pooler_output = image_embeds
        return self._maybe_tuple(vision_outputs, return_dict)

    def _maybe_tuple(self, output: ModelOutput, return_dict: bool | None) -> ModelOutput | tuple:
        """A tuple when `return_dict` (or, if None, `config.return_dict`) is False, as transformers' methods do."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def get_patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The projected patch tokens Z, `(batch, num_patches, projection_dim)`, for dense similarity maps."""
        return self.encode_image(pixel_values)[1]

    # ----- instance queries and decoding -----

    def prompts_to_query_space(self, prompts: torch.Tensor) -> torch.Tensor:
        """Maps projected prompts g_T(w_cls) / g_I(v_cls) onto the query scale: unit direction times sqrt(D)."""
        return F.normalize(prompts, dim=-1) * math.sqrt(self.config.projection_dim)

    def draw_gaussian_negative_queries(self) -> torch.Tensor:
        """The fixed standard-Gaussian negative queries of Sec. 3.4, drawn from a seeded generator (float32, CPU)."""
        decoder_config = self.config.decoder_config
        generator = torch.Generator().manual_seed(decoder_config.negative_query_seed)
        # On the CPU explicitly, also when the model is built under a meta-device context.
        shape = (decoder_config.num_queries - 1, self.config.projection_dim)
        return torch.randn(shape, generator=generator, device="cpu")

    @property
    def gaussian_negative_queries(self) -> torch.Tensor:
        """`draw_gaussian_negative_queries()` on the model's device and in its dtype, `(T-1, D)`.

        Derived from `decoder_config.negative_query_seed` (drawn on the host when the model is built, or when the seed
        changes), then cached per device, dtype and seed; never stored: a buffer would hold uninitialised memory
        wherever a model is built without running `_init_weights` (`no_init_weights`, meta device or
        `init_empty_weights`, then `to_empty` and `load_state_dict`). Under `torch.compile` only the move to the
        device is traced; change the seed before compiling, as a new draw needs a generator, which breaks the graph.
        """
        reference = self.query_position_embeddings.weight
        seed = self.config.decoder_config.negative_query_seed
        key = (reference.device, reference.dtype, seed)
        if key not in self._gaussian_negative_queries:
            if self._gaussian_draw[0] != seed:
                self._gaussian_draw = (seed, self.draw_gaussian_negative_queries())
            # A normal tensor even when first asked for under inference_mode: training may use the cached one later.
            with torch.inference_mode(False):
                queries = self._gaussian_draw[1].to(device=reference.device, dtype=reference.dtype)
            self._gaussian_negative_queries = {key: queries}
        return self._gaussian_negative_queries[key]

    def inference_negative_queries(self, positive_queries: torch.Tensor) -> torch.Tensor:
        """The T-1 negative queries used at transfer time (Sec. 3.4, Table 6), `(batch, T-1, D)`.

        `gaussian` and `ema` give every sample the same negatives, so an embedding never depends on the batch;
        `text` uses the other products' prompts in the batch and tops up with the Gaussian set when the batch has
        fewer than T-1 other products.
        """
        batch_size = positive_queries.shape[0]
        mode = self.config.decoder_config.negative_query_mode
        gaussian = self.gaussian_negative_queries.to(positive_queries.device, positive_queries.dtype)
        if mode == "ema":
            return self.ema_negative_queries.to(positive_queries.device, positive_queries.dtype).expand(
                batch_size, -1, -1
            )
        if mode == "gaussian" or batch_size == 1:
            return gaussian.expand(batch_size, -1, -1)
        num_negatives = gaussian.shape[0]
        shifts = range(1, min(batch_size, num_negatives + 1))
        others = torch.stack([positive_queries.roll(-shift, dims=0) for shift in shifts], dim=1)
        top_up = gaussian[: num_negatives - others.shape[1]].expand(batch_size, -1, -1)
        return torch.cat([others, top_up], dim=1)

    def build_instance_queries(
        self,
        positive_queries: torch.Tensor,
        positive_types: torch.Tensor,
        negative_queries: torch.Tensor,
        negative_types: torch.Tensor | None = None,
        positive_slot: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 1: q_t = q_t^prompt + q_t^pos + q_t^type, with the positive prompt at `positive_slot`.

        Args:
            positive_queries: `(B, D)` positive prompts in query space (see `prompts_to_query_space`).
            positive_types: `(B,)` prompt modality of the positive (0 text, 1 image).
            negative_queries: `(B, T-1, D)` negative prompts in query space.
            negative_types: `(B, T-1)` their modalities (default: text).
            positive_slot: `(B,)` slot index r of the positive, in [0, T) (default 0, the transfer setting of
                Sec. 3.4). Not checked: reading it back would make every training step wait for the device.
        Returns:
            `(B, T, D)` instance queries.
        """
        batch_size, dim = positive_queries.shape
        num_queries = self.config.decoder_config.num_queries
        if negative_queries.shape != (batch_size, num_queries - 1, dim):
            raise ValueError(
                f"negative_queries must be {(batch_size, num_queries - 1, dim)}, got {tuple(negative_queries.shape)}."
            )
        device = positive_queries.device
        if negative_types is None:
            negative_types = torch.full((batch_size, num_queries - 1), TEXT_PROMPT, device=device)
        prompts = torch.cat([positive_queries.unsqueeze(1), negative_queries], dim=1)
        types = torch.cat([positive_types.view(batch_size, 1).to(device), negative_types], dim=1)
        if positive_slot is not None:
            # Move the positive from column 0 to column r, keeping the negatives' order.
            order = _positive_first_to_slot_order(positive_slot.to(device), num_queries)
            prompts = prompts.gather(1, order.unsqueeze(-1).expand(-1, -1, dim))
            types = types.gather(1, order)
        position_ids = torch.arange(num_queries, device=device)
        return prompts + self.query_position_embeddings(position_ids) + self.query_type_embeddings(types)

    def _resolve_prompt(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor | None,
        prompt_pixel_values: torch.Tensor | None,
        prompt_embeds: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Picks the positive prompt: explicit embeddings, else a prompt image, else the text, else the image."""
        batch_size = image_embeds.shape[0]
        if prompt_embeds is not None:
            if prompt_embeds.dim() != 2 or prompt_embeds.shape != (batch_size, self.config.projection_dim):
                raise ValueError(
                    f"prompt_embeds must be (batch={batch_size}, projection_dim={self.config.projection_dim}), "
                    f"got {tuple(prompt_embeds.shape)}."
                )
            if not prompt_embeds.is_floating_point():
                raise ValueError(f"prompt_embeds must be floats (projected prompts), got dtype {prompt_embeds.dtype}.")
            prompts, kind = prompt_embeds, TEXT_PROMPT
        elif prompt_pixel_values is not None:
            self._check_pixel_values(prompt_pixel_values, "prompt_pixel_values")
            _check_same_batch_size(batch_size, prompt_pixel_values.shape[0], "pixel_values", "prompt_pixel_values")
            prompts, kind = self._run_image_tower(prompt_pixel_values)[0], IMAGE_PROMPT
        elif text_embeds is not None:
            prompts, kind = text_embeds, TEXT_PROMPT
        else:
            prompts, kind = image_embeds, IMAGE_PROMPT
        return prompts, torch.full((batch_size,), kind, dtype=torch.long, device=prompts.device)

    def decode_instances(
        self,
        patch_embeds: torch.Tensor,
        prompts: torch.Tensor,
        prompt_types: torch.Tensor,
        output_assignment_maps: bool = True,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> EclipDecoderOutput:
        """Transfer-time decoding (Sec. 3.4): the positive prompt in slot 0, inference negatives elsewhere."""
        positive_queries = self.prompts_to_query_space(prompts)
        negative_queries = self.inference_negative_queries(positive_queries)
        queries = self.build_instance_queries(positive_queries, prompt_types, negative_queries)
        return self.decoder(
            queries,
            patch_embeds,
            output_assignment_maps=output_assignment_maps,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )

    def to_grounding_maps(self, assignment: torch.Tensor, slot: int = 0) -> torch.Tensor:
        """Reshapes one slot's assignment `(B, N, T)` to the patch grid `(B, h, w)`."""
        side = self.config.num_patches_per_side
        return assignment[:, :, slot].reshape(assignment.shape[0], side, side)

    def get_instance_features(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        prompt_pixel_values: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """The product embedding h^L of the positive slot (Sec. 3.4) as `pooler_output` (unnormalised);
        `last_hidden_state` holds all T slots. The prompt is `prompt_embeds` if given, else the prompt image, else
        the text (image + title), else the image itself."""
        _check_prompt_texts(pixel_values, input_ids, "get_instance_features")
        output = self(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            prompt_pixel_values=prompt_pixel_values,
            prompt_embeds=prompt_embeds,
            normalize_instance_embeds=False,
            return_dict=True,
        )
        slots = output.decoder_output.last_hidden_state
        features = BaseModelOutputWithPooling(last_hidden_state=slots, pooler_output=output.instance_embeds)
        return self._maybe_tuple(features, return_dict)

    def get_grounding_map(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        prompt_pixel_values: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        layer: int = -1,
    ) -> torch.Tensor:
        """The positive slot's assignment over the patch grid, `(B, h, w)` (Sec. 4.2.4, Fig. 4a).

        `layer` picks the decoder block (default the last; Python indexing, so `-num_hidden_layers` is the first).
        Values are the share of each patch assigned to the prompted product (Eq. 3); upsample to the image size to draw
        a heat map or rank boxes.
        """
        num_layers = self.config.decoder_config.num_hidden_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -num_layers <= layer < num_layers:
            raise ValueError(
                f"layer must be an int in [{-num_layers}, {num_layers}) (the decoder has {num_layers} blocks), "
                f"got {layer!r}."
            )
        _check_prompt_texts(pixel_values, input_ids, "get_grounding_map")
        output = self(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            prompt_pixel_values=prompt_pixel_values,
            prompt_embeds=prompt_embeds,
            return_dict=True,
        )
        return self.to_grounding_maps(output.decoder_output.assignment_maps[layer])

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        prompt_pixel_values: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        return_loss: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        normalize_instance_embeds: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EclipOutput | tuple:
        r"""
        One pass gives everything evaluation needs: unimodal embeddings and their logits, the instance embedding
        and the grounding map (so no image is encoded twice).

        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`, *optional*):
            Product images. With images, the decoder runs and `instance_embeds` / `grounding_maps` are returned.
        input_ids, attention_mask, token_type_ids (*optional*):
            Texts. With one text per image (as many rows as `pixel_values`), text i is the product text of image i and
            prompts its decoder; with any other number (category prompts, as `CLIPModel` is called), the texts are
            only scored against every image and each image prompts its own decoder.
        prompt_pixel_values (*optional*):
            Image prompts ("find this product in that scene"), one per image; take precedence over the text.
        prompt_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
            Ready-made projected prompts; take precedence over everything else.
        return_loss (`bool`):
            Return the image-text contrastive loss L_itc (Eq. 6-7), as `CLIPModel` does (one text per image).
        output_hidden_states, output_attentions (`bool`, *optional*):
            Passed to both towers and the instance decoder; read them from `vision_model_output`,
            `text_model_output` and `decoder_output`.

        `logits_per_image` is `(num_images, num_texts)` and `logits_per_text` its transpose, as in `CLIPModel`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values is None and input_ids is None:
            raise ValueError("EclipModel needs at least one modality: pass pixel_values and/or input_ids.")
        # Checked before pairing images with texts (a 1-D input_ids would otherwise be counted as texts).
        if pixel_values is not None:
            self._check_pixel_values(pixel_values)
        if input_ids is not None:
            self._check_text_inputs(input_ids, attention_mask, token_type_ids)
        paired = pixel_values is not None and input_ids is not None and pixel_values.shape[0] == input_ids.shape[0]
        if return_loss and not paired:
            raise ValueError(
                "return_loss=True needs one text per image (L_itc contrasts matching pairs): pixel_values has "
                f"{None if pixel_values is None else pixel_values.shape[0]} rows, input_ids "
                f"{None if input_ids is None else input_ids.shape[0]}."
            )
        outputs = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}

        image_embeds = text_embeds = vision_outputs = text_outputs = None
        instance_embeds = grounding_maps = decoder_output = None
        if input_ids is not None:
            text_embeds, text_outputs = self._run_text_tower(
                input_ids, attention_mask, token_type_ids, **outputs, **kwargs
            )
        if pixel_values is not None:
            image_embeds, patch_embeds, vision_outputs = self._run_image_tower(pixel_values, **outputs, **kwargs)
            prompts, prompt_types = self._resolve_prompt(
                image_embeds, text_embeds if paired else None, prompt_pixel_values, prompt_embeds
            )
            decoder_output = self.decode_instances(patch_embeds, prompts, prompt_types, **outputs)
            instance_embeds = decoder_output.last_hidden_state[:, 0]
            if normalize_instance_embeds:
                instance_embeds = F.normalize(instance_embeds, dim=-1)
            grounding_maps = self.to_grounding_maps(decoder_output.assignment_maps[-1])
            image_embeds = F.normalize(image_embeds, dim=-1)
        if text_embeds is not None:
            text_embeds = F.normalize(text_embeds, dim=-1)

        logits_per_image = logits_per_text = loss = None
        if image_embeds is not None and text_embeds is not None:
            logit_scale = self.logit_scale.clamp(max=self.config.logit_scale_max).exp().squeeze(0)  # 0-d, as CLIP's
            logits_per_image = logit_scale * image_embeds @ text_embeds.t()
            logits_per_text = logits_per_image.t()
            if return_loss:
                labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
                loss = 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))

        output = EclipOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            instance_embeds=instance_embeds,
            grounding_maps=grounding_maps,
            decoder_output=decoder_output,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )
        return output if return_dict else output.to_tuple()


@dataclass
class EclipForPreTrainingOutput(_OutputWithSubOutputs):
    r"""
    Output of [`EclipForPreTraining`]: the weighted total and every term, for logging, and what a good step enqueues.

    loss (`torch.FloatTensor`): the weighted sum of the enabled objectives.
    loss_itc, loss_inter, loss_itm, loss_intra, loss_entropy (`torch.FloatTensor`, *optional*):
        L_itc (Eq. 6-7), L_inter (Eq. 8), L_itm, L_intra (Eq. 9) and L_R (Eq. 10), unweighted; None when off.
    temperature (`torch.FloatTensor`): tau = 1 / exp(clamped logit scale).
    positive_slot_entropy (`torch.FloatTensor`, *optional*):
        Mean entropy (nats) of the positive slot's attention over the N tokens, last block: falls as it grounds.
    image_embeds, text_embeds, instance_embeds (`torch.FloatTensor`, *optional*):
        The online model's normalised g_I(v_cls), g_T(w_cls) and positive-slot h (local rows).
    positive_slot (`torch.LongTensor`, *optional*): the slot r that held each sample's positive prompt.
    vision_model_output, text_model_output, decoder_output (*optional*, with `output_hidden_states` or
        `output_attentions`): the online towers' and the instance decoder's outputs, holding what was asked for.
    enqueue_embeds, enqueue_prompts, enqueue_product_ids (*optional*, training mode with the decoder objectives on):
        The momentum features h_xi, the momentum text prompts and the product ids of the global batch, `(B_global, D)`
        and `(B_global,)`, for the queues; [`EclipForPreTraining.enqueue`] writes them once the step is known good.
    negative_queries_mean (`torch.FloatTensor` of shape `(T - 1, D)`, *optional*, with the three above):
        The batch mean of the negative queries, for the moving average of the "ema" negative mode (Table 6).
    """

    loss: torch.FloatTensor | None = None
    loss_itc: torch.FloatTensor | None = None
    loss_inter: torch.FloatTensor | None = None
    loss_itm: torch.FloatTensor | None = None
    loss_intra: torch.FloatTensor | None = None
    loss_entropy: torch.FloatTensor | None = None
    temperature: torch.FloatTensor | None = None
    positive_slot_entropy: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    instance_embeds: torch.FloatTensor | None = None
    positive_slot: torch.LongTensor | None = None
    enqueue_embeds: torch.FloatTensor | None = None
    enqueue_prompts: torch.FloatTensor | None = None
    enqueue_product_ids: torch.LongTensor | None = None
    negative_queries_mean: torch.FloatTensor | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    decoder_output: EclipDecoderOutput | None = None


# What `EclipForPreTrainingOutput` logs: the weighted total, then every objective's term.
LOSS_NAMES = ("loss", *(f"loss_{name}" for name in OBJECTIVES))


class EclipForPreTraining(EclipPreTrainedModel):
    r"""
    ECLIP pretraining (Sec. 3.3): an [`EclipModel`], its momentum (EMA) copy, the ITM head f: R^D -> R^2 and queues
    of momentum features with their product ids.

    Batch contract: `pixel_values` (one image x per product), `positive_pixel_values` (another image x+ of the same
    product), `input_ids` / `attention_mask` (the product text) and `product_ids` (int64; every same-product pair is
    masked in every objective, so a batch needs at least two products). `forward` checks shapes only; the values are
    the collator's business (`ProductPairStream` puts distinct products in every batch, its processor checks images
    and texts), as reading them back here would make every step wait for the device.

    Choices where the paper is silent (ALBEF-style):
    - The momentum model encodes x+ once; that pass gives the Eq. 8 targets h_xi and the image prompts g_I(v_cls) of
      x+ (used with probability `image_prompt_probability`), so no second online image pass is needed.
    - h_xi is decoded with the transfer recipe of Sec. 3.4 (text prompt in slot 0, inference negatives), so the
      embedding used downstream is the one that Eq. 8 trains.
    - Negative prompts are other products' text prompts from the (global) batch, then from a queue of momentum text
      prompts; while both are short, the Gaussian negatives of Sec. 3.4 fill the remaining slots.
    - The positive prompt sits at a random slot when `random_positive_slot` (so q^pos cannot solve Eq. 9).

    `forward` changes no state. After every optimiser step known to be good, call
    [`EclipForPreTraining.momentum_update`] and [`EclipForPreTraining.enqueue`] (with the outputs of that step's
    micro-batches, in order). `model.eclip` is the inference model (save it with `model.eclip.save_pretrained`);
    `EclipModel.from_pretrained` on a pretraining checkpoint also yields it, ignoring the momentum copy, the ITM head
    and the queues.
    """

    # The first input of `forward` (transformers reads it, e.g. for gradient checkpointing's input gradients).
    main_input_name = "pixel_values"

    def __init__(self, config: EclipConfig):
        super().__init__(config)
        dim = config.projection_dim
        self.eclip = EclipModel(config)
        self.momentum_eclip = EclipModel(config)
        self.itm_head = nn.Linear(dim, 2)  # f(h ⊙ g_T(w_cls)), text after Eq. 8
        self.register_buffer("queue_embeds", torch.zeros(config.queue_size, dim))
        self.register_buffer("queue_prompts", torch.zeros(config.queue_size, dim))
        self.register_buffer("queue_product_ids", torch.full((config.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_pointer", torch.zeros(1, dtype=torch.long))
        self.post_init()
        self.copy_online_to_momentum()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; starting from an inference checkpoint (an `EclipModel`), the momentum
        model starts as a copy of the loaded online model instead of random weights."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if any(key.startswith("momentum_eclip.") for key in info["missing_keys"]):
            model.copy_online_to_momentum()
        # Loading replaces the parameters, so the momentum model must be frozen again in every case.
        model.momentum_eclip.requires_grad_(False)
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def copy_online_to_momentum(self) -> None:
        """Sets the momentum model (and its "ema" negative queries) equal to the online model and freezes it."""
        for online, momentum in zip(self.eclip.parameters(), self.momentum_eclip.parameters()):
            momentum.copy_(online)
            momentum.requires_grad_(False)
        self.momentum_eclip.ema_negative_queries.copy_(self.eclip.ema_negative_queries)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA update xi <- m * xi + (1 - m) * theta of the momentum model (Eq. 8, after every optimiser step)."""
        online = [p.detach() for p in self.eclip.parameters()]
        momentum = list(self.momentum_eclip.parameters())
        # xi + (1 - m) (theta - xi): one fused pass over the parameters instead of a multiply and an add.
        torch._foreach_lerp_(momentum, online, 1.0 - self.config.momentum)

    @torch.no_grad()
    def enqueue(self, output: EclipForPreTrainingOutput) -> None:
        """Writes what a training forward returned for the queues (`enqueue_*`) into them, oldest entries first out,
        and moves the "ema" negative queries towards its `negative_queries_mean`. Call after an optimiser step known
        to be good, once per micro-batch of that step, in order; a forward without the decoder objectives (or in eval
        mode) has nothing to enqueue. A global batch the queue cannot hold in whole blocks
        (`EclipConfig.check_global_batch_size`) is a ValueError before anything is written."""
        if output.enqueue_embeds is None:
            return
        # The one place the queue is written: each write must be one contiguous block (a shape, no tensor is read).
        self.config.check_global_batch_size(output.enqueue_embeds.shape[0])
        momentum = self.config.momentum
        ema = self.eclip.ema_negative_queries
        ema.mul_(momentum).add_(output.negative_queries_mean.to(ema.dtype), alpha=1 - momentum)
        # The momentum targets are decoded with the online model's inference negatives.
        self.momentum_eclip.ema_negative_queries.copy_(ema)
        # The rows [pointer, pointer + B) are computed on the device: reading the pointer back would make the step wait.
        queue_size, batch_size = self.config.queue_size, output.enqueue_embeds.shape[0]
        rows = (self.queue_pointer + torch.arange(batch_size, device=self.queue_pointer.device)) % queue_size
        self.queue_embeds.index_copy_(0, rows, output.enqueue_embeds.to(self.queue_embeds.dtype))
        self.queue_prompts.index_copy_(0, rows, output.enqueue_prompts.to(self.queue_prompts.dtype))
        self.queue_product_ids.index_copy_(0, rows, output.enqueue_product_ids.to(self.queue_product_ids.dtype))
        self.queue_pointer.add_(batch_size).remainder_(queue_size)

    def _check_pretraining_batch(
        self,
        pixel_values: torch.Tensor | None,
        positive_pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        product_ids: torch.Tensor | None,
        instance_objectives: bool,
    ) -> None:
        """Raises a ValueError for a batch that breaks the batch contract: a missing input, a tensor of the wrong
        shape or dtype, batch sizes that disagree. Shapes only: the collator's processor checked the values."""
        if pixel_values is None or input_ids is None:
            raise ValueError("EclipForPreTraining needs pixel_values and input_ids (image and product text).")
        self.eclip._check_pixel_values(pixel_values)
        self.eclip._check_text_inputs(input_ids, attention_mask, token_type_ids)
        batch_size = pixel_values.shape[0]
        _check_same_batch_size(batch_size, input_ids.shape[0], "pixel_values", "input_ids")
        if instance_objectives and positive_pixel_values is None:
            raise ValueError(
                "positive_pixel_values (a second image of each product) is required when inter_loss_weight, "
                "itm_loss_weight, intra_loss_weight or entropy_loss_weight is > 0."
            )
        if instance_objectives and product_ids is None:
            raise ValueError("product_ids are required to mask same-product pairs in the ECLIP objectives.")
        if positive_pixel_values is not None:
            self.eclip._check_pixel_values(positive_pixel_values, "positive_pixel_values")
            _check_same_batch_size(batch_size, positive_pixel_values.shape[0], "pixel_values", "positive_pixel_values")
        if product_ids is not None:
            if product_ids.dim() != 1:
                raise ValueError(f"product_ids must be 1-D (batch,), got shape {tuple(product_ids.shape)}.")
            _check_same_batch_size(batch_size, product_ids.shape[0], "pixel_values", "product_ids")

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positive_pixel_values: torch.Tensor | None = None,
        product_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        itc_only: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EclipForPreTrainingOutput | tuple:
        r"""
        Computes the enabled objectives on one (local) batch; with a process group, features are gathered with
        gradients so N processes give the loss and gradients of the global batch. Changes no state: in training mode
        the output carries what [`EclipForPreTraining.enqueue`] writes into the queues after a good step.

        itc_only (`bool`, defaults to `False`):
            Compute L_itc alone for this call (no momentum model, decoder or queue), whatever the config's weights:
            the ITC phase of a recipe whose image tower starts from random init.
        output_hidden_states, output_attentions (`bool`, *optional*):
            Return the online towers' and the decoder's hidden states / attentions in `vision_model_output`,
            `text_model_output` and `decoder_output` (these three are None otherwise, so a training step holds no
            extra activations).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        instance_objectives = config.uses_decoder_objectives and not itc_only
        self._check_pretraining_batch(
            pixel_values,
            positive_pixel_values,
            input_ids,
            attention_mask,
            token_type_ids,
            product_ids,
            instance_objectives,
        )
        rank, _ = distributed_rank_and_world_size()
        batch_size = pixel_values.shape[0]
        row_offset = rank * batch_size

        # Online towers and L_itc (Eq. 6-7).
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        image_raw, patch_embeds, vision_outputs = self.eclip._run_image_tower(pixel_values, **flags, **kwargs)
        text_raw, text_outputs = self.eclip._run_text_tower(
            input_ids, attention_mask, token_type_ids, **flags, **kwargs
        )
        image_embeds, text_embeds = F.normalize(image_raw, dim=-1), F.normalize(text_raw, dim=-1)
        logit_scale = self.eclip.logit_scale.clamp(max=config.logit_scale_max).exp().squeeze(0)  # 0-d: `temperature`
        all_image_embeds, all_text_embeds = gather_features(image_embeds), gather_features(text_embeds)
        all_product_ids = gather_features(product_ids) if product_ids is not None else None
        losses: dict[str, torch.Tensor | None] = dict.fromkeys(OBJECTIVES)
        if config.itc_loss_weight > 0:
            losses["itc"] = image_text_contrastive_loss(
                image_embeds=image_embeds,
                text_embeds=text_embeds,
                all_image_embeds=all_image_embeds,
                all_text_embeds=all_text_embeds,
                logit_scale=logit_scale,
                product_ids=product_ids,
                all_product_ids=all_product_ids,
                row_offset=row_offset,
            )
        instance_embeds = positive_slot = positive_slot_entropy = decoder_output = None
        enqueue = {}
        if instance_objectives:
            # Momentum targets of x+, then the instance decoder with the positive prompt at slot r.
            momentum_instances, momentum_image_prompts, momentum_text_prompts = self._momentum_targets(
                positive_pixel_values, input_ids, attention_mask, token_type_ids
            )
            queries, positive_slot, negative_queries = self._training_queries(
                text_raw,
                momentum_image_prompts,
                image_embeds * logit_scale,
                all_text_embeds,
                all_product_ids,
                product_ids,
            )
            decoder_output = self.eclip.decoder(
                queries, patch_embeds, output_assignment_maps=True, **flags, return_dict=True
            )
            slots = decoder_output.last_hidden_state
            assignment = decoder_output.assignment_maps[-1]
            rows = torch.arange(batch_size, device=slots.device)
            instance_embeds = F.normalize(slots[rows, positive_slot], dim=-1)
            all_momentum_instances = gather_features(momentum_instances)

            if config.inter_loss_weight > 0:
                # The whole queue: the loss masks the slots not yet written (product id -1).
                losses["inter"] = inter_product_contrastive_loss(
                    instance_embeds=instance_embeds,
                    all_momentum_embeds=all_momentum_instances,
                    logit_scale=logit_scale,
                    product_ids=product_ids,
                    all_product_ids=all_product_ids,
                    queue_embeds=self.queue_embeds,
                    queue_product_ids=self.queue_product_ids,
                    row_offset=row_offset,
                )
            if config.itm_loss_weight > 0:
                losses["itm"] = instance_text_matching_loss(
                    itm_head=self.itm_head,
                    instance_embeds=instance_embeds,
                    image_embeds=image_embeds,
                    text_embeds=text_embeds,
                    all_image_embeds=all_image_embeds,
                    all_text_embeds=all_text_embeds,
                    product_ids=product_ids,
                    all_product_ids=all_product_ids,
                )
            if config.intra_loss_weight > 0:
                losses["intra"] = intra_product_contrastive_loss(
                    slot_embeds=slots, text_embeds=text_embeds, positive_slot=positive_slot, logit_scale=logit_scale
                )
            slot_entropy = slot_token_entropy(assignment if config.entropy_loss_weight > 0 else assignment.detach())
            if config.entropy_loss_weight > 0:
                losses["entropy"] = assignment_entropy_regularizer(
                    slot_entropy=slot_entropy,
                    positive_slot=positive_slot,
                    num_tokens=assignment.shape[1],
                    negative_weight=config.negative_entropy_weight,
                )

            positive_slot_entropy = slot_entropy.detach()[rows, positive_slot].mean()
            if self.training:
                enqueue = {
                    "enqueue_embeds": all_momentum_instances,
                    "enqueue_prompts": gather_features(momentum_text_prompts),
                    "enqueue_product_ids": all_product_ids,
                    # Over the global batch, so every process (and its DDP/FSDP replica) moves the "ema" alike.
                    "negative_queries_mean": mean_over_processes(negative_queries.detach().float().mean(0)),
                }

        weights = {name: getattr(config, f"{name}_loss_weight") for name in OBJECTIVES}
        asked = {}
        if output_hidden_states or output_attentions:
            asked = {"vision_model_output": vision_outputs, "text_model_output": text_outputs}
            asked["decoder_output"] = decoder_output
        output = EclipForPreTrainingOutput(
            loss=sum(weights[name] * value for name, value in losses.items() if value is not None),
            **{f"loss_{name}": value for name, value in losses.items()},
            temperature=(1.0 / logit_scale).detach(),
            positive_slot_entropy=positive_slot_entropy,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            instance_embeds=instance_embeds,
            positive_slot=positive_slot,
            **enqueue,
            **asked,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def _momentum_targets(
        self,
        positive_pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The momentum model's pass over x+: the normalised Eq. 8 targets h_xi (decoded as at transfer, Sec. 3.4), the
        image prompts g_I(v_cls) of x+ and the normalised text prompts g_T(w_cls), each `(B, D)`."""
        momentum = self.momentum_eclip
        image_prompts, patches, _ = momentum._run_image_tower(positive_pixel_values)
        text_prompts, _ = momentum._run_text_tower(input_ids, attention_mask, token_type_ids)
        text_types = torch.full((text_prompts.shape[0],), TEXT_PROMPT, dtype=torch.long, device=text_prompts.device)
        decoded = momentum.decode_instances(patches, text_prompts, text_types, output_assignment_maps=False)
        instances = F.normalize(decoded.last_hidden_state[:, 0], dim=-1)
        return instances, image_prompts, F.normalize(text_prompts, dim=-1)

    def _training_queries(
        self,
        text_prompts: torch.Tensor,
        image_prompts: torch.Tensor,
        scaled_image_embeds: torch.Tensor,
        all_text_embeds: torch.Tensor,
        all_product_ids: torch.Tensor,
        product_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 1 queries `(B, T, D)` of a training batch: the text prompt g_T(w_cls), or with `image_prompt_probability`
        the image prompt g_I(v_cls) of x+, at slot r (random when `random_positive_slot`), other products' prompts as
        negatives (`scaled_image_embeds`, the unit g_I(v_cls) of x times 1/tau, rank them for "hard" sampling). Returns
        the queries, r `(B,)` and the negative queries `(B, T-1, D)`."""
        config = self.config
        batch_size, device = text_prompts.shape[0], text_prompts.device
        use_image_prompt = torch.rand(batch_size, device=device) < config.image_prompt_probability
        image_prompts = image_prompts.to(text_prompts.dtype)
        positive_prompts = torch.where(use_image_prompt.unsqueeze(-1), image_prompts, text_prompts)
        positive_types = use_image_prompt.long()  # TEXT_PROMPT = 0, IMAGE_PROMPT = 1
        if config.random_positive_slot:
            positive_slot = torch.randint(0, config.decoder_config.num_queries, (batch_size,), device=device)
        else:
            positive_slot = torch.zeros(batch_size, dtype=torch.long, device=device)
        negative_queries = self._select_negative_queries(
            all_text_embeds, all_product_ids, product_ids, scaled_image_embeds
        )
        queries = self.eclip.build_instance_queries(
            self.eclip.prompts_to_query_space(positive_prompts),
            positive_types,
            negative_queries,
            positive_slot=positive_slot,
        )
        return queries, positive_slot, negative_queries

    def _select_negative_queries(
        self,
        all_prompts: torch.Tensor,
        all_product_ids: torch.Tensor,
        product_ids: torch.Tensor,
        scaled_image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """T-1 negative queries per local row, never of the row's own product, from the batch's prompts and the
        queue's (then the Gaussian set when both are short).

        `"random"` sampling: uniformly, the batch's products first. `"hard"`: each other product once, drawn without
        replacement with probability softmax(s(x, prompt) / tau) by the Gumbel top-k trick (keys = scaled similarity +
        Gumbel noise), so products that look like the image, those in it included, are drawn most often."""
        num_negatives = self.config.decoder_config.num_queries - 1
        candidates = torch.cat([all_prompts.detach(), self.queue_prompts.to(all_prompts.dtype)], dim=0)
        candidate_ids = torch.cat([all_product_ids, self.queue_product_ids], dim=0)
        valid = (candidate_ids[None, :] != product_ids[:, None]) & (candidate_ids[None, :] >= 0)
        if self.config.negative_prompt_sampling == "hard":
            if scaled_image_embeds is None:
                raise ValueError("negative_prompt_sampling='hard' ranks the prompts by scaled_image_embeds; pass them.")
            valid &= _first_occurrences(candidate_ids)[None, :]
            similarity = scaled_image_embeds.detach().float() @ candidates.float().t()
            uniform = torch.rand(valid.shape, device=valid.device).clamp(1e-12, 1.0 - 1e-7)
            keys = similarity - torch.log(-torch.log(uniform))
            # Shifted so every valid key is >= 1 and the invalid ones are 0, as in the random branch.
            keys = torch.where(valid, keys - keys.masked_fill(~valid, float("inf")).amin() + 1.0, 0.0)
        else:
            # Random keys: batch candidates in (2, 3), queue candidates in (1, 2), invalid 0 -> batch before queue.
            keys = torch.rand(valid.shape, device=valid.device)
            keys[:, : all_prompts.shape[0]] += 1.0
            keys = torch.where(valid, keys + 1.0, torch.zeros_like(keys))
        picked_keys, picked = keys.topk(min(num_negatives, keys.shape[1]), dim=1)
        negatives = self.eclip.prompts_to_query_space(candidates[picked])
        gaussian = self.eclip.gaussian_negative_queries.to(negatives.dtype)
        if negatives.shape[1] < num_negatives:
            pad = gaussian[negatives.shape[1] :].expand(negatives.shape[0], -1, -1)
            negatives = torch.cat([negatives, pad], dim=1)
            picked_keys = F.pad(picked_keys, (0, pad.shape[1]))
        fallback = gaussian.expand_as(negatives)
        return torch.where((picked_keys > 0).unsqueeze(-1), negatives, fallback)


@dataclass
class EclipObjectDetectionOutput(ModelOutput):
    r"""
    Output of [`EclipForObjectDetection`], in the layout of DETR's (`DetrObjectDetectionOutput`), so transformers'
    object-detection pipeline and `post_process_object_detection` read it.

    loss (`torch.FloatTensor`, *optional*, returned when `labels` are given):
        The DETR loss: cross-entropy over the classes and "no object", L1 and generalised-IoU box losses after
        Hungarian matching, weighted by the config (`bbox_loss_coefficient`, `giou_loss_coefficient`), plus the same
        per decoder block with `auxiliary_loss`.
    loss_dict (`dict`, *optional*): the unweighted terms (`loss_ce`, `loss_bbox`, `loss_giou`, `cardinality_error`).
    logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_labels + 1)`):
        Class logits of every slot; the last class is "no object".
    pred_boxes (`torch.FloatTensor` of shape `(batch_size, num_queries, 4)`):
        Boxes as (center_x, center_y, width, height), normalised to [0, 1] by the image size.
    auxiliary_outputs (`list[dict]`, *optional*, with `auxiliary_loss` and `labels`):
        `logits` and `pred_boxes` after every decoder block but the last.
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, projection_dim)`):
        The decoder's slots H^L, what the heads read.
    decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`):
        H^0 and the slots after every decoder block.
    encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_patches, projection_dim)`):
        The projected patch tokens Z the decoder attends to.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    auxiliary_outputs: list[dict] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None


class EclipForObjectDetection(EclipPreTrainedModel):
    r"""
    ECLIP transferred to object detection "following DETR" (Sec. 4.2.5, Table 4 right): the image tower embeds the
    image, the instance decoder decodes T slots, and new heads predict each slot's class (`num_labels` + "no object",
    a linear layer) and box (normalised center_x, center_y, width, height; DETR's 3-layer MLP and sigmoid). Trained
    with transformers' DETR loss (`transformers.loss.loss_for_object_detection`: Hungarian matching, CE + L1 + GIoU)
    on `labels` in DETR's format.

    The detection queries are the transfer-time queries of Sec. 3.4 with the image as its own prompt: slot 0 holds
    g_I(v_cls), slots 1..T-1 the seeded standard-Gaussian negative queries (always, whatever `negative_query_mode`, so
    a prediction never depends on the batch), each plus its learned q^pos and q^type (Eq. 1). These are queries the
    pretrained decoder already decodes, its slots competing for the image's tokens (Eq. 3); the fixed Gaussian parts
    and the learned position embeddings play the role of DETR's object queries. There is no text prompt, and at most
    T objects are found per image.

    Built from a pretrained ECLIP checkpoint with
    `EclipForObjectDetection.from_pretrained(eclip_dir, num_labels=..., id2label=...)`: the towers, projections,
    query embeddings and decoder load (an `EclipForPreTraining` checkpoint's momentum copy, ITM head and queues are
    left out), the heads are new and reported as newly initialised. The text tower is kept, so
    `EclipModel.from_pretrained` on a detection checkpoint gives back the whole (fine-tuned) ECLIP, but detection
    never runs it: freeze it when fine-tuning (`text_parameters()`).
    """

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _keys_to_ignore_on_load_unexpected = [r"momentum_eclip\.", r"itm_head\.", r"queue_"]

    def __init__(self, config: EclipConfig):
        super().__init__(config)
        dim = config.projection_dim
        self.eclip = EclipModel(config)
        self.class_labels_classifier = nn.Linear(dim, config.num_labels + 1)  # + "no object"
        self.bbox_predictor = DetrMLPPredictionHead(input_dim=dim, hidden_dim=dim, output_dim=4, num_layers=3)
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """As `PreTrainedModel.save_pretrained`. With remote code registered, `config.json` also names the package's
        object-detection pipeline (`custom_pipelines`, its code copied with the model's), so `pipeline(
        "object-detection", model=save_directory, trust_remote_code=True)` decodes images with the package's decoder,
        as training and evaluation do, rather than with transformers' `load_image`. Only that entry: a pretraining
        checkpoint's zero-shot pipeline needs the tokenizer a detection checkpoint leaves out."""
        if self._auto_class is not None:
            self.config.custom_pipelines = {OBJECT_DETECTION_TASK: dict(OBJECT_DETECTION_PIPELINE)}
        super().save_pretrained(save_directory, *args, **kwargs)

    def text_parameters(self) -> list[nn.Parameter]:
        """The parameters detection never uses (text tower, g_T, temperature, the "ema" negatives are a buffer)."""
        eclip = self.eclip
        return [*eclip.text_model.parameters(), *eclip.text_projection.parameters(), eclip.logit_scale]

    def detection_queries(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """The T detection queries `(B, T, D)`: g_I(v_cls) as the image prompt in slot 0, the Gaussian negative
        queries elsewhere, plus q^pos and q^type (Eq. 1, Sec. 3.4)."""
        eclip = self.eclip
        positives = eclip.prompts_to_query_space(image_embeds)
        negatives = eclip.gaussian_negative_queries.to(positives.dtype).expand(positives.shape[0], -1, -1)
        types = torch.full((positives.shape[0],), IMAGE_PROMPT, dtype=torch.long, device=positives.device)
        return eclip.build_instance_queries(positives, types, negatives)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: list[dict[str, torch.Tensor]] | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EclipObjectDetectionOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            Images from the model's [`EclipImageProcessor`] (the whole image resized, so normalised boxes keep their
            meaning).
        labels (`list[dict]`, *optional*):
            One dict per image, DETR's format: `class_labels` (`torch.LongTensor` `(num_boxes,)`, in
            `[0, num_labels)`) and `boxes` (`torch.FloatTensor` `(num_boxes, 4)`, center_x, center_y, width, height
            normalised to [0, 1]). An image may have no boxes (every slot is then "no object"). Entries that are
            not tensors (lists, say) are a `TypeError` naming them, as DETR takes tensors only; labels of another
            shape or dtype are a `ValueError`; their values (a box outside the image, one with no width or height, a
            non-finite value, an unknown label) are checked by the detection collator (`check_detection_labels` in
            `modeling_eclip.detection.data`), not here.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None:
            _check_detection_label_shapes(labels, pixel_values.shape[0])
        auxiliary = self.config.auxiliary_loss and labels is not None
        image_embeds, patch_embeds, _ = self.eclip.encode_image(pixel_values, **kwargs)
        decoder_output = self.eclip.decoder(
            self.detection_queries(image_embeds),
            patch_embeds,
            output_hidden_states=bool(output_hidden_states or auxiliary),
            return_dict=True,
        )
        slots = decoder_output.last_hidden_state
        logits = self.class_labels_classifier(slots)
        pred_boxes = self.bbox_predictor(slots).sigmoid()

        loss = loss_dict = auxiliary_outputs = None
        if labels is not None:
            # Imported here: its Hungarian matcher pulls in scipy.optimize, which inference never needs.
            from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

            outputs_class = outputs_coord = None
            if auxiliary:
                # Every block's slots through the decoder's final LayerNorm, as DETR reads its intermediate outputs.
                layernorm = self.eclip.decoder.layernorm
                intermediate = torch.stack([*map(layernorm, decoder_output.hidden_states[1:-1]), slots])
                outputs_class = self.class_labels_classifier(intermediate)
                outputs_coord = self.bbox_predictor(intermediate).sigmoid()
            loss, loss_dict, auxiliary_outputs = ForObjectDetectionLoss(
                logits=logits,
                labels=labels,
                device=logits.device,
                pred_boxes=pred_boxes,
                config=self._detection_loss_config(),
                outputs_class=outputs_class,
                outputs_coord=outputs_coord,
            )
        output = EclipObjectDetectionOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=logits,
            pred_boxes=pred_boxes,
            auxiliary_outputs=auxiliary_outputs,
            last_hidden_state=slots,
            decoder_hidden_states=decoder_output.hidden_states if output_hidden_states else None,
            encoder_last_hidden_state=patch_embeds,
        )
        return output if return_dict else output.to_tuple()

    def _detection_loss_config(self) -> SimpleNamespace:
        """What transformers' DETR loss reads from a config, under DETR's names (`decoder_layers` is the number of
        decoder blocks, for the auxiliary losses)."""
        config = self.config
        fields = {name: getattr(config, name) for name in DETECTION_LOSS_FIELDS}
        return SimpleNamespace(
            **fields,
            num_labels=config.num_labels,
            auxiliary_loss=config.auxiliary_loss,
            decoder_layers=config.decoder_config.num_hidden_layers,
        )


def _check_detection_label_shapes(labels: list[dict[str, torch.Tensor]], batch_size: int) -> None:
    """Raises for labels not in DETR's format: one mapping per image (a dict, or the `BatchFeature` DETR's image
    processor makes) with `class_labels` an integer `torch.Tensor` `(num_boxes,)` and `boxes` a floating-point
    `torch.Tensor` `(num_boxes, 4)`. A list or other non-tensor is a `TypeError` naming the entry, as in
    transformers' DETR, which takes tensors only; a wrong shape or dtype a `ValueError`. Structure, shapes and dtypes
    only; the values (classes in range, boxes finite and inside the image) are checked by the detection collator,
    `modeling_eclip.detection.data.check_detection_labels`."""
    if not isinstance(labels, (list, tuple)) or len(labels) != batch_size:
        raise ValueError(f"labels must be a list of one dict per image ({batch_size}), got {type(labels).__name__}")
    for index, target in enumerate(labels):
        where = f"labels[{index}]"
        if not isinstance(target, Mapping) or "class_labels" not in target or "boxes" not in target:
            raise ValueError(f"{where} must be a dict with 'class_labels' and 'boxes' (DETR's format)")
        for key, example in (("class_labels", "torch.tensor([2, 0])"), ("boxes", "torch.tensor([[cx, cy, w, h]])")):
            if not isinstance(target[key], torch.Tensor):
                raise TypeError(
                    f'{where}["{key}"] must be a torch.Tensor (e.g. {example}), got {type(target[key]).__name__}'
                )
        classes, boxes = target["class_labels"], target["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or classes.shape != boxes.shape[:1]:
            raise ValueError(
                f"{where}: boxes must be (num_boxes, 4) with one class label each, got boxes {tuple(boxes.shape)} "
                f"and class_labels {tuple(classes.shape)}"
            )
        if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
            raise ValueError(f"{where}: class_labels must be integers, got dtype {classes.dtype}")
        if not boxes.dtype.is_floating_point:
            raise ValueError(f"{where}: boxes must be floating point (normalised to [0, 1]), got dtype {boxes.dtype}")


def _first_occurrences(ids: torch.Tensor) -> torch.Tensor:
    """`(n,)` bool: True at the first position of every distinct value of `ids` (a product queued several times, or
    both in the batch and the queue, is one candidate). A stable sort, so no shape depends on the values (as the
    number of distinct ids of `torch.unique` would) and the device is never asked for one."""
    sorted_ids, order = ids.sort(stable=True)
    # Equal ids keep their order, so the first of each run of equal ids is the earliest position.
    run_starts = torch.ones_like(sorted_ids, dtype=torch.bool)
    run_starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return torch.empty_like(run_starts).scatter_(0, order, run_starts)


def _positive_first_to_slot_order(positive_slot: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Gather indices `(B, T)` that move column 0 (the positive) to column r and shift columns 1..r left by one."""
    slots = torch.arange(num_queries, device=positive_slot.device).unsqueeze(0)
    r = positive_slot.view(-1, 1)
    return torch.where(slots == r, 0, torch.where(slots < r, slots + 1, slots))


def _check_prompt_texts(pixel_values: Any, input_ids: Any, method: str) -> None:
    """In `get_instance_features` / `get_grounding_map` the texts are the images' prompts, one each; `forward` would
    only score any other number of texts and let each image prompt itself, silently."""
    if not (isinstance(pixel_values, torch.Tensor) and isinstance(input_ids, torch.Tensor)):
        return  # forward names whatever else is wrong
    # Shapes, not len(): len() of a traced tensor is a plain int and would fix the exported batch size.
    batches_differ = pixel_values.shape[0] != input_ids.shape[0] if pixel_values.dim() == 4 else False
    if input_ids.dim() == 2 and input_ids.numel() and batches_differ:
        raise ValueError(
            f"{method} takes one text per image as its prompt: pixel_values has {pixel_values.shape[0]} rows but "
            f"input_ids has {input_ids.shape[0]}. To score texts against images, call the model itself."
        )


def _check_same_batch_size(expected: int, actual: int, expected_name: str, actual_name: str) -> None:
    """Raises a ValueError naming both arguments when two inputs that pair row by row have different batch sizes."""
    if expected != actual:
        raise ValueError(
            f"{expected_name} has batch size {expected} but {actual_name} has {actual}: one per image is needed here."
        )


def _load_tower(name_or_path: str, **kwargs) -> PreTrainedModel:
    """Loads a pretrained tower without its pooler."""
    config = AutoConfig.from_pretrained(name_or_path, **{k: v for k, v in kwargs.items() if k == "revision"})
    return AutoModel.from_pretrained(name_or_path, **{**_without_pooler(config), **kwargs})


__all__ = [
    "LOSS_NAMES",
    "EclipForObjectDetection",
    "EclipForPreTraining",
    "EclipForPreTrainingOutput",
    "EclipDecoderOutput",
    "EclipInstanceDecoder",
    "EclipModel",
    "EclipObjectDetectionOutput",
    "EclipOutput",
    "EclipPreTrainedModel",
]
