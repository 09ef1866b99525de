# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of `examples/pretrain.py` / `modeling_eclip.training`: bad recipes fail before compute, non-finite
losses are skipped and counted, the Hub upload (through a stand-in for the Hub API), the ITC-only baseline recipe and a
2-process CPU run with torchrun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    EXPORT_FILES,
    REPO,
    TINY_BATCH,
    HubApiStandIn,
    read_metrics,
    subprocess_env,
    tiny_run_arguments,
    write_tiny_model_config,
)

from modeling_eclip import EclipConfig, EclipModel
from modeling_eclip.demo import catalogue as demo_builder
from modeling_eclip.modeling_eclip import EclipForPreTraining
from modeling_eclip.training import (
    NonFiniteLossError,
    check_arguments,
    load_model_config,
    load_recipe,
    parse_arguments,
    pretrain,
)
from modeling_eclip.training import run as training_run
from modeling_eclip.training.arguments import shipped_names
from modeling_eclip.training.builders import build_model_and_processor, parameter_groups

# ----------------------------------------------------------------------------------------------- recipes and checks


def test_the_package_ships_the_presets_and_recipes_of_configuration() -> None:
    assert shipped_names("eclip-", ".json") == sorted(p.stem for p in (REPO / "configuration").glob("eclip-*.json"))
    assert shipped_names("recipe-", ".yaml") == sorted(p.stem for p in (REPO / "configuration").glob("recipe-*.yaml"))
    assert {"eclip-tiny", "eclip-vit-b16", "eclip-vit-l16"} <= set(shipped_names("eclip-", ".json"))


@pytest.mark.parametrize("recipe", shipped_names("recipe-", ".yaml"))
def test_shipped_recipes_parse_and_their_model_configs_load(recipe: str) -> None:
    args = parse_arguments(["--config", recipe])
    assert args == parse_arguments(["--config", str(REPO / "configuration" / f"{recipe}.yaml")])
    config = load_model_config(args)
    assert config.queue_size % args.per_device_train_batch_size == 0
    if "itc-only" in recipe:
        assert config.itc_loss_weight > 0
        assert all(getattr(config, name) == 0 for name in config.loss_weight_names if name != "itc_loss_weight")


def test_flags_override_the_recipe() -> None:
    args = parse_arguments(["--config", str(REPO / "configuration" / "recipe-demo.yaml"), "--max_steps", "7"])
    assert args.max_steps == 7
    assert args.model_config == "eclip-tiny"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"model_config": "eclip-huge"}, "unknown model preset 'eclip-huge'"),
        ({"per_device_train_batch_size": 32}, "larger than queue_size"),
        ({"per_device_train_batch_size": 3}, "must be a multiple of the global batch size"),
        ({"dataset_name": "/nonexistent/catalogue"}, "dataset /nonexistent/catalogue is not a folder"),
        ({"warmup_steps": 8}, "warmup_steps (8) must be smaller than max_steps (8)"),
        ({"push_to_hub": True}, "push_to_hub needs hub_model_id"),
        ({"resume": "/nonexistent/checkpoint-3"}, "is not a complete checkpoint"),
        ({"mixed_precision": "fp12"}, "mixed_precision must be one of"),
        ({"config_overrides": '{"queue_sise": 4}'}, "unknown EclipConfig fields ['queue_sise']"),
        ({"anchor_kind": "poster"}, "anchor_kind must be one of ('catalog', 'customer', 'ad')"),
        ({"instance_objectives_start_step": -1}, "instance_objectives_start_step must be >= 0, got -1"),
    ],
)
def test_bad_configuration_fails_before_any_compute(
    flags: dict, message: str, model_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the configuration was checked")

    monkeypatch.setattr(EclipForPreTraining, "__init__", no_model)
    data_dir = tmp_path / "data"
    (data_dir / "train").mkdir(parents=True)
    output_dir = tmp_path / "out"
    args = parse_arguments(tiny_run_arguments(model_config, data_dir, output_dir, **flags))
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        pretrain(args)
    assert message in str(error.value)
    assert not output_dir.exists()


def test_build_demo_catalogue_builds_a_missing_data_dir_first(
    demo_catalogue: Path, model_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []

    def build_catalogue(output: Path, seed: int) -> None:  # a copy of the tiny catalogue instead of the full build
        built.append(output)
        shutil.copytree(demo_catalogue, output)

    monkeypatch.setattr(demo_builder, "build_catalogue", build_catalogue)
    data_dir = tmp_path / "demo"
    flags = {"max_steps": 1, "warmup_steps": 0, "save_steps": 0, "build_demo_catalogue": True}
    assert pretrain(parse_arguments(tiny_run_arguments(model_config, data_dir, tmp_path / "out", **flags))).step == 1
    assert built == [data_dir]
    pretrain(parse_arguments(tiny_run_arguments(model_config, data_dir, tmp_path / "again", **flags)))
    assert built == [data_dir]  # built once, on first use


def test_recipe_with_an_unknown_key_is_rejected(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 10\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="unknown keys \\['learning_rat'\\]"):
        load_recipe(recipe)


def test_a_recipe_starts_from_its_base_recipe(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "max_steps: 10\nlearning_rate: 0.1\nconfig_overrides:\n  queue_size: 64\n  itm_loss_weight: 0.5\n"
    )
    (tmp_path / "child.yaml").write_text(
        "base_recipe: base.yaml\nmax_steps: 20\nconfig_overrides:\n  itm_loss_weight: 0\n"
    )
    recipe = load_recipe(tmp_path / "child.yaml")
    assert recipe == {
        "max_steps": 20,
        "learning_rate": 0.1,
        "config_overrides": {"queue_size": 64, "itm_loss_weight": 0},
    }
    # A shipped recipe by name, and a loop of bases is an error naming the chain.
    (tmp_path / "shipped.yaml").write_text("base_recipe: recipe-demo\nmax_steps: 3\n")
    assert load_recipe(tmp_path / "shipped.yaml")["model_config"] == "eclip-tiny"
    (tmp_path / "a.yaml").write_text("base_recipe: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base_recipe: a.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "typo.yaml").write_text("base_recipe: base.yaml\nmax_step: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['max_step'\\]"):
        load_recipe(tmp_path / "typo.yaml")


def test_parameter_groups_give_each_role_its_learning_rate(model_config: Path, tmp_path: Path) -> None:
    args = parse_arguments(
        tiny_run_arguments(model_config, tmp_path, tmp_path / "out")
        + ["--learning_rate", "1e-5", "--vision_learning_rate", "3e-4", "--new_parameters_learning_rate", "1e-3"]
    )
    model = EclipForPreTraining(load_model_config(args))
    groups = parameter_groups(model, args, ["eclip.vision_model.", "eclip.text_model."])
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates == {"new": 1e-3, "pretrained": 1e-5, "pretrained_vision": 3e-4}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        roles = {
            "pretrained_vision" if names[id(p)].startswith("eclip.vision_model.")
            else "pretrained" if names[id(p)].startswith("eclip.text_model.") else "new"
            for p in group["params"]
        }  # fmt: skip
        assert roles == {group["name"]}
    with pytest.raises(ValueError, match="vision_learning_rate"):
        check_arguments(parse_arguments(tiny_run_arguments(model_config, tmp_path, tmp_path / "o") + [
            "--vision_learning_rate", "0"]))  # fmt: skip


def test_check_arguments_counts_every_process_in_the_global_batch(model_config: Path, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    args = parse_arguments(tiny_run_arguments(model_config, tmp_path, tmp_path / "out"))
    assert check_arguments(args, world_size=4).queue_size == 16
    with pytest.raises(ValueError, match="larger than queue_size"):
        check_arguments(args, world_size=8)


def test_a_tokenizer_larger_than_the_text_tower_is_refused_before_the_model(tmp_path: Path) -> None:
    """The collator cannot check token ids against the model (the forward no longer reads values), so the tokenizer
    and the text tower are matched once at start: 30,522 MiniLM ids into a 100-word tower would fail mid-run."""
    (tmp_path / "train").mkdir()
    small = write_tiny_model_config(tmp_path / "small.json", text_config={"vocab_size": 100})
    args = parse_arguments(tiny_run_arguments(small, tmp_path, tmp_path / "out"))
    with pytest.raises(ValueError, match="tokenizer has 30522 ids but the text tower's vocabulary has 100"):
        build_model_and_processor(args, EclipConfig.from_json_file(small))


# ----------------------------------------------------------------------------------------------- non-finite losses


def poison_losses(monkeypatch: pytest.MonkeyPatch, calls: set[int] | None) -> list[torch.Tensor]:
    """Makes the loss NaN on the given forward calls (1-based; None: from the third call on); records the queue
    pointer before each forward."""
    original = EclipForPreTraining.forward
    pointers = []
    count = [0]

    def forward(self, *args, **kwargs):
        pointers.append(self.queue_pointer.clone())
        output = original(self, *args, **kwargs)
        count[0] += 1
        if (calls is None and count[0] >= 3) or (calls is not None and count[0] in calls):
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(EclipForPreTraining, "forward", forward)
    return pointers


def test_a_non_finite_loss_skips_the_step_and_is_counted(
    demo_catalogue: Path, model_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_losses(monkeypatch, {3})
    output_dir = tmp_path / "out"
    args = parse_arguments(tiny_run_arguments(model_config, demo_catalogue, output_dir, max_steps=4, save_steps=0))
    result = pretrain(args)
    assert result.step == 4  # the skipped batch does not count as a step; training made up for it
    assert result.summary["skipped_nonfinite"] == 1
    metrics = read_metrics(output_dir)
    assert metrics[2]["skipped_nonfinite"] == 0 and metrics[3]["skipped_nonfinite"] == 1
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in metrics.values())


def test_consecutive_non_finite_losses_stop_and_name_the_last_good_checkpoint(
    demo_catalogue: Path, model_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pointers = poison_losses(monkeypatch, None)
    output_dir = tmp_path / "out"
    args = parse_arguments(
        tiny_run_arguments(model_config, demo_catalogue, output_dir, max_consecutive_nonfinite=3, save_steps=2)
    )
    with pytest.raises(NonFiniteLossError, match=f"3 consecutive non-finite losses.*{output_dir / 'checkpoint-2'}"):
        pretrain(args)
    # Skipped batches leave the queues as they were: the pointer moved for the 2 good steps only.
    assert [int(p) for p in pointers] == [0, TINY_BATCH] + [2 * TINY_BATCH] * 3


# ----------------------------------------------------------------------------------------------- Hub and export


def test_push_to_hub_uploads_checkpoints_in_the_background_and_the_final_export(
    demo_catalogue: Path, model_config: Path, tmp_path: Path
) -> None:
    api = HubApiStandIn(tmp_path / "hub")
    output_dir = tmp_path / "out"
    flags = {
        "max_steps": 4,
        "save_steps": 2,
        "push_to_hub": True,
        "hub_model_id": "org/eclip-tiny-test",
        "evaluate_at_end": True,
    }
    result = pretrain(
        parse_arguments(tiny_run_arguments(model_config, demo_catalogue, output_dir, **flags)), hub_api=api
    )

    assert api.repos == [{"repo_id": "org/eclip-tiny-test", "private": False, "exist_ok": True}]
    messages = [message for message, _ in api.commits]
    assert messages == ["Training in progress, step 2", "End of training"]
    assert not list(output_dir.glob(".hub-push-*")), "the staging folder of a background upload was left behind"
    for _, folder in api.commits:
        files = {p.name for p in folder.iterdir()}
        assert files >= EXPORT_FILES, EXPORT_FILES - files
    final = api.commits[-1][1]
    config = json.loads((final / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_eclip.EclipConfig",
        "AutoModel": "modeling_eclip.EclipModel",
        "AutoModelForZeroShotImageClassification": "modeling_eclip.EclipModel",
    }
    processor_config = json.loads((final / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_eclip.EclipProcessor"

    card = (final / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "license: apache-2.0" in card
    for section in (
        "## Model",
        "## Training data",
        "### Data licences",
        "## Training recipe",
        "## Evaluation",
        "## Intended use",
        "## Limitations",
    ):
        assert section in card
    assert "CC BY-SA 4.0" in card  # the licence of the artwork, read from the catalogue
    assert f"| zero_shot_acc@1 | {result.metrics['zero_shot_acc@1']:.4f} |" in card
    assert "hub_model_id: org/eclip-tiny-test" in card

    model = EclipModel.from_pretrained(final)
    exported = EclipModel.from_pretrained(result.export_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name


def test_itc_only_recipe_trains_the_clip_baseline(demo_catalogue: Path, model_config: Path, tmp_path: Path) -> None:
    overrides = json.dumps(
        {name: 0 for name in ("inter_loss_weight", "itm_loss_weight", "intra_loss_weight", "entropy_loss_weight")}
    )
    output_dir = tmp_path / "out"
    args = parse_arguments(
        tiny_run_arguments(
            model_config,
            demo_catalogue,
            output_dir,
            max_steps=2,
            warmup_steps=1,
            save_steps=0,
            config_overrides=overrides,
        )
    )
    result = pretrain(args)
    metrics = read_metrics(output_dir)
    assert metrics[2]["loss"] == metrics[2]["loss_itc"] and "loss_inter" not in metrics[2]
    assert json.loads((result.export_dir / "config.json").read_text())["inter_loss_weight"] == 0


def test_instance_objectives_start_after_the_itc_phase(
    demo_catalogue: Path, model_config: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    copies_at_step = []

    def build_and_watch(*arguments):
        model, processor, prefixes = build_model_and_processor(*arguments)
        copy = model.copy_online_to_momentum

        def watched_copy() -> None:
            copies_at_step.append(int(model.queue_pointer.item()))  # the queue fills only once the decoder runs
            copy()

        model.copy_online_to_momentum = watched_copy
        return model, processor, prefixes

    args = parse_arguments(
        tiny_run_arguments(
            model_config,
            demo_catalogue,
            output_dir,
            max_steps=4,
            warmup_steps=1,
            save_steps=0,
            instance_objectives_start_step=2,
            anchor_kind="catalog",
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_run, "build_model_and_processor", build_and_watch)
        result = pretrain(args)
    metrics = read_metrics(output_dir)
    for step in (1, 2):  # L_itc alone: the decoder objectives are off and not logged
        assert metrics[step]["loss"] == metrics[step]["loss_itc"] and "loss_inter" not in metrics[step]
    for step in (3, 4):
        assert {"loss_inter", "loss_itm", "loss_intra", "loss_entropy"} <= metrics[step].keys()
    # The momentum model restarts from the ITC-trained online model once, before anything was enqueued.
    assert copies_at_step == [0]
    exported = json.loads((result.export_dir / "config.json").read_text())
    assert exported["inter_loss_weight"] == 1.0  # the ITC phase does not leak into the exported config


# ----------------------------------------------------------------------------------------------- 2 processes


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_together_and_export_the_same_format(
    demo_catalogue: Path, model_config: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    # Global batch 2 x 4 = 8 divides the queue of 16.
    arguments = tiny_run_arguments(model_config, demo_catalogue, output_dir, max_steps=3, save_steps=2)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port for the rendezvous, whatever else runs on the machine
        "--nproc_per_node",
        "2",
        str(REPO / "examples" / "pretrain.py"),
        *arguments,
    ]
    log_path = tmp_path / "torchrun.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe: the ranks outlive a killed torchrun
        process = subprocess.Popen(command, env=subprocess_env(), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=400)
        except subprocess.TimeoutExpired:
            process.terminate()  # torchrun forwards SIGTERM to its ranks
            process.wait(timeout=60)
            pytest.fail(f"the 2-process run did not finish in 400 s:\n{log_path.read_text()}")
    assert process.returncode == 0, log_path.read_text()

    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks"] == [0, 1]
    assert summary["global_batch_size"] == 2 * TINY_BATCH
    checkpoint = output_dir / "checkpoint-3"
    assert {"stream_state_rank0.json", "stream_state_rank1.json", "rng_state_rank1.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
    # The two ranks read different products (split_dataset_by_node).
    positions = [json.loads((checkpoint / f"stream_state_rank{r}.json").read_text()) for r in (0, 1)]
    assert positions[0]["consumed"] > 0 and positions[1]["consumed"] > 0

    export = output_dir / "model"
    assert {p.name for p in export.iterdir()} >= EXPORT_FILES
    model = EclipModel.from_pretrained(export)
    assert model.config.queue_size == 16


@pytest.mark.parametrize("path", ["./outputs/no-such-tower", "../no-such-tower", "/no/such/tower"])
def test_a_missing_local_tower_folder_fails_before_compute(model_config: Path, tmp_path: Path, path: str) -> None:
    """A path that can only be a folder is not sent to the Hub (whose error would name a bad repo id instead)."""
    (tmp_path / "train").mkdir()
    flags = tiny_run_arguments(model_config, tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"vision_model_name_or_path .* is not a folder.*pretrain_image_tower"):
        check_arguments(parse_arguments([*flags, "--vision_model_name_or_path", path]))
    with pytest.raises(FileNotFoundError, match=r"text_model_name_or_path .* is not a folder"):
        check_arguments(parse_arguments([*flags, "--text_model_name_or_path", path]))
