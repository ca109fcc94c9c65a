# `make demo` and `make test` each do the whole set-up first (scripts/install.sh creates .venv/ once).
PY := .venv/bin/python

.PHONY: install demo test test-fast lint configs
install:
	bash scripts/install.sh

demo: install
	$(PY) -m fairseq_r3f.demo

# the whole suite; `slow` (end-to-end) tests are marked in tests/conftest.py
test: install
	$(PY) -m pytest -q tests

# unit and property tests only, in-process (under a minute)
test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

lint: install
	$(PY) -m ruff check .

# rewrite the hydra configs in fairseq_r3f/config from the hyper-parameter tables
configs: install
	$(PY) -m fairseq_r3f.config.generate
