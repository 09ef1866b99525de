# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""pipeline("zero-shot-product-classification"): registration, scores, input types, batching, errors, remote code."""

import json
import os
import re
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_processor, run_without_package, tiny_model
from PIL import Image
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

import modeling_eclip.pipeline_eclip as pipeline_eclip
from modeling_eclip import EclipModel, ZeroShotProductClassificationPipeline, save_pretrained_with_pipeline
from modeling_eclip.pipeline_eclip import DEFAULT_HYPOTHESIS_TEMPLATE, PIPELINE_TASK

LABELS = ["shoes", "bags", "kitchen utensils"]
TITLES = ["red shoe", "a large blue leather travel bag with two handles", "steel pan"]


def product_images():
    images = []
    for index, colour in enumerate(["red", "blue", "gray"]):
        image = Image.new("RGB", (40 + 8 * index, 32), colour)
        image.paste((255, 255, 255), (4 * index, 4, 4 * index + 12, 20))
        images.append(image)
    return images


@pytest.fixture(scope="module")
def classifier():
    model, processor = tiny_model(), make_processor()
    return pipeline(
        PIPELINE_TASK, model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    )


def expected_scores(model, processor, image, title):
    """softmax(1/tau * cos(instance embedding, category prompt embedding)), computed with the model's methods."""
    prompts = [DEFAULT_HYPOTHESIS_TEMPLATE.format(label) for label in LABELS]
    with torch.no_grad():
        labels = model.get_text_features(**processor(text=prompts)).pooler_output
        inputs = processor(images=image, text=title) if title is not None else processor(images=image)
        instance = model.get_instance_features(**inputs).pooler_output
    logit_scale = model.logit_scale.clamp(max=model.config.logit_scale_max).exp()
    scores = (logit_scale * F.normalize(instance, dim=-1) @ F.normalize(labels, dim=-1).t()).softmax(-1)[0]
    return dict(zip(LABELS, scores.tolist()))


def as_dict(result):
    return {entry["label"]: entry["score"] for entry in result}


def test_task_is_registered_with_the_auto_model():
    assert PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks()
    _, task, _ = PIPELINE_REGISTRY.check_task(PIPELINE_TASK)
    assert task["impl"] is ZeroShotProductClassificationPipeline
    assert task["type"] == "multimodal"
    assert task["pt"][0].__name__ == "AutoModel"


@pytest.mark.parametrize("with_title", [True, False], ids=["image+title", "image-prompt"])
def test_scores_are_the_instance_embedding_against_category_prompts(classifier, with_title):
    image, title = product_images()[1], TITLES[1]
    result = classifier(image, candidate_labels=LABELS, titles=title if with_title else None)
    assert [entry["score"] for entry in result] == sorted((entry["score"] for entry in result), reverse=True)
    assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-6)
    expected = expected_scores(classifier.model, classifier.eclip_processor, image, title if with_title else None)
    for label, score in as_dict(result).items():
        assert score == pytest.approx(expected[label], abs=1e-6)


def test_the_title_prompt_changes_the_scores_as_its_instance_embedding_does(classifier):
    """Each title moves the scores to those of the instance embedding it prompts, by far more than the tolerance of
    the match (so a title left out, or the image prompt used instead, fails); the ranking is that of those scores."""
    image = product_images()[0]
    model, processor = classifier.model, classifier.eclip_processor
    image_prompt = expected_scores(model, processor, image, None)
    for title in (TITLES[0], TITLES[2]):
        expected = expected_scores(model, processor, image, title)
        assert max(abs(expected[label] - image_prompt[label]) for label in LABELS) > 50e-6
        result = classifier(image, candidate_labels=LABELS, titles=title)
        assert [entry["label"] for entry in result] == sorted(LABELS, key=expected.get, reverse=True)
        for label, score in as_dict(result).items():
            assert score == pytest.approx(expected[label], abs=1e-6)


def test_top_k_and_template(classifier):
    image = product_images()[0]
    full = classifier(image, candidate_labels=LABELS, hypothesis_template="{}")
    top = classifier(image, candidate_labels=LABELS, hypothesis_template="{}", top_k=2)
    assert top == full[:2]
    assert as_dict(full) != as_dict(classifier(image, candidate_labels=LABELS))


def test_path_array_and_pil_inputs_agree(classifier, tmp_path):
    image = product_images()[2]
    image.save(tmp_path / "product.png")
    results = [
        classifier(source, candidate_labels=LABELS)
        for source in (image, str(tmp_path / "product.png"), tmp_path / "product.png", np.asarray(image))
    ]
    for result in results[1:]:
        assert [entry["label"] for entry in result] == [entry["label"] for entry in results[0]]
        for entry, reference in zip(result, results[0]):
            assert entry["score"] == pytest.approx(reference["score"], abs=1e-6)


def count_text_tower_calls(model):
    calls = []
    handle = model.text_model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("titles", [TITLES, None], ids=["image+title", "image-prompt"])
def test_batched_equals_one_by_one_and_labels_are_embedded_once(classifier, titles):
    images = product_images()
    calls, handle = count_text_tower_calls(classifier.model)
    try:
        batched = classifier(images, candidate_labels=LABELS, titles=titles, batch_size=2)
        batched_calls = len(calls)
        del calls[:]
        single = [
            classifier(image, candidate_labels=LABELS, titles=None if titles is None else title)
            for image, title in zip(images, titles or [None] * 3)
        ]
    finally:
        handle.remove()
    # One text-tower pass for the three category prompts, plus one per batch of titles (2 batches of <= 2).
    assert batched_calls == 1 + (2 if titles is not None else 0)
    assert len(batched) == len(single) == 3
    for batch_result, single_result in zip(batched, single):
        assert [entry["label"] for entry in batch_result] == [entry["label"] for entry in single_result]
        for entry, reference in zip(batch_result, single_result):
            assert entry["score"] == pytest.approx(reference["score"], abs=1e-5)


def test_label_chunks_give_the_same_scores(classifier, monkeypatch):
    image = product_images()[0]
    reference = classifier(image, candidate_labels=LABELS, titles="red shoe")
    monkeypatch.setattr(pipeline_eclip, "LABEL_CHUNK_SIZE", 2)
    calls, handle = count_text_tower_calls(classifier.model)
    try:
        chunked = classifier(image, candidate_labels=LABELS, titles="red shoe")
    finally:
        handle.remove()
    assert len(calls) == 2 + 1  # two label chunks, one title
    for entry, expected in zip(chunked, reference):
        assert entry["label"] == expected["label"]
        assert entry["score"] == pytest.approx(expected["score"], abs=1e-5)


def test_bad_input_gets_a_clear_error(classifier, tmp_path):
    image = product_images()[0]
    with pytest.raises(ValueError, match="at least two"):
        classifier(image)
    with pytest.raises(ValueError, match="at least two"):
        classifier(image, candidate_labels=["shoes"])
    with pytest.raises(ValueError, match="at least two"):
        classifier(image, candidate_labels="shoes")
    with pytest.raises(ValueError, match="duplicates"):
        classifier(image, candidate_labels=["shoes", "bags", "shoes"])
    with pytest.raises(ValueError, match="3 images but 2 titles"):
        classifier(product_images(), candidate_labels=LABELS, titles=TITLES[:2])
    with pytest.raises(ValueError, match=r"titles\[1\] is .*visible character"):
        classifier([image, image], candidate_labels=LABELS, titles=["red shoe", ""])
    with pytest.raises(ValueError, match="exactly one"):
        classifier(image, candidate_labels=LABELS, hypothesis_template="a photo")
    with pytest.raises(ValueError, match="top_k"):
        classifier(image, candidate_labels=LABELS, top_k=0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match=re.escape(f"Cannot decode images[1] ({broken})")):
        classifier([image, str(broken)], candidate_labels=LABELS)
    with pytest.raises(ValueError, match=r"Cannot decode images\[1\]"):
        classifier([image, b"\x00garbage"], candidate_labels=LABELS, batch_size=2)
    with pytest.raises(ValueError, match="images is empty"):
        classifier([], candidate_labels=LABELS)


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    """A tiny model saved with its pipeline, plus a test image and the expected predictions."""
    directory = tmp_path_factory.mktemp("eclip_pipeline")
    model, processor = tiny_model(seed=1), make_processor()
    save_pretrained_with_pipeline(model, processor, directory)
    assert not hasattr(model.config, "custom_pipelines")  # only the saved config names the pipeline
    images = product_images()
    for index, image in enumerate(images):
        image.save(directory / f"image{index}.png")
    pipe = pipeline(
        PIPELINE_TASK, model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    )
    expected = {
        "titled": pipe(images, candidate_labels=LABELS, titles=TITLES),
        "untitled": pipe(images[0], candidate_labels=LABELS),
    }
    (directory / "expected.json").write_text(json.dumps(expected))
    return directory


def test_save_pretrained_with_pipeline_writes_the_custom_pipeline(saved_pipeline):
    config = json.loads((saved_pipeline / "config.json").read_text())
    assert config["custom_pipelines"][PIPELINE_TASK] == {
        "impl": "pipeline_eclip.ZeroShotProductClassificationPipeline",
        "pt": ["AutoModel"],
        "type": "multimodal",
    }
    package = os.path.dirname(pipeline_eclip.__file__)
    for name in ("pipeline_eclip.py", "processing_eclip.py", "modeling_eclip.py", "configuration_eclip.py"):
        with open(os.path.join(package, name)) as source:
            assert (saved_pipeline / name).read_text() == source.read(), name
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "model.safetensors"):
        assert (saved_pipeline / name).is_file(), name
    # The saved model still loads with the package's own classes.
    assert isinstance(EclipModel.from_pretrained(saved_pipeline), EclipModel)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    from transformers import pipeline

    directory = sys.argv[1]
    expected = json.load(open(f"{directory}/expected.json"))
    classifier = pipeline(model=directory, trust_remote_code=True)  # the task comes from config.custom_pipelines
    assert type(classifier).__name__ == "ZeroShotProductClassificationPipeline", type(classifier)
    assert type(classifier).__module__.startswith("transformers_modules"), type(classifier).__module__
    assert type(classifier.model).__module__.startswith("transformers_modules"), type(classifier.model).__module__
    labels = ["shoes", "bags", "kitchen utensils"]
    titles = ["red shoe", "a large blue leather travel bag with two handles", "steel pan"]
    images = [f"{directory}/image{index}.png" for index in range(3)]
    results = {
        "titled": classifier(images, candidate_labels=labels, titles=titles, batch_size=2),
        "untitled": classifier(images[0], candidate_labels=labels),
    }
    for key, expected_value in expected.items():
        got = results[key] if key == "titled" else [results[key]]
        want = expected_value if key == "titled" else [expected_value]
        for got_one, want_one in zip(got, want):
            assert [entry["label"] for entry in got_one] == [entry["label"] for entry in want_one], key
            for entry, reference in zip(got_one, want_one):
                assert abs(entry["score"] - reference["score"]) < 1e-5, (key, entry, reference)
    """
)


@pytest.mark.slow
def test_pipeline_loads_as_remote_code_without_the_package(saved_pipeline, tmp_path):
    run_without_package(REMOTE_SCRIPT, saved_pipeline, tmp_path)
    assert list((tmp_path / "modules").rglob("pipeline_eclip.py")), "the pipeline was not loaded as remote code"


# ----------------------------------------------------------------------------------------------------------
# What the stock image pipelines accept
# ----------------------------------------------------------------------------------------------------------


def assert_same_results(results, reference):
    assert len(results) == len(reference)
    for result, expected in zip(results, reference):
        assert [entry["label"] for entry in result] == [entry["label"] for entry in expected]
        for entry, want in zip(result, expected):
            assert entry["score"] == pytest.approx(want["score"], abs=1e-6)


@pytest.fixture
def served_images(tmp_path):
    """The product images as PNG files behind a local HTTP server (offline): yields the base URL."""
    import functools
    import http.server
    import threading

    for index, image in enumerate(product_images()):
        image.save(tmp_path / f"image{index}.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_urls_and_base64_strings_are_loaded_like_stock_pipelines(classifier, served_images):
    import base64

    base_url, folder = served_images
    reference = classifier(product_images(), candidate_labels=LABELS, titles=TITLES)
    encoded = [base64.b64encode((folder / f"image{index}.png").read_bytes()).decode() for index in range(3)]
    for sources in (
        [f"{base_url}/image{index}.png" for index in range(3)],
        encoded,
        [f"data:image/png;base64,{text}" for text in encoded],
    ):
        assert_same_results(classifier(sources, candidate_labels=LABELS, titles=TITLES), reference)
    with pytest.raises(ValueError, match="images\\[0\\]"):
        classifier([f"{base_url}/missing.png"], candidate_labels=LABELS)


def test_generators_and_key_datasets_stream(classifier):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    images = product_images()
    reference = classifier(images, candidate_labels=LABELS)
    streamed = classifier((image for image in images), candidate_labels=LABELS, batch_size=2)
    assert not isinstance(streamed, list)  # an iterator, consumed on demand, as stock pipelines return
    assert_same_results(list(streamed), reference)
    dataset = datasets.Dataset.from_dict({"image": images, "title": TITLES})
    assert_same_results(list(classifier(KeyDataset(dataset, "image"), candidate_labels=LABELS)), reference)
    # Titles travel with the images in a stream.
    titled = classifier(images, candidate_labels=LABELS, titles=TITLES)
    rows = ({"image": row["image"], "title": row["title"]} for row in dataset)
    assert_same_results(list(classifier(rows, candidate_labels=LABELS, batch_size=2)), titled)
    assert_same_results(
        classifier([{"image": i, "title": t} for i, t in zip(images, TITLES)], candidate_labels=LABELS), titled
    )
    with pytest.raises(ValueError, match="titles= needs a list"):
        classifier((image for image in images), candidate_labels=LABELS, titles=TITLES)
    with pytest.raises(ValueError, match="images\\[0\\] must be an image or a dict"):
        classifier([{"picture": images[0]}], candidate_labels=LABELS)


def test_processor_argument(saved_pipeline):
    from transformers import AutoProcessor

    model, processor = tiny_model(), make_processor()
    image = product_images()[0]
    reference = pipeline(
        PIPELINE_TASK, model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    )(image, candidate_labels=LABELS)
    with_processor = pipeline(PIPELINE_TASK, model=model, processor=processor)
    assert with_processor.eclip_processor is processor
    assert_same_results([with_processor(image, candidate_labels=LABELS)], [reference])
    # From a checkpoint folder the saved processor is used; processor= replaces it.
    loaded = pipeline(model=str(saved_pipeline), trust_remote_code=True)
    assert type(loaded.eclip_processor).__name__ == "EclipProcessor"
    assert loaded.eclip_processor.tokenizer is loaded.tokenizer
    other = AutoProcessor.from_pretrained(saved_pipeline)
    assert pipeline(model=str(saved_pipeline), processor=other, trust_remote_code=True).eclip_processor is other
