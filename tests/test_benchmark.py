# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""examples/benchmark.py end to end on the suite's tiny config: one repeat, the JSON report's keys and consistency."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny_config

# Every test here runs a benchmark script in its own process: `make test-quick` leaves them out.
pytestmark = pytest.mark.slow

MEASUREMENTS = (
    "itc_step",
    "eclip_step",
    "decoder_fwd_bwd",
    "image_tower_fwd_bwd",
    "instance_embeddings",
    "image_text_embeddings",
)


def run_benchmark(tmp_path: Path, *args: str) -> tuple[dict, str]:
    config_path = tmp_path / "tiny.json"
    tiny_config().to_json_file(str(config_path))  # queue_size 8: a multiple of the batch of 4
    output = tmp_path / "report" / "benchmark.json"
    command = [sys.executable, str(REPO / "examples" / "benchmark.py"), "--preset", str(config_path)]
    command += ["--batch-size", "4", "--repeats", "1", "--warmup", "0", "--matmul-size", "64", "--threads", "1"]
    command += ["--output", str(output), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text()), result.stdout


def test_benchmark_writes_every_ratio_and_measurement(tmp_path, load_example):
    report, table = run_benchmark(tmp_path)
    # The table lists the script's RATIO_KEYS: exactly the ratios the report holds (its top-level numbers).
    ratio_keys = load_example("benchmark").RATIO_KEYS
    assert {key for key, value in report.items() if isinstance(value, float)} == set(ratio_keys)
    for key in ratio_keys:
        assert report[key] > 0, key
        assert f"| {key} |" in table
    # A config file of the user's is held to the paper-size bars (issue 17), relative to the work itself.
    assert set(report["targets"]) == {
        "step_ratio_vs_flop_count_bound",
        "decoder_vs_image_tower",
        "eclip_step_fraction_of_matmul_flops_per_s",
        "embedding_ratio_instance_vs_dual",
    }
    assert all(isinstance(target["met"], bool) for target in report["targets"].values())
    bound = report["flop_count_bounds"]["step_ratio_eclip_vs_itc"]
    assert report["step_ratio_vs_flop_count_bound"] == report["step_ratio_eclip_vs_itc"] / bound
    results = report["measurements"]
    assert set(results) == set(MEASUREMENTS)
    for name, result in results.items():
        assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"], name
        assert result["flops"] > 0 and result["achieved_flops_per_s"] > 0, name
        assert result["samples_per_s"]["median"] == 4 / result["median_s"], name
        assert f"| {name} |" in table
    # Training measurements report peak memory; the ratios are the ones of the measurements.
    assert all(results[name]["peak_memory_bytes"] > 0 for name in MEASUREMENTS[:4])
    assert report["step_ratio_eclip_vs_itc"] == results["itc_step"]["median_s"] / results["eclip_step"]["median_s"]
    flops_ratio = results["eclip_step"]["achieved_flops_per_s"] / results["itc_step"]["achieved_flops_per_s"]
    assert report["flops_ratio_eclip_vs_itc"] == flops_ratio
    # The full step does strictly more work than the ITC-only step (decoder, momentum model) and the instance
    # embedding more than the image + text embeddings (decoder).
    assert results["eclip_step"]["flops"] > results["itc_step"]["flops"]
    assert results["instance_embeddings"]["flops"] > results["image_text_embeddings"]["flops"]
    assert 0 < report["flop_count_bounds"]["step_ratio_eclip_vs_itc"] < 1
    assert report["setup"]["batch_size"] == 4 and report["setup"]["dtype"] == "bf16"
    assert report["matmul"]["flops_per_s"] > 0


def test_benchmark_fp32_and_bad_preset(tmp_path):
    report, _ = run_benchmark(tmp_path, "--dtype", "fp32")
    assert report["setup"]["dtype"] == "fp32"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "benchmark.py"), "--preset", "no-such-preset"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode != 0 and "no-such-preset" in result.stderr and "eclip-tiny" in result.stderr


def test_data_benchmark_reports_every_layout_and_size(tmp_path, demo_catalogue):
    config_path = tmp_path / "tiny.json"
    tiny_config().to_json_file(str(config_path))  # queue_size 8: a multiple of the batch of 4
    output = tmp_path / "data.json"
    command = [sys.executable, str(REPO / "examples" / "benchmark_data.py"), "--catalogue", str(demo_catalogue)]
    command += ["--work-dir", str(tmp_path / "work"), "--num-products", "10", "--image-sizes", "24"]
    command += ["--photo-size", "200", "--input-size", "32", "--config", str(config_path), "--batch-size", "4"]
    command += ["--loader-batches", "2", "--read-repeats", "1", "--steps", "1", "--num-workers", "1"]
    command += ["--output", str(output)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report, table = json.loads(output.read_text()), result.stdout
    layouts = ("(a) format 1", "(b) format 2", "(c) image per row")
    sizes = ("24 px PNG", "200 px JPEG, full decoding", "200 px JPEG, reduced decoding")
    assert [(row["layout"][:12], row["image_size"]) for row in report["rows"]] == [
        (layout[:12], size) for size in sizes for layout in layouts
    ]
    for row in report["rows"]:
        assert row["pairs_per_s"] > 0 and row["ratio_to_step"] == row["pairs_per_s"] / report["step_samples_per_s"]
        assert f"| {row['layout']} | {row['image_size']} | {row['pairs_per_s']:.1f} |" in table
    assert report["step_samples_per_s"] > 0 and "| EclipForPreTraining step" in table
    # The same 10 products in every layout: one row each, or one row per image in (c).
    reading = {(row["layout"][:3], row["image_size"]): row for row in report["reading"]}
    assert len(reading) == 6 and all(row["products_per_s"] > 0 for row in reading.values())
    for size in ("24 px PNG", "200 px JPEG"):
        assert reading["(a)", size]["rows"] == reading["(b)", size]["rows"] == 10
        assert reading["(c)", size]["rows"] > 10


def test_search_benchmark_scores_every_setting_against_exact_search(tmp_path):
    output = tmp_path / "search.json"
    command = [sys.executable, str(REPO / "examples" / "benchmark_search.py"), "--num-products", "3000"]
    command += ["--dim", "32", "--clusters", "30", "--string-factory", "IVF16,PQ8,Refine(SQ8)", "--train-size", "3000"]
    command += ["--num-queries", "50", "--single-queries", "5", "--threads", "1", "--output", str(output)]
    command += ["--search-parameters", "nprobe=1", "nprobe=16,k_factor_rf=16"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(output.read_text())
    assert numbers["num_products"] == 3000 and numbers["trained_on_products"] == 3000
    assert numbers["index_bytes_per_product"] > 0 and numbers["index_gib_at_100m_products"] > 0
    one_list, every_list = (numbers[f"{s}: recall_at_10_vs_exact"] for s in ("nprobe=1", "nprobe=16,k_factor_rf=16"))
    # Probing all 16 lists and re-ranking with SQ8 finds (almost) what exact search finds; one list finds less.
    assert 0 <= one_list < every_list <= 1 and every_list >= 0.9
    assert numbers["nprobe=1: batched_queries_per_second"] > 0
