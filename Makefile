# Two commands on a fresh machine: `make run` (offline demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: run test venv browser check-config bench clean-venv
# The dashboard's browser test (tests/test_dashboard_browser.py) drives Debian's chromium through
# its chromedriver; `make test` installs them when missing and makes that test fail, not skip,
# without them.
BROWSER_BINS := /usr/bin/chromium /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: venv
	$(PY) main.py demo $(ARGS)

browser:
	@for bin in $(BROWSER_BINS); do test -x $$bin || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing chromium and chromium-driver (apt) for the dashboard's browser test"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: venv browser
	PAIRS_BOT_REQUIRE_BROWSER=1 $(PY) -m pytest $(PYTEST_ARGS)

check-config: venv
	$(PY) main.py check-config

clean-venv:
	rm -rf $(VENV)
