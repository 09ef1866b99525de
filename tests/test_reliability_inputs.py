# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 13, bad input at the API: the one image decoder, arrays, the one text rule, the model's inputs, the pipeline,
grounding and search. Each case is a clear error naming the argument (and item), or a correct result."""

import base64
import functools
import http.server
import io
import threading

import datasets
import numpy as np
import pytest
import torch
from bad_inputs import (
    AWKWARD_IMAGE_FILES,
    BAD_ARRAYS,
    BLANK_TITLES,
    CONTROL_TOKEN_TITLES,
    GOOD_ARRAYS,
    ORIENTED_SIZE,
    exif_rotated_jpeg,
    transparent_rgba_png,
    write_files,
)
from helpers import TINY_IMAGE_SIZE, make_processor, tiny_model
from PIL import Image
from transformers import pipeline

from modeling_eclip.evaluation.search import ProductSearchIndex
from modeling_eclip.grounding_eclip import box_iou, candidate_boxes, grounding_score_maps, score_boxes
from modeling_eclip.pipeline_eclip import PIPELINE_TASK
from modeling_eclip.processing_eclip import check_model_inputs, to_rgb_image

LABELS = ["shoes", "bags"]


def red(size=(24, 20)):
    return Image.new("RGB", size, (200, 30, 30))


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(), make_processor()


@pytest.fixture(scope="module")
def classifier(tiny):
    model, processor = tiny
    return pipeline(
        PIPELINE_TASK, model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    )


# ----- the one image decoder -----


@pytest.mark.parametrize("name", sorted(AWKWARD_IMAGE_FILES))
def test_transparency_is_composited_on_white_from_bytes_paths_and_base64(name, tmp_path):
    generator, colour = AWKWARD_IMAGE_FILES[name]
    path = write_files(tmp_path, {name: AWKWARD_IMAGE_FILES[name]})[name]
    encoded = base64.b64encode(generator()).decode()
    for source in (generator(), path, encoded, f"data:image/png;base64,{encoded}", Image.open(path)):
        image = to_rgb_image(source)
        assert image.mode == "RGB" and image.getpixel((0, 0)) == colour, (name, type(source))


def test_urls_decode_through_the_one_decoder(tmp_path):
    """A URL gives the same image as its bytes (transparency on white), and a failed download names the URL."""
    (tmp_path / "cut-out.png").write_bytes(transparent_rgba_png())
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert to_rgb_image(f"{url}/cut-out.png").getpixel((0, 0)) == (255, 255, 255)
        with pytest.raises(ValueError, match=rf"Cannot decode images\[1\] \({url}/missing.png\): cannot download"):
            to_rgb_image(f"{url}/missing.png", "images[1]")
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_exif_orientation_is_applied_for_every_source(tmp_path):
    data = exif_rotated_jpeg()
    (tmp_path / "rotated.jpg").write_bytes(data)
    upright = (ORIENTED_SIZE[1], ORIENTED_SIZE[0])
    for source in (data, str(tmp_path / "rotated.jpg"), base64.b64encode(data).decode()):
        assert to_rgb_image(source).size == upright


def test_processor_puts_transparent_pixels_on_white(processor):
    transparent = processor(images=[transparent_rgba_png()])["pixel_values"]
    white = processor(images=[Image.new("RGB", (16, 16), "white")])["pixel_values"]
    torch.testing.assert_close(transparent, white)


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_arrays_that_cannot_be_images_are_refused_naming_the_item(name, processor):
    with pytest.raises(ValueError, match=r"Cannot decode images\[1\]: "):
        processor(images=[np.zeros((8, 8, 3), np.uint8), BAD_ARRAYS[name]()])


def test_out_of_range_floats_say_what_to_do():
    with pytest.raises(ValueError, match=r"\[0, 1\].*\(array \+ 1\) / 2"):
        to_rgb_image(BAD_ARRAYS["float_minus_one_to_one"]())


@pytest.mark.parametrize("name", sorted(GOOD_ARRAYS))
def test_arrays_follow_transformers_conventions(name):
    generator, colour = GOOD_ARRAYS[name]
    assert to_rgb_image(generator()).getpixel((0, 0)) == colour
    assert to_rgb_image(torch.from_numpy(generator())).getpixel((0, 0)) == colour


def test_an_image_without_pixels_is_refused():
    with pytest.raises(ValueError, match=r"Cannot decode images\[0\]: the image has no pixels"):
        to_rgb_image(Image.new("RGB", (0, 0)), "images[0]")


def test_a_failing_file_is_named_by_position_and_path(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"Cannot decode images\[4\] \({path}\)"):
        to_rgb_image(str(path), "images[4]")


# ----- the one text rule -----


@pytest.mark.parametrize("title", BLANK_TITLES)
def test_blank_titles_are_one_error_everywhere(title, tiny, classifier):
    model, processor = tiny
    with pytest.raises(ValueError, match=r"text\[1\] is .*visible character"):
        processor(text=["red shoe", title])
    with pytest.raises(ValueError, match=r"titles\[1\] is .*visible character"):
        classifier([red(), red()], candidate_labels=LABELS, titles=["red shoe", title])
    with pytest.raises(ValueError, match=r"the title of images\[0\] is .*visible character"):
        classifier([{"image": red(), "title": title}], candidate_labels=LABELS)
    with pytest.raises(ValueError, match=r"candidate_labels\[1\] is .*visible character"):
        classifier(red(), candidate_labels=["shoes", title])
    with pytest.raises(ValueError, match=r"texts\[1\] is .*visible character"):
        grounding_score_maps(model, processor, [red(), red()], texts=["red shoe", title], batch_size=1)


def test_control_token_titles_are_plain_text(processor):
    tokenizer = processor.tokenizer
    encoded = processor(text=CONTROL_TOKEN_TITLES)
    special = set(tokenizer.all_special_ids)
    for ids, mask in zip(encoded["input_ids"].tolist(), encoded["attention_mask"].tolist()):
        real = [token for token, keep in zip(ids, mask) if keep]
        assert real[0] == tokenizer.cls_token_id and real[-1] == tokenizer.sep_token_id
        assert not special & set(real[1:-1]), tokenizer.convert_ids_to_tokens(real)
    # An explicit opt-out keeps the tokenizer's own behaviour.
    raw = processor(text=["[SEP] [CLS]"], split_special_tokens=False)["input_ids"][0].tolist()
    assert raw == [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]


# ----- the model's inputs -----
# The model's forward checks shapes and dtypes; values are checked once at the edges (`check_model_inputs`).

SIZE = TINY_IMAGE_SIZE
NON_FINITE_PIXEL_VALUES = {
    "nan": torch.full((1, 3, SIZE, SIZE), float("nan")),
    "inf": torch.full((1, 3, SIZE, SIZE), float("inf")),
}
BAD_PIXEL_VALUES = {
    "uint8": (torch.full((1, 3, SIZE, SIZE), 128, dtype=torch.uint8), "dtype torch.uint8"),
    "int64": (torch.full((1, 3, SIZE, SIZE), 128, dtype=torch.int64), "dtype torch.int64"),
    "empty_batch": (torch.zeros(0, 3, SIZE, SIZE), "empty batch"),
    "one_channel": (torch.zeros(1, 1, SIZE, SIZE), r"must be \(batch, 3, 32, 32\)"),
    "three_dimensional": (torch.zeros(3, SIZE, SIZE), r"must be \(batch, 3, 32, 32\)"),
    "numpy": (np.zeros((1, 3, SIZE, SIZE), np.float32), "torch.Tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_PIXEL_VALUES))
def test_bad_pixel_values_are_named(case, tiny):
    model, _ = tiny
    pixel_values, message = BAD_PIXEL_VALUES[case]
    good = torch.zeros(1, 3, SIZE, SIZE)
    calls = {
        "pixel_values": [
            lambda: model(pixel_values=pixel_values),
            lambda: model.get_image_features(pixel_values),
            lambda: model.get_instance_features(pixel_values),
            lambda: model.get_grounding_map(pixel_values),
        ],
        "prompt_pixel_values": [lambda: model.get_instance_features(good, prompt_pixel_values=pixel_values)],
    }
    for name, functions in calls.items():
        for function in functions:
            with pytest.raises(ValueError, match=f"{name} .*{message}|{name} has {message}"):
                function()


def bad_text_inputs(config):
    """Text inputs of a wrong shape or dtype, which the model's forward names."""
    positions = config.text_config.max_position_embeddings
    ids = torch.tensor([[101, 2417, 102]])
    return {
        "one_dimensional": ({"input_ids": ids[0]}, r"input_ids must be \(batch, sequence_length\).*input_ids\[None\]"),
        "empty_batch": ({"input_ids": ids[:0]}, "input_ids is empty"),
        "no_tokens": ({"input_ids": ids[:, :0]}, "input_ids is empty"),
        "float": ({"input_ids": ids.float()}, "integer token ids"),
        "too_long": ({"input_ids": torch.full((1, positions + 1), 1000)}, "max_position_embeddings"),
        "mask_shape": ({"input_ids": ids, "attention_mask": torch.ones(1, 2)}, "attention_mask must have the shape"),
    }


def out_of_range_text_inputs(config):
    """Token ids the text tower cannot embed, which `check_model_inputs` names at the edges."""
    vocab = config.text_config.vocab_size
    ids = torch.tensor([[101, 2417, 102]])
    return {
        "negative": ({"input_ids": torch.tensor([[101, -1, 102]])}, r"input_ids must lie in \[0, "),
        "out_of_vocabulary": (
            {"input_ids": torch.tensor([[101, vocab, 102]])},
            rf"input_ids must lie in \[0, {vocab}\)",
        ),
        "token_types": ({"input_ids": ids, "token_type_ids": torch.full((1, 3), 5)}, r"token_type_ids must lie in"),
    }


def test_bad_text_inputs_are_named(tiny):
    model, _ = tiny
    pixels = torch.zeros(1, 3, SIZE, SIZE)
    calls = (
        lambda inputs: model(**inputs),
        lambda inputs: model.get_text_features(**inputs),
        lambda inputs: model.get_instance_features(pixels, **inputs),
    )
    for inputs, message in bad_text_inputs(model.config).values():
        for function in calls:
            with pytest.raises(ValueError, match=message):
                function(inputs)


@pytest.mark.parametrize("layer", [2, -3, True, 1.0, "last"])
def test_grounding_map_layer_out_of_range(layer, tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"layer must be an int in \[-2, 2\)"):
        model.get_grounding_map(torch.zeros(1, 3, SIZE, SIZE), layer=layer)
    assert model.get_grounding_map(torch.zeros(1, 3, SIZE, SIZE), layer=-2).shape == (1, 4, 4)


def test_prompt_texts_must_match_the_images(tiny):
    """get_instance_features / get_grounding_map take the texts as prompts: another count silently let every image
    prompt itself."""
    model, processor = tiny
    inputs = processor(images=[red(), red()], text=["red shoe", "blue bag", "steel pan"])
    for method in (model.get_instance_features, model.get_grounding_map):
        with pytest.raises(ValueError, match="one text per image as its prompt: pixel_values has 2 rows but input_ids"):
            method(**inputs)
    with pytest.raises(ValueError, match="2 images but 1 prompt_images"):
        processor(images=[red(), red()], prompt_images=[red()])
    with pytest.raises(ValueError, match="num_jittered"):
        candidate_boxes([1, 1, 4, 4], (8, 8), torch.Generator(), num_jittered=-1)


@pytest.mark.parametrize("case", sorted(NON_FINITE_PIXEL_VALUES))
def test_non_finite_pixels_are_named_at_the_edges(case, tiny):
    """NaN / infinite pixels used to be refused by the model's forward (a device sync on every call). The processor's
    image decoding refuses such arrays, and `check_model_inputs` such tensors built by hand, naming the input."""
    model, processor = tiny
    pixel_values = NON_FINITE_PIXEL_VALUES[case]
    with pytest.raises(ValueError, match=r"Cannot decode images\[0\]: the array has NaN or infinite values"):
        processor(images=[pixel_values[0]])
    for name in ("pixel_values", "prompt_pixel_values", "positive_pixel_values"):
        with pytest.raises(ValueError, match=f"{name} has NaN or infinite values"):
            check_model_inputs({"input_ids": torch.tensor([[101, 102]]), name: pixel_values}, model.config)


def test_out_of_range_token_ids_are_named_at_the_edges(tiny):
    """Token ids the text tower cannot embed used to be refused by the model's forward (a device sync on every call).
    `check_model_inputs` names them on the host; the pipeline and grounding run it on every batch, so a tokenizer
    larger than the model's vocabulary is a clear error there."""
    model, processor = tiny
    for inputs, message in out_of_range_text_inputs(model.config).values():
        with pytest.raises(ValueError, match=message):
            check_model_inputs(inputs, model.config)
    check_model_inputs(dict(processor(text=["red shoe"], images=[red()])), model.config)  # the processor's own output

    small = tiny_model(text_config={"vocab_size": 1000})  # MiniLM's tokenizer has 30522 ids
    mismatched = pipeline(
        PIPELINE_TASK, model=small, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    )
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 1000\)"):
        mismatched(red(), candidate_labels=["stainless steel frying pan", "bags"])
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 1000\)"):
        grounding_score_maps(small, processor, [red()], texts=["stainless steel frying pan"])


def test_prompt_embeds_must_be_finite(tiny):
    """Ready-made prompts used to be checked by the model's forward; `check_model_inputs` checks them on the host."""
    model, _ = tiny
    prompts = torch.full((1, model.config.projection_dim), float("nan"))
    with pytest.raises(ValueError, match="prompt_embeds has NaN or infinite values"):
        check_model_inputs({"pixel_values": torch.zeros(1, 3, SIZE, SIZE), "prompt_embeds": prompts}, model.config)


# ----- the pipeline -----


@pytest.mark.parametrize("template", ["{} and {}", "{name}", "{0} {1}", "a photo of a {", "no field", "{0!r:>3} {}"])
def test_templates_need_exactly_one_field(template, classifier):
    with pytest.raises(ValueError, match="hypothesis_template"):
        classifier(red(), candidate_labels=LABELS, hypothesis_template=template)


def test_templates_with_one_field_work(classifier):
    for template in ("{}", "{0}", "a {{literal}} photo of {}"):
        assert len(classifier(red(), candidate_labels=LABELS, hypothesis_template=template)) == 2


@pytest.mark.parametrize("argument", [{"top_k": True}, {"top_k": 1.5}, {"top_k": 0}, {"batch_size": 0}])
def test_pipeline_numbers_must_be_positive_ints(argument, classifier):
    with pytest.raises(ValueError, match=next(iter(argument))):
        classifier(red(), candidate_labels=LABELS, **argument)


def test_a_corrupt_image_in_a_batch_is_named(classifier):
    images = [red(), red(), b"\x00 not an image", red()]
    with pytest.raises(ValueError, match=r"Cannot decode images\[2\]"):
        classifier(images, candidate_labels=LABELS, batch_size=2)


def test_a_corrupt_image_in_a_stream_is_named(classifier):
    def stream():
        yield red()
        yield {"image": b"\x00 not an image", "title": "red shoe"}

    results = iter(classifier(stream(), candidate_labels=LABELS))
    assert len(next(results)) == 2
    with pytest.raises(ValueError, match=r"Cannot decode stream item 1"):
        next(results)

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return [red(), np.full((4, 4, 3), 2.0)][index]

    with pytest.raises(ValueError, match=r"Cannot decode stream item 1: a float image array holds values in \[0, 1\]"):
        list(classifier(Items(), candidate_labels=LABELS, batch_size=2))


# ----- grounding -----


@pytest.mark.parametrize("box", [[0, 0, float("nan"), 5], [float("-inf"), 0, 4, 5]])
def test_nan_boxes_are_named(box):
    good = [1, 1, 4, 4]
    with pytest.raises(ValueError, match=r"boxes\[1\] = .* NaN or infinite"):
        score_boxes(torch.rand(8, 8), [good, box])
    with pytest.raises(ValueError, match=r"boxes_b\[0\] = .* NaN or infinite"):
        box_iou([good], [box])
    with pytest.raises(ValueError, match="NaN or infinite"):
        candidate_boxes(box, (8, 8), torch.Generator())
    with pytest.raises(ValueError, match="score_map has NaN"):
        score_boxes(torch.full((8, 8), float("nan")), [good])


def test_grounding_prompt_images_are_named_by_position_in_the_call(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match=r"Cannot decode prompt_images\[1\]"):
        grounding_score_maps(model, processor, [red(), red()], prompt_images=[red(), b"junk"], batch_size=1)


# ----- search -----


@pytest.fixture(scope="module")
def catalogue():
    colours = ["red", "green", "blue", "orange", "purple"]
    return datasets.Dataset.from_dict(
        {
            "product_id": [f"p{index}" for index in range(len(colours))],
            "title": [f"{colour} mug" for colour in colours],
            "image": [png_bytes(Image.new("RGB", (20, 20), colour)) for colour in colours],
        }
    )


@pytest.fixture(scope="module")
def index(tiny, catalogue):
    model, processor = tiny
    return ProductSearchIndex.build(model, processor, catalogue, batch_size=2)


def test_catalogue_failures_name_the_row_and_product(tiny, catalogue):
    model, processor = tiny
    images, titles = list(catalogue["image"]), list(catalogue["title"])
    images[3] = b"corrupt"
    with pytest.raises(ValueError, match=r"Cannot decode the 'image' of catalogue row 3 \(product_id 'p3'\)"):
        ProductSearchIndex.build(
            model, processor, catalogue.remove_columns("image").add_column("image", images), batch_size=2
        )
    titles[4] = " "
    with pytest.raises(ValueError, match=r"the 'title' of catalogue row 4 \(product_id 'p4'\) is ' '"):
        ProductSearchIndex.build(
            model, processor, catalogue.remove_columns("title").add_column("title", titles), batch_size=2
        )


def test_query_failures_name_the_query_in_the_call(index):
    images = [png_bytes(red())] * 3 + [b"corrupt"]
    with pytest.raises(ValueError, match=r"Cannot decode images\[3\]"):
        index.search_batch(images=images)
    with pytest.raises(ValueError, match=r"titles\[3\] is ''"):
        index.search_batch(titles=["a", "b", "c", ""])
    with pytest.raises(ValueError, match=r"title is '\\t\\n'"):
        index.search(title="\t\n")
    with pytest.raises(ValueError, match="titles must be a list"):
        index.search_batch(titles="red mug")


def test_search_embeddings_are_checked(index):
    dimension = index.dim
    with pytest.raises(
        ValueError, match=rf"embeddings must be \(num_queries >= 1, {dimension}\).*\(1, {dimension + 1}\)"
    ):
        index.search_embeddings(np.ones((1, dimension + 1), np.float32))
    with pytest.raises(ValueError, match="embeddings must be"):
        index.search_embeddings(np.ones(dimension, np.float32))
    with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[1\]"):
        index.search_embeddings(np.stack([np.ones(dimension), np.full(dimension, np.nan)]))
    for k in (True, 0, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search_embeddings(np.ones((1, dimension), np.float32), k=k)


def test_catalogue_embeddings_are_checked(catalogue):
    embeddings = [[1.0, 0.0, 0.0]] * len(catalogue)
    ragged = catalogue.add_column("embeddings", embeddings[:2] + [[1.0, 0.0]] + embeddings[3:])
    with pytest.raises(ValueError, match=r"'embeddings' of catalogue row 2 \(product_id 'p2'\) has shape \(2,\)"):
        ProductSearchIndex(ragged)
    nan = catalogue.add_column("embeddings", embeddings[:4] + [[float("nan"), 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"catalogue row 4 \(product_id 'p4'\) has NaN"):
        ProductSearchIndex(nan)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ProductSearchIndex(catalogue.add_column("embeddings", embeddings), batch_size=0)
