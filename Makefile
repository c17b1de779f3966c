# The two commands of the quickstart: `make run` and `make test`. Everything they need is
# installed from the pinned files in this repo (constraints.txt, package-lock.json).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup lint bench clean image image-tools sip-tools ops-tools compose-images

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

node_modules/.bin/azurite-blob: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# the console's browser tests drive Debian's Chromium (Playwright never downloads a browser)
/usr/bin/chromium:
	apt-get update && apt-get install -y chromium

# the hand-off's SIP test (tests/handoff/test_sip_call.py): a real call through kamailio and
# rtpengine between baresip user agents; curl posts as rtpengine's recording daemon does
# (libcurl's multipart); from the Debian mirror when missing
SIP_TOOLS := /usr/sbin/kamailio /usr/bin/rtpengine /usr/bin/baresip /usr/bin/curl
$(SIP_TOOLS):
	apt-get -o DPkg::Lock::Timeout=600 update && DEBIAN_FRONTEND=noninteractive \
	apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
		kamailio rtpengine-daemon baresip-core curl

sip-tools: $(SIP_TOOLS)

# the README's commands (tests/test_readme.py) use curl, in a network namespace (iproute2's ip)
/usr/sbin/ip:
	apt-get -o DPkg::Lock::Timeout=600 update && apt-get -o DPkg::Lock::Timeout=600 install -y iproute2

setup: $(STAMP) node_modules/.bin/azurite-blob /usr/bin/chromium sip-tools /usr/sbin/ip

run: $(STAMP)
	$(BIN)/callvault serve

test: setup image-tools ops-tools
	$(BIN)/ruff check src tests bench image
	$(BIN)/mypy
	$(BIN)/pytest

# the container image, offline: localhost/callvault:<version> and :latest (docs/deploy.md)
image: $(STAMP) image-tools
	$(BIN)/python image/build.py

# compose.yaml's other images, offline: localhost/callvault-postgres:15 (Debian's postgresql-15)
# and localhost/callvault-seaweedfs (the S3 default store); image/services.py
compose-images: $(STAMP) image-tools
	$(BIN)/python -m image.services

# what `make image` and the image test (tests/image/) need, from the Debian mirror when missing
IMAGE_TOOLS := podman runc buildah debootstrap
image-tools:
	@missing=$$(for tool in $(IMAGE_TOOLS); do command -v $$tool >/dev/null || echo $$tool; done); \
	if [ -n "$$missing" ]; then \
		apt-get -o DPkg::Lock::Timeout=600 update && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $$missing; \
	fi

# what the day-two tests need (tests/operations/, deploy/): psql loads the 0.1.0 PostgreSQL
# fixture, promtool checks the alert rules, prometheus scrapes callvault, podman-compose runs
# compose.yaml; from the Debian mirror when missing
OPS_TOOLS := psql:postgresql-client promtool:prometheus prometheus:prometheus podman-compose:podman-compose
ops-tools:
	@missing=$$(for pair in $(OPS_TOOLS); do command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done | sort -u); \
	if [ -n "$$missing" ]; then \
		apt-get -o DPkg::Lock::Timeout=600 update && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $$missing; \
	fi

# the pipeline (throughput vs raw, low-load latency, 1 GiB memory) and the credentials GET
# under wrk; each prints its figures and exits 1 when a target is missed (docs/performance.md)
bench: setup
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk
	$(BIN)/python bench/pipeline.py --mode all; p=$$?; \
	$(BIN)/python bench/credentials_load.py; c=$$?; \
	$(BIN)/python bench/handoff.py; h=$$?; \
	exit $$((p || c || h))

clean:
	rm -rf $(VENV) node_modules .callvault
