# Everything sets itself up from a fresh clone: `make test`, `make demo`, `make bench`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install test demo bench configs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install
	$(PY) -m pytest -q --durations=10

demo: install
	$(VENV)/bin/dfd demo

bench: install
	$(PY) benchmarks/bench_decode.py
	$(PY) benchmarks/bench_inference.py --threads 1
	$(PY) benchmarks/bench_train_step.py --threads 1
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_faces.py

# Regenerate the root config.json / video_preprocessor_config.json from the code's defaults.
configs: install
	$(PY) -m dfd.tools.export

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
