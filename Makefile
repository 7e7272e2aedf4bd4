# Two commands on a fresh machine: `make run` (offline demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: run test venv check-config bench clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: venv
	$(PY) main.py demo $(ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

check-config: venv
	$(PY) main.py check-config

clean-venv:
	rm -rf $(VENV)
