# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of `EclipConfig` / `EclipDecoderConfig`: validation, serialisation and the shipped presets."""

import json
import pathlib

import pytest
import torch
from helpers import MINILM_DIR, tiny_config
from transformers import AutoConfig, BertConfig

from modeling_eclip import EclipConfig, EclipDecoderConfig, EclipModel

PRESET_DIR = pathlib.Path(__file__).resolve().parent.parent / "configuration"
PRESETS = sorted(PRESET_DIR.glob("*.json"))
# Paper, Sec. 4.1: ECLIP with ViT-B/16 has 220M parameters and with ViT-L/16 450M.
PAPER_PARAMETER_COUNTS = {"eclip-vit-b16": 220e6, "eclip-vit-l16": 450e6}


def _comparable(config) -> dict:
    """`to_dict()` without the fields that record where a config was loaded from."""
    return {
        key: value for key, value in config.to_dict().items() if key not in ("_name_or_path", "transformers_version")
    }


# ----- validation -----


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"decoder_config": {"num_queries": 1}}, "num_queries"),
        ({"decoder_config": {"num_queries": 0}}, "num_queries"),
        ({"decoder_config": {"num_attention_heads": 3}}, "num_attention_heads"),
        ({"decoder_config": {"hidden_size": 32}}, "projection_dim"),
        ({"decoder_config": {"negative_query_mode": "uniform"}}, "negative_query_mode"),
        ({"vision_config": {"image_size": 36}}, "image_size"),
        ({"vision_config": {"patch_size": 5}}, "patch_size"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.5}, "momentum"),
        ({"momentum": 1.5}, "momentum"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_decoder_hidden_size_must_equal_projection_dim():
    with pytest.raises(ValueError, match=r"hidden_size.*projection_dim"):
        EclipConfig(projection_dim=16, decoder_config={"hidden_size": 32, "num_attention_heads": 2})


def test_vision_config_without_patches_is_rejected():
    with pytest.raises(ValueError, match="vision_config"):
        EclipConfig(vision_config={"model_type": "bert"}, projection_dim=16, decoder_config={"num_attention_heads": 2})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_queries": 1}, "num_queries"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "num_attention_heads"),
        ({"negative_query_mode": "random"}, "negative_query_mode"),
    ],
)
def test_decoder_config_alone_validates(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EclipDecoderConfig(**kwargs)


def test_valid_edge_values_are_accepted():
    config = tiny_config(momentum=0.0, decoder_config={"num_queries": 2})
    assert config.momentum == 0.0
    assert config.decoder_config.num_queries == 2
    for mode in ("gaussian", "text", "ema"):
        assert tiny_config(decoder_config={"negative_query_mode": mode}).decoder_config.negative_query_mode == mode


def test_decoder_hidden_size_defaults_to_projection_dim():
    config = EclipConfig(projection_dim=64, decoder_config={"num_attention_heads": 4})
    assert config.decoder_config.hidden_size == 64
    assert EclipConfig(projection_dim=128).decoder_config.hidden_size == 128


def test_derived_sizes(config):
    assert config.image_size == 32
    assert config.patch_size == 8
    assert config.num_patches_per_side == 4


# ----- serialisation -----


def test_save_load_round_trip_with_nested_configs(tmp_path):
    config = tiny_config(
        momentum=0.9,
        queue_size=32,
        itm_loss_weight=0.5,
        decoder_config={"negative_query_mode": "ema", "negative_query_seed": 7},
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "eclip"
    assert saved["decoder_config"]["negative_query_mode"] == "ema"
    assert saved["vision_config"]["model_type"] == "vit"

    loaded = EclipConfig.from_pretrained(tmp_path)
    assert _comparable(loaded) == _comparable(config)
    assert loaded.momentum == 0.9
    assert loaded.queue_size == 32
    assert loaded.itm_loss_weight == 0.5
    assert isinstance(loaded.decoder_config, EclipDecoderConfig)
    assert loaded.decoder_config.negative_query_seed == 7
    assert loaded.vision_config.model_type == "vit"
    assert loaded.vision_config.patch_size == 8
    assert loaded.vision_config.hidden_size == 32
    assert loaded.text_config.model_type == "bert"
    assert loaded.text_config.num_hidden_layers == 2
    assert loaded.text_config.vocab_size == 30522

    auto = AutoConfig.from_pretrained(tmp_path)
    assert auto.model_type == "eclip"
    assert _comparable(auto) == _comparable(config)


def test_decoder_config_from_full_checkpoint_dir(tmp_path):
    config = tiny_config(decoder_config={"num_queries": 6, "negative_query_seed": 3})
    config.save_pretrained(tmp_path)
    decoder_config = EclipDecoderConfig.from_pretrained(tmp_path)
    assert isinstance(decoder_config, EclipDecoderConfig)
    assert decoder_config.model_type == "eclip_decoder"
    assert decoder_config.num_queries == 6
    assert decoder_config.negative_query_seed == 3
    assert decoder_config.hidden_size == 16
    assert decoder_config.num_hidden_layers == 2


def test_decoder_config_round_trip(tmp_path):
    config = EclipDecoderConfig(hidden_size=24, num_attention_heads=3, num_queries=5, negative_query_mode="text")
    config.save_pretrained(tmp_path)
    loaded = EclipDecoderConfig.from_pretrained(tmp_path)
    assert _comparable(loaded) == _comparable(config)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "eclip_decoder"


def test_from_vision_text_configs():
    from transformers import ViTConfig

    vision = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    text = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)
    config = EclipConfig.from_vision_text_configs(vision, text, projection_dim=16, decoder_config={"num_queries": 3})
    assert config.vision_config.patch_size == 8
    assert config.text_config.vocab_size == 100
    assert config.decoder_config.hidden_size == 16
    assert config.decoder_config.num_queries == 3


# ----- presets -----


def test_presets_exist():
    names = {path.stem for path in PRESETS}
    assert {"eclip-tiny", "eclip-vit-b16", "eclip-vit-l16"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=[path.stem for path in PRESETS])
def test_every_preset_loads(path):
    config = EclipConfig.from_json_file(path)
    assert config.model_type == "eclip"
    assert config.decoder_config.hidden_size == config.projection_dim
    assert config.image_size % config.patch_size == 0
    with torch.device("meta"):
        model = EclipModel(config)
    assert model.decoder.config.num_queries == config.decoder_config.num_queries


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETER_COUNTS))
def test_preset_parameter_count_matches_paper(name):
    config = EclipConfig.from_json_file(PRESET_DIR / f"{name}.json")
    with torch.device("meta"):
        model = EclipModel(config)
    count = sum(parameter.numel() for parameter in model.parameters())
    expected = PAPER_PARAMETER_COUNTS[name]
    assert abs(count - expected) / expected < 0.05, f"{name}: {count / 1e6:.1f}M vs paper {expected / 1e6:.0f}M"


def test_paper_presets_follow_the_paper():
    for name, vision_hidden, vision_layers in (("eclip-vit-b16", 768, 12), ("eclip-vit-l16", 1024, 24)):
        config = EclipConfig.from_json_file(PRESET_DIR / f"{name}.json")
        assert config.vision_config.hidden_size == vision_hidden
        assert config.vision_config.num_hidden_layers == vision_layers
        assert config.patch_size == 16
        assert config.decoder_config.num_queries == 20  # T = 20
        assert config.decoder_config.num_hidden_layers == 6  # L = 6


def test_tiny_preset():
    config = EclipConfig.from_json_file(PRESET_DIR / "eclip-tiny.json")
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (192, 4, 3)
    assert (config.patch_size, config.image_size) == (16, 128)

    minilm = BertConfig.from_pretrained(MINILM_DIR)
    assert (minilm.hidden_size, minilm.num_hidden_layers) == (384, 6)
    text = config.text_config
    assert text.model_type == minilm.model_type == "bert"
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "type_vocab_size",
        "hidden_act",
    ):
        assert getattr(text, field) == getattr(minilm, field), field
