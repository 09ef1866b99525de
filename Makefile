# Everything runs inside .venv; `make test` and `make demo` install first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_APT_PACKAGES := unicode-data fonts-noto-color-emoji fonts-dejavu-core
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test lint format demo clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build on this machine; GPU users install their CUDA torch into .venv first.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# Inputs of the offline demo catalogue (modeling_eclip/data/demo_catalogue.py): emoji list, Noto emoji, a
	# banner font. Installed only when missing, and only as root with apt-get; otherwise we say what to install.
	@missing=""; \
	for pkg in $(DEMO_APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) \
			|| echo "warning: could not install$$missing; the demo catalogue needs them"; \
	else \
		echo "note: the demo catalogue needs the Debian packages$$missing: sudo apt-get install$$missing"; \
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

# The main job: build the demo catalogue if missing, pretrain eclip-tiny for about 10 minutes on 2 CPU cores (two
# single-threaded processes: on a busy machine, one process with 2 intra-op threads stalls at every thread barrier),
# evaluate the export on the held-out products and print the tables.
DEMO_DATA := data/demo
DEMO_RUN := outputs/eclip-tiny-demo

demo: install
	@test -d $(DEMO_DATA)/train || $(BIN)/python -m modeling_eclip.data.demo_catalogue --output $(DEMO_DATA)
	rm -rf $(DEMO_RUN)
	$(BIN)/python examples/pretrain.py --config configuration/recipe-demo.yaml \
		--data_dir $(DEMO_DATA) --output_dir $(DEMO_RUN)
	$(BIN)/python examples/evaluate_eclip.py --model $(DEMO_RUN)/model --data $(DEMO_DATA) --output $(DEMO_RUN)/results.json

clean:
	rm -rf $(VENV) build *.egg-info
