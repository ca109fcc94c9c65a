# `make demo` and `make test` each do the whole set-up first (scripts/install.sh creates .venv/ once).
PY := .venv/bin/python

.PHONY: install demo demo-hf test test-fast test-official lint configs
install:
	bash scripts/install.sh

demo: install
	$(PY) -m fairseq_r3f.demo

# the same three methods through transformers' Trainer (rxf.hf: R3FTrainer), a tiny RoBERTa built from a config
demo-hf: install
	$(PY) -m rxf.hf.demo

# the whole suite; `slow` (end-to-end) tests are marked in tests/conftest.py. It runs on TEST_WORKERS pytest-xdist
# workers (the tests are mostly single-threaded subprocesses: two workers halve the time on 2 cores). Each test
# module runs on one worker (--dist loadfile), so its module-scoped fixtures (a preprocessed corpus, a set of tiny
# runs) are built once. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# unit and property tests only, in-process (under a minute)
test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

# CI's third job: official fairseq 0.12.2 + torch 1.13.1 on Python 3.10, built into .venv-official/ (see .ci/run)
test-official:
	bash .ci/run official

lint: install
	$(PY) -m ruff check .

# rewrite the hydra configs in fairseq_r3f/config from the hyper-parameter tables
configs: install
	$(PY) -m fairseq_r3f.config.generate
