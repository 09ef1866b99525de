# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The Gradio app (`examples/app.py`) used as a person would: started on a local port, driven in headless Chromium
with selenium (the system's `chromium` and `chromedriver`, no browser download), one tab at a time, with screenshots;
what the Classify and Ground tabs show is computed again from the checkpoint with the package alone.

Skipped where Chromium is absent (`make install` installs it where apt-get runs as root). Screenshots go to
`$ECLIP_APP_SCREENSHOTS` if set, else to the test's temporary folder.
"""

import base64
import io
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from helpers import REPO, save_tiny_checkpoint, subprocess_env
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_eclip.evaluation.search import load_catalogue
from modeling_eclip.grounding_eclip import candidate_boxes, grounding_score_maps, overlay_heatmap, score_boxes
from modeling_eclip.pipeline_eclip import PIPELINE_TASK
from modeling_eclip.processing_eclip import to_rgb_image

# Skipped without the app extra, before selenium is imported; ruff's E402 allows imports after pytest.importorskip.
pytest.importorskip("gradio", reason="needs the app extra: pip install '.[app]'")
pytest.importorskip("selenium", reason="needs the app extra: pip install '.[app]'")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = (
    "the browser test needs Debian's chromium and chromium-driver (make install, or apt-get install chromium "
    "chromium-driver)"
)
START_TIMEOUT = 300
RESULT_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the app did not answer at {url} within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("app") / "model", seed=2)


@pytest.fixture(scope="module")
def model_and_processor(checkpoint):
    """The app's checkpoint in this process: what the page shows is computed again from it with the package alone."""
    return AutoModel.from_pretrained(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def app_url(checkpoint, demo_catalogue):
    """The app on a tiny checkpoint and the tiny demo catalogue, on a free local port."""
    root = checkpoint.parent
    port = _free_port()
    command = [sys.executable, str(REPO / "examples" / "app.py"), "--model", str(checkpoint)]
    command += ["--data", str(demo_catalogue), "--port", str(port), "--cache-dir", str(root / "cache")]
    log = root / "app.log"
    env = {**subprocess_env(), "GRADIO_TEMP_DIR": str(root / "gradio")}
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def chromium_driver(width: int = 1200, height: int = 900) -> webdriver.Chrome:
    """Headless system Chromium; every host but 127.0.0.1 resolves to nothing, so the page must work offline."""
    # Selenium Manager must not look for or download a browser or driver: both are given.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(NO_BROWSER)
    driver = chromium_driver()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def product_files(tmp_path_factory, demo_catalogue):
    """A held-out product's catalog image and title, a customer photo of it, and a file that is not an image."""
    root = tmp_path_factory.mktemp("uploads")
    catalog = load_catalogue(demo_catalogue, "test")[0]
    scene = load_catalogue(demo_catalogue, "test", kind="customer")[0]
    (root / "product.png").write_bytes(catalog["image"])
    (root / "scene.png").write_bytes(scene["image"])
    (root / "broken.png").write_bytes(b"these bytes are not an image")
    return {"product": root / "product.png", "scene": root / "scene.png", "broken": root / "broken.png"} | {
        "title": catalog["title"],
        "category": catalog["category"],
    }


@pytest.fixture
def screenshots(tmp_path) -> pathlib.Path:
    directory = pathlib.Path(os.environ.get("ECLIP_APP_SCREENSHOTS", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def open_tab(driver: webdriver.Chrome, url: str, name: str) -> None:
    """Loads the page afresh and selects the tab called `name`."""
    driver.get(url)
    wait = WebDriverWait(driver, RESULT_TIMEOUT)
    tab = wait.until(
        lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == name), None)
    )
    tab.click()
    wait.until(lambda d: d.find_element(By.ID, f"{name.lower()}-run").is_displayed())


def upload(driver: webdriver.Chrome, element_id: str, path: pathlib.Path) -> None:
    """Uploads a file and waits for its preview (an undecodable file gets a broken one)."""
    driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=file]").send_keys(str(path))
    WebDriverWait(driver, RESULT_TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{element_id} img"))


def type_into(driver: webdriver.Chrome, element_id: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{element_id} textarea, #{element_id} input")
    field.clear()
    field.send_keys(text)


def run_and_read_status(driver: webdriver.Chrome, tab: str, expected: str) -> str:
    """Clicks the tab's button and waits until its status line contains `expected` (or shows an error)."""
    status = driver.find_element(By.ID, f"{tab}-status")
    before = status.text
    driver.find_element(By.ID, f"{tab}-run").click()
    WebDriverWait(driver, RESULT_TIMEOUT).until(
        lambda d: status.text != before and (expected in status.text or "Error" in status.text)
    )
    return status.text


def shown_image(driver: webdriver.Chrome, element_id: str) -> np.ndarray:
    """The pixels of the image an output component shows (served by the app, or inline)."""
    source = driver.find_element(By.CSS_SELECTOR, f"#{element_id} img[src]").get_attribute("src")
    if source.startswith("data:"):
        data = base64.b64decode(source.split(",", 1)[1])
    else:
        with urllib.request.urlopen(source, timeout=30) as response:
            data = response.read()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def save_screenshot(driver: webdriver.Chrome, path: pathlib.Path) -> None:
    """A screenshot of the page from its top (clicking a button may have scrolled it)."""
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))


@pytest.mark.slow
def test_page_renders_offline_from_local_assets(app_url, browser):
    browser.get(app_url)
    WebDriverWait(browser, RESULT_TIMEOUT).until(lambda d: d.find_elements(By.ID, "classify-run"))
    assert browser.title == "ECLIP product demo"
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert resources and all(name.startswith(app_url.rstrip("/")) for name in resources), resources
    tabs = [tab.text for tab in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]")]
    assert tabs == ["Classify", "Ground", "Search"]


@pytest.mark.slow
def test_classify_tab_ranks_the_candidate_categories(app_url, browser, product_files, screenshots, model_and_processor):
    open_tab(browser, app_url, "Classify")
    upload(browser, "classify-image", product_files["product"])
    type_into(browser, "classify-title", product_files["title"])
    labels = [product_files["category"], "tool", "vegetable"]
    type_into(browser, "classify-labels", ", ".join(labels))
    status = run_and_read_status(browser, "classify", "Best category")
    # The pipeline's best category and its score for the same photo, title and labels.
    model, processor = model_and_processor
    classifier = pipeline(
        PIPELINE_TASK, model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    )
    image = to_rgb_image(str(product_files["product"]))
    best = classifier(image, titles=product_files["title"], candidate_labels=labels)[0]
    assert f"Best category: {best['label']} ({best['score']:.2f})" in status and product_files["title"] in status
    shown = browser.find_element(By.ID, "classify-scores").text
    assert "%" in shown and all(label in shown for label in labels)
    save_screenshot(browser, screenshots / "classify.png")


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["text", "photo"])
def test_ground_tab_shows_the_best_window_and_the_score_map_of_the_prompt(
    app_url, browser, product_files, screenshots, model_and_processor, load_example, prompt
):
    open_tab(browser, app_url, "Ground")
    upload(browser, "ground-image", product_files["scene"])
    if prompt == "text":
        type_into(browser, "ground-text", product_files["title"])
    else:
        upload(browser, "ground-prompt-image", product_files["product"])
    status = run_and_read_status(browser, "ground", "Best box")
    WebDriverWait(browser, RESULT_TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ground-overlay img[src]"))
    # The same prompt's score map from the package, and of the app's sliding windows the one it scores highest.
    model, processor = model_and_processor
    scene = to_rgb_image(str(product_files["scene"]))
    if prompt == "text":
        prompts = {"texts": [product_files["title"]]}
    else:
        prompts = {"prompt_images": [to_rgb_image(str(product_files["product"]))]}
    with torch.no_grad():
        (score_map,) = grounding_score_maps(model, processor, [scene], **prompts)
    fractions = load_example("app").GROUND_WINDOW_FRACTIONS
    windows = candidate_boxes(
        (0, 0, *scene.size), scene.size, torch.Generator().manual_seed(0), num_jittered=0, window_fractions=fractions
    )
    scores = score_boxes(score_map, windows)
    box = [round(value) for value in windows[int(scores.argmax())].tolist()]
    shown_box = re.search(r"\((\d+), (\d+), (\d+), (\d+)\)", status)
    assert shown_box and [int(value) for value in shown_box.groups()] == box, status
    assert f"score {float(scores.max()):.3f}" in status and f"out of {len(windows)} windows" in status, status
    # The overlay shown is that map with that box drawn on the scene.
    expected = np.asarray(overlay_heatmap(scene, score_map, boxes=[box]).convert("RGB"), dtype=np.int16)
    shown = shown_image(browser, "ground-overlay")
    assert shown.shape == expected.shape and np.abs(shown - expected).max() <= 1
    if prompt == "text":
        save_screenshot(browser, screenshots / "ground.png")


@pytest.mark.slow
def test_search_tab_shows_catalogue_products_with_images(app_url, browser, product_files, screenshots):
    open_tab(browser, app_url, "Search")
    upload(browser, "search-image", product_files["product"])
    type_into(browser, "search-title", product_files["title"])
    status = run_and_read_status(browser, "search", "Top")
    assert status.startswith("Top 6 of 8 catalogue products for the photo + title"), status
    WebDriverWait(browser, RESULT_TIMEOUT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results img")) >= 6
    )
    # The query is a catalogue product itself: it comes first.
    assert product_files["title"] in browser.find_element(By.ID, "search-results").text
    save_screenshot(browser, screenshots / "search.png")


@pytest.mark.slow
@pytest.mark.parametrize(
    "tab, actions, message",
    [
        ("Classify", [], "Upload a photo first."),
        ("Classify", [("upload", "classify-image", "broken")], "Cannot decode"),
        ("Classify", [("upload", "classify-image", "product"), ("type", "classify-labels", " , ")], "at least two"),
        ("Ground", [("upload", "ground-image", "scene")], "Enter a text"),
        ("Search", [], "Upload a photo and/or enter a title"),
    ],
)
def test_errors_show_as_messages_in_the_page(app_url, browser, product_files, tab, actions, message):
    open_tab(browser, app_url, tab)
    for action, element_id, value in actions:
        if action == "upload":
            upload(browser, element_id, product_files[value])
        else:
            type_into(browser, element_id, value)
    status = run_and_read_status(browser, tab.lower(), "Error")
    assert status.startswith("Error:") and message in status, status
    assert "Traceback" not in browser.page_source


def test_app_starts_and_serves_its_page_without_contacting_any_other_host(tmp_path, monkeypatch, load_example):
    """No analytics, version check or CDN: while the app starts and serves its page, every host resolved or
    connected to is this machine."""
    hosts = []
    resolve, connect = socket.getaddrinfo, socket.socket.connect

    def recording_resolve(host, *args, **kwargs):
        hosts.append(host)
        return resolve(host, *args, **kwargs)

    def recording_connect(sock, address):
        hosts.append(address[0] if isinstance(address, tuple) else address)
        return connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", recording_resolve)
    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    app = load_example("app")
    demo = app.EclipDemo(str(save_tiny_checkpoint(tmp_path / "model")), data_dir=None)
    port = _free_port()
    page = app.build_app(demo)
    page.launch(server_port=port, prevent_thread_lock=True)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert "ECLIP product demo" in response.read().decode()
        time.sleep(2)  # what gradio starts in background threads
    finally:
        page.close()
    assert hosts and set(hosts) <= {"127.0.0.1", "localhost", "::1"}, hosts
