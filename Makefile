# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, generate a scene from the Kyoto photo with the offline defaults
#   make test   - create .venv if missing, install, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PHOTO := ../shared/data/photos/photo-1667788000333-4e36f948de9a.jpeg
PROMPT := a street with traditional buildings in Kyoto, Japan

.PHONY: demo test install lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[models,viewer,train,dev,mesh]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stitch generate "$(PHOTO)" --prompt "$(PROMPT)" --mode stage -o out/kyoto/scene.ply --run-dir out/kyoto --splat
	@echo "scene: out/kyoto/scene.ply  preview: out/kyoto/preview.png  manifest: out/kyoto/manifest.json"

test: $(STAMP)
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out .pytest_cache
