# `make demo` and `make test` each do the whole set-up first (scripts/install.sh creates .venv/ once).
PY := .venv/bin/python

.PHONY: install demo test
install:
	bash scripts/install.sh

demo: install
	$(PY) -m fairseq_r3f.demo

test: install
	$(PY) -m pytest -q tests
