# Everything runs inside .venv; `make test` and `make demo` install first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_APT_PACKAGES := unicode-data fonts-noto-color-emoji fonts-dejavu-core
# The app's browser test (tests/test_app.py) drives the system's Chromium; no tool downloads a browser of its own.
BROWSER_APT_PACKAGES := chromium chromium-driver
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-quick lint format demo demo-baseline demo-ablation demo-detection app clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build on this machine; GPU users install their CUDA torch into .venv first.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# Inputs of the offline demo catalogue (modeling_eclip/demo/catalogue.py): emoji list, Noto emoji, a
	# banner font. Installed only when missing, and only as root with apt-get; otherwise we say what to install.
	@missing=""; \
	for pkg in $(DEMO_APT_PACKAGES) $(BROWSER_APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) \
			|| echo "warning: could not install$$missing; the demo catalogue and the app's browser test need them"; \
	else \
		echo "note: the demo catalogue and the app's browser test need the Debian packages$$missing: sudo apt-get install$$missing"; \
	fi
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -n 2 tests

# The tests that start no other process (those marked slow start scripts, torchrun, pip, the app and a browser).
test-quick: lint
	$(BIN)/python -m pytest -n 2 -m "not slow" tests

# The main job (about 30 minutes the first time, 12 after that, on 2 idle CPU cores), as the paper does it: pretrain
# the image tower on non-product emoji (our offline ImageNet), then ECLIP from it and MiniLM, then evaluate it next to
# its CLIP baseline (the same recipe with L_itc alone) on held-out products and on new photos of training products.
# The tower, its data and the baseline are kept under outputs/ and data/ and rebuilt only when their inputs change.
DEMO_DATA := data/demo
NEW_SCENES := data/demo-new-scenes
TOWER_DATA := data/emoji-pretraining
TOWER := outputs/image-tower
DEMO_RUN := outputs/eclip-tiny-demo
BASELINE_RUN := outputs/eclip-tiny-demo-itc-only
ABLATION_RUNS := outputs/eclip-tiny-demo-inter outputs/eclip-tiny-demo-intra
PACKAGE := $(shell find modeling_eclip -name '*.py')
EVALUATE := $(BIN)/python examples/evaluate_eclip.py --dataset_name $(DEMO_DATA) --new-scenes $(NEW_SCENES) \
	--new-scenes-max-products 120

# These run only while the dataset card README.md is missing (no complete catalogue of format 2 there), so a leftover
# (or a catalogue of the old format 1) is replaced.
$(DEMO_DATA)/README.md: | $(STAMP)
	$(BIN)/python -m modeling_eclip.demo.catalogue --output $(DEMO_DATA) --overwrite

$(NEW_SCENES)/README.md: | $(STAMP)
	$(BIN)/python -m modeling_eclip.demo.catalogue --output $(NEW_SCENES) --scene-seed 1 --overwrite

$(TOWER_DATA)/build_info.json: modeling_eclip/demo/image_pretraining_set.py modeling_eclip/demo/images.py | $(STAMP)
	$(BIN)/python -m modeling_eclip.demo.image_pretraining_set --output $(TOWER_DATA) --overwrite

$(TOWER)/tower_info.json: $(TOWER_DATA)/build_info.json modeling_eclip/training/image_tower.py configuration/eclip-tiny.json
	$(BIN)/python examples/pretrain_image_tower.py --dataset $(TOWER_DATA) --output_dir $(TOWER) \
		--classifier_init_text_model all-MiniLM-L6-v2 --max_train_minutes 8 --overwrite_output_dir

# One recipe run: outputs/<run>/model is the export; the recipe and the package are its inputs.
outputs/eclip-tiny-demo-%/model/config.json: configuration/recipe-demo-%.yaml configuration/recipe-demo.yaml \
		$(TOWER)/tower_info.json $(DEMO_DATA)/README.md $(PACKAGE)
	rm -rf outputs/eclip-tiny-demo-$*
	$(BIN)/python examples/pretrain.py --config configuration/recipe-demo-$*.yaml

demo-baseline: $(BASELINE_RUN)/model/config.json

demo: $(BASELINE_RUN)/model/config.json $(NEW_SCENES)/README.md
	rm -rf $(DEMO_RUN)
	$(BIN)/python examples/pretrain.py --config configuration/recipe-demo.yaml
	$(EVALUATE) --model $(DEMO_RUN)/model --compare $(BASELINE_RUN)/model --output $(DEMO_RUN)/results.json

# Table 5 in the spirit of the paper: ITC only, + inter-product (L_inter, L_itm), + intra-product (L_intra, L_R), all.
demo-ablation: $(BASELINE_RUN)/model/config.json $(addsuffix /model/config.json,$(ABLATION_RUNS)) \
		$(NEW_SCENES)/README.md
	@test -f $(DEMO_RUN)/model/config.json || $(MAKE) demo
	$(EVALUATE) --model $(BASELINE_RUN)/model --compare $(addsuffix /model,$(ABLATION_RUNS)) $(DEMO_RUN)/model \
		--output outputs/ablation.json

# The Gradio demo app on the `make demo` model and catalogue, at http://127.0.0.1:7860 (see README, "Demo app").
APP_MODEL ?= $(DEMO_RUN)/model
app: $(DEMO_DATA)/README.md | $(STAMP)
	@test -f $(APP_MODEL)/config.json || (echo "no model at $(APP_MODEL): run make demo first, or make app APP_MODEL=dir"; exit 1)
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/python examples/app.py --model $(APP_MODEL) --data $(DEMO_DATA)

# Table 4 (right), object detection (Sec. 4.2.5): the same DETR-style fine-tune from the ECLIP and from the ITC-only
# checkpoint (same steps, batch and seed), then both evaluated side by side on the held-out products' photos.
DETECTION_RUNS := outputs/detection-eclip outputs/detection-itc-only

demo-detection: $(BASELINE_RUN)/model/config.json
	@test -f $(DEMO_RUN)/model/config.json || $(MAKE) demo
	rm -rf $(DETECTION_RUNS)
	$(BIN)/python examples/finetune_detection.py --config configuration/finetune-detection-demo.yaml
	$(BIN)/python examples/finetune_detection.py --config configuration/finetune-detection-demo-itc-only.yaml
	$(BIN)/python -m modeling_eclip.detection --model outputs/detection-eclip/model \
		--compare outputs/detection-itc-only/model --data $(DEMO_DATA) --output outputs/detection.json

clean:
	rm -rf $(VENV) build *.egg-info
