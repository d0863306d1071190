# The two commands of the README quick start. Both build the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch: small, and the one this project is tested with (see DEVELOPERS.md).
TORCH_CPU ?= torch==2.13.0
DEMO_OUT ?= demo-output

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_CPU)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/brainsynth run --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUT)
