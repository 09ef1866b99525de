# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The pretraining command line as transformers / accelerate users know it: `report_to` and trackers (offline), the
learning-rate schedule, `none` for optional numbers, checkpoint bookkeeping, the model card's Hub metadata, pushing
the last checkpoint and resuming from it, and progress bars on the long commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from helpers import read_metrics, subprocess_env, tiny_run_arguments
from huggingface_hub import ModelCard
from transformers import get_scheduler

from modeling_eclip.training import parse_arguments, pretrain
from modeling_eclip.training.arguments import check_arguments
from modeling_eclip.training.export import render_model_card
from modeling_eclip.training.schedule import make_lr_scheduler
from modeling_eclip.training.tracking import available_trackers, parse_report_to, tracker_init_kwargs

# ----------------------------------------------------------------------------------------------- report_to


def test_report_to_is_parsed_like_training_arguments(model_config: Path, tmp_path: Path) -> None:
    assert parse_report_to("tensorboard") == ["tensorboard"]
    assert parse_report_to(["tensorboard", "wandb"]) == ["tensorboard", "wandb"]
    assert parse_report_to("tensorboard,mlflow") == ["tensorboard", "mlflow"]
    assert parse_report_to("none") == [] and parse_report_to(None) == [] and parse_report_to([]) == []
    assert parse_report_to("all") == available_trackers()
    assert {"tensorboard", "wandb", "mlflow"} <= set(parse_report_to("all"))
    with pytest.raises(ValueError, match="report_to has unknown trackers \\['tensorbored'\\]"):
        parse_report_to(["tensorboard", "tensorbored"])
    with pytest.raises(ValueError, match="'all' cannot be combined"):
        parse_report_to(["all", "wandb"])

    flags = tiny_run_arguments(model_config, tmp_path, tmp_path / "run-7", report_to="none")
    flags = flags[: flags.index("--report_to")] + flags[flags.index("--report_to") + 2 :]
    args = parse_arguments([*flags, "--report_to", "tensorboard", "wandb", "--project_name", "shoes"])
    assert args.report_to == ["tensorboard", "wandb"] and args.project_name == "shoes"
    assert args.run_name == "run-7"  # the output folder's name, as Trainer's default
    assert parse_arguments([*flags, "--report_to", "all"]).report_to == available_trackers()
    assert parse_arguments([*flags, "--report_to", "none", "--run_name", "x"]).run_name == "x"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("report_to: tensorboard,wandb\n")
    assert parse_arguments(["--config", str(recipe), *flags]).report_to == ["tensorboard", "wandb"]
    assert tracker_init_kwargs(["wandb", "mlflow", "tensorboard", "trackio"], "r") == {
        "wandb": {"name": "r"},
        "mlflow": {"run_name": "r"},
        "trackio": {"name": "r"},
    }


def test_a_tracker_that_is_not_installed_fails_before_compute(model_config: Path, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    missing = next(name for name in ("aim", "clearml", "dvclive", "swanlab") if name not in available_trackers())
    args = parse_arguments(tiny_run_arguments(model_config, tmp_path, tmp_path / "out", report_to=missing))
    with pytest.raises(ValueError, match=f"report_to names \\['{missing}'\\], which are not installed"):
        check_arguments(args)


def offline_environment(root: Path) -> dict[str, str]:
    """wandb in offline mode, MLflow on a local file store, trackio's local database: everything under `root`."""
    return {
        **subprocess_env(),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root),
        "WANDB_SILENT": "true",
        "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "TRACKIO_DIR": str(root / "trackio"),
    }


@pytest.mark.slow
def test_trackers_get_scalars_and_evaluation_images_offline(
    demo_catalogue: Path, model_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for package in ("wandb", "mlflow", "trackio"):
        pytest.importorskip(package)
    output = tmp_path / "out"
    flags = {
        "max_steps": 4,
        "save_steps": 0,
        "eval_steps": 2,
        "evaluate_at_end": True,
        "num_eval_images": 2,
        "run_name": "tiny-run",
        "project_name": "eclip-tests",
    }
    flags = [*tiny_run_arguments(model_config, demo_catalogue, output, **flags), "--report_to", "tensorboard", "wandb"]
    command = [sys.executable, "-m", "modeling_eclip.training", *flags, "mlflow", "trackio"]
    run = subprocess.run(command, env=offline_environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output / "eclip-tests"), size_guidance={"images": 0}).Reload()
    assert {"eval/grounding_0", "eval/grounding_1", "eval/tsne"} <= set(events.Tags()["images"])
    assert [event.step for event in events.Images("eval/tsne")] == [2, 4]  # every evaluation
    loss_tags = [tag for tag in events.Tags()["scalars"] if tag == "loss"]
    eval_tags = [tag for tag in events.Tags()["scalars"] if tag.startswith("eval/")]
    assert loss_tags and "eval/zero_shot_acc@1" in eval_tags

    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the run's local file store
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("eclip-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["mlflow.runName"] == "tiny-run"
    assert "eval/zero_shot_acc_at_1" in run.data.metrics  # MLflow rejects "@"
    artifacts = [entry.path for entry in client.list_artifacts(run.info.run_id, "images")]
    assert any("eval_tsne" in path for path in artifacts), artifacts

    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = sorted(path.name for path in (wandb_run / "files" / "media" / "images" / "eval").glob("*.png"))
    assert any(name.startswith("tsne_2_") for name in media) and any(
        name.startswith("grounding_1_4_") for name in media
    )
    (record,) = wandb_run.glob("run-*.wandb")  # the offline run's protobuf records: run name and project
    assert b"tiny-run" in record.read_bytes() and b"eclip-tests" in record.read_bytes()

    trackio_media = tmp_path / "trackio" / "media" / "eclip-tests" / "tiny-run"
    assert sorted(path.name for path in trackio_media.iterdir()) == ["2", "4"]  # images at both evaluations
    assert (tmp_path / "trackio" / "eclip-tests.db").is_file()


# ----------------------------------------------------------------------------------------------- schedule and "none"


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_lr_scheduler_type_and_warmup_ratio_go_through_get_scheduler(model_config: Path, tmp_path: Path) -> None:
    flags = tiny_run_arguments(model_config, tmp_path, tmp_path / "out", max_steps=20, warmup_steps=0)
    args = parse_arguments([*flags, "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.1"])
    assert args.num_warmup_steps == 2  # ceil(0.1 * 20), as TrainingArguments
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    ours = make_lr_scheduler(optimizer, args.lr_scheduler_type, args.num_warmup_steps, args.max_steps)
    reference = get_scheduler("cosine", torch.optim.SGD([parameter], lr=1.0), 2, 20)
    for _ in range(20):
        assert ours.get_last_lr() == pytest.approx(reference.get_last_lr())
        ours.step(), reference.step()
    constant = parse_arguments([*flags, "--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "4"])
    assert constant.num_warmup_steps == 4  # warmup_steps wins over the ratio
    kwargs = parse_arguments([*flags, "--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"num_cycles": 2}'])
    assert kwargs.lr_scheduler_kwargs == {"num_cycles": 2}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr_scheduler_type", "cosinus"], "lr_scheduler_type must be one of"),
        (["--lr_scheduler_type", "cosine_with_min_lr"], "lr_scheduler_type='cosine_with_min_lr' with"),
        (["--warmup_ratio", "1.5"], "warmup_ratio must be in [0, 1)"),
        (["--hub_strategy", "sometimes"], "hub_strategy must be one of"),
        (["--resume", "hub"], "resume=hub needs hub_model_id"),
        # Every numeric field: finite, in range (issue 13).
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1, got 0"),
        (["--max_steps", "-5"], "max_steps must be >= 1, got -5"),
        (["--learning_rate", "nan"], "learning_rate must be > 0, got nan"),
        (["--adam_beta2", "1.0"], "adam_beta2 must be in [0, 1), got 1.0"),
        (["--adam_epsilon", "0"], "adam_epsilon must be > 0, got 0.0"),
        (["--shuffle_buffer", "-1"], "shuffle_buffer must be >= 0, got -1"),
        (["--seed", "-3"], "seed must be >= 0, got -3"),
        (["--max_train_minutes", "0"], "max_train_minutes must be > 0, got 0.0"),
        (["--max_train_minutes", "inf"], "max_train_minutes must be > 0, got inf"),
        (["--eval_max_products", "0"], "eval_max_products must be >= 1, got 0"),
        (["--save_steps", "-1"], "save_steps must be >= 0, got -1"),
    ],
)
def test_bad_settings_fail_before_compute(model_config: Path, tmp_path: Path, flags, message) -> None:
    (tmp_path / "train").mkdir()
    args = parse_arguments([*tiny_run_arguments(model_config, tmp_path, tmp_path / "out"), *flags])
    with pytest.raises(ValueError) as error:
        check_arguments(args)
    assert message in str(error.value)


def test_optional_numbers_accept_none(model_config: Path, tmp_path: Path) -> None:
    flags = tiny_run_arguments(model_config, tmp_path, tmp_path / "out")
    args = parse_arguments(
        [
            *flags,
            "--max_train_minutes",
            "none",
            "--eval_max_products",
            "None",
            "--new_parameters_learning_rate",
            "none",
        ]
    )
    assert args.max_train_minutes is None and args.eval_max_products is None
    assert args.new_parameters_learning_rate is None
    assert parse_arguments([*flags, "--max_train_minutes", "2.5"]).max_train_minutes == 2.5
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_train_minutes: none\neval_max_products: 8\n")
    from_recipe = parse_arguments(["--config", str(recipe), *flags])
    assert from_recipe.max_train_minutes is None and from_recipe.eval_max_products == 8
    with pytest.raises(SystemExit):
        parse_arguments([*flags, "--max_train_minutes", "soon"])


# ----------------------------------------------------------------------------------------------- checkpoints


def test_last_good_checkpoint_never_names_a_rotated_checkpoint(
    demo_catalogue: Path, model_config: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    pretrain(parse_arguments(tiny_run_arguments(model_config, demo_catalogue, output, max_steps=6, save_total_limit=1)))
    (checkpoint,) = output.glob("checkpoint-*")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert Path(state["last_good_checkpoint"]) == checkpoint
    assert Path(state["last_good_checkpoint"]).is_dir()


# ----------------------------------------------------------------------------------------------- model card


def test_model_card_metadata_goes_through_model_card_data(
    model, demo_catalogue: Path, model_config: Path, tmp_path: Path
) -> None:
    local_vit = tmp_path / "my-vit"
    local_vit.mkdir()
    flags = tiny_run_arguments(model_config, demo_catalogue, tmp_path / "out")
    args = parse_arguments(
        [
            *flags,
            "--text_model_name_or_path",
            "all-MiniLM-L6-v2",
            "--vision_model_name_or_path",
            str(local_vit),
            "--dataset_name",
            "org/product-catalogue",
            "--hub_model_id",
            "org/eclip-tiny",
        ]
    )
    metrics = {"zero_shot_acc@1": 0.25, "fine_grained_r@1": 0.125, "fine_grained_map@10": 0.5}
    card = ModelCard(render_model_card(args, model.config, metrics, {"step": 8}))
    data = card.data
    assert data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]  # a Hub id; the local ViT is left out
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.datasets == ["org/product-catalogue"]
    assert {"eclip", "e-commerce", "custom_code"} <= set(data.tags)
    results = {result.metric_name: result for result in data.eval_results}
    assert results["Acc@1 (image + title)"].metric_value == 0.25
    assert results["Acc@1 (image + title)"].metric_type == "accuracy"
    assert results["mAP@10"].metric_value == 0.5 and results["R@1"].metric_value == 0.125
    assert all(result.dataset_type == "org/product-catalogue" for result in data.eval_results)
    assert all(result.dataset_split == "test" for result in data.eval_results)
    assert "model-index" in str(card)

    plain = parse_arguments(flags)  # random towers, a local catalogue: nothing that is not on the Hub is listed
    data = ModelCard(render_model_card(plain, model.config, metrics, {"step": 8})).data
    assert data.base_model is None and data.datasets is None
    assert data.eval_results[0].dataset_name == json.loads((demo_catalogue / "dataset_info.json").read_text())["name"]


# ----------------------------------------------------------------------------------------------- Hub


class HubRepoStandIn:
    """A Hub repository on disk for `HubPusher`: uploads apply to `root` (with `delete_patterns`), in a thread when
    `run_as_future`, and `snapshot_download` copies the files that match `allow_patterns` back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True)
        self.commits: list[str] = []
        self._executor = ThreadPoolExecutor(1)

    def create_repo(self, repo_id: str, **kwargs) -> str:
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, commit_message, run_as_future=False, delete_patterns=None):
        if run_as_future:
            return self._executor.submit(
                self.upload_folder,
                repo_id=repo_id,
                folder_path=folder_path,
                commit_message=commit_message,
                delete_patterns=delete_patterns,
            )
        uploaded = {path.relative_to(folder_path).as_posix() for path in Path(folder_path).rglob("*") if path.is_file()}
        for path in list(self.root.rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            if path.is_file() and delete_patterns and fnmatch(relative, delete_patterns) and relative not in uploaded:
                path.unlink()
        shutil.copytree(folder_path, self.root, dirs_exist_ok=True)
        self.commits.append(commit_message)
        return Future()

    def snapshot_download(self, *, repo_id, allow_patterns, local_dir):
        for path in self.root.rglob("*"):
            relative = path.relative_to(self.root).as_posix()
            if path.is_file() and any(fnmatch(relative, pattern) for pattern in allow_patterns):
                (Path(local_dir) / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, Path(local_dir) / relative)
        return str(local_dir)


def test_the_last_checkpoint_is_pushed_and_a_run_resumes_from_the_hub(
    demo_catalogue: Path, model_config: Path, tmp_path: Path
) -> None:
    hub = HubRepoStandIn(tmp_path / "hub")
    hub_flags = {"push_to_hub": True, "hub_model_id": "org/eclip-tiny", "hub_strategy": "checkpoint"}
    first = tmp_path / "first"
    pretrain(
        parse_arguments(tiny_run_arguments(model_config, demo_catalogue, first, max_steps=4, **hub_flags)), hub_api=hub
    )
    assert hub.commits == ["Training in progress, step 2", "End of training"]
    pushed = json.loads((hub.root / "last-checkpoint" / "trainer_state.json").read_text())
    assert pushed["step"] == 4  # the final checkpoint replaced the one of step 2
    assert (hub.root / "model.safetensors").is_file() and (hub.root / "last-checkpoint" / "model.safetensors").is_file()
    assert not list(first.glob(".hub-push-*")), "a staging folder was left behind"

    resumed = tmp_path / "second"  # another machine: nothing on disk
    flags = tiny_run_arguments(model_config, demo_catalogue, resumed, max_steps=6, resume="hub", **hub_flags)
    result = pretrain(parse_arguments(flags), hub_api=hub)
    assert result.step == 6
    assert sorted(read_metrics(resumed)) == [5, 6]  # continued after the pushed step 4

    with pytest.raises(FileNotFoundError, match="has no complete last-checkpoint"):
        empty = HubRepoStandIn(tmp_path / "empty-hub")
        pretrain(
            parse_arguments(
                tiny_run_arguments(model_config, demo_catalogue, tmp_path / "third", resume="hub", **hub_flags)
            ),
            hub_api=empty,
        )


# ----------------------------------------------------------------------------------------------- progress bars


def test_long_commands_show_progress_bars(
    model, processor, demo_catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from modeling_eclip.evaluation.cli import main as evaluate_main

    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    evaluate_main(["--model", str(model_dir), "--data", str(demo_catalogue), "--max-products", "4"])
    errors = capsys.readouterr().err
    for description in ("embedding texts", "embedding images", "grounding"):
        assert f"{description}:" in errors, description

    from processing import catalogue_to_shards

    rows = tmp_path / "rows.jsonl"
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(image)
    rows.write_text("".join(json.dumps({"product_id": "p", "title": "t", "image": str(image)}) + "\n" for _ in "ab"))
    catalogue_to_shards.main([str(rows), "--output", str(tmp_path / "shards")])
    assert "reading the catalogue:" in capsys.readouterr().err

    from modeling_eclip.demo import catalogue as demo_builder

    if demo_builder.discover_sources():
        demo_builder.build_catalogue(tmp_path / "demo", seed=0, image_size=32, max_products=4)
        assert "drawing products:" in capsys.readouterr().err

    from modeling_eclip.evaluation.search import ProductSearchIndex, load_catalogue

    ProductSearchIndex.build(model, processor, load_catalogue(demo_catalogue, "test"), batch_size=4)
    assert "Embedding the catalogue:" in capsys.readouterr().err
