# qsal-lab: `make book` builds the executed book, `make test` runs every test.
# Override any variable on the command line, e.g. `make book TORCH_SPEC="torch torchvision"`.

VENV ?= .venv
PY = $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The book is built at QSAL_BUDGET=book and tested at QSAL_BUDGET=ci, unless QSAL_BUDGET is set.
BOOK_BUDGET = $(or $(QSAL_BUDGET),book)
TEST_BUDGET = $(or $(QSAL_BUDGET),ci)
# Extra pytest options, e.g. `make test PYTEST_ARGS="-k 03_ptq"` or PYTEST_ARGS="-m 'not slow'".
PYTEST_ARGS ?=
# Re-install only when the project's dependencies change.
INSTALLED = $(VENV)/.qsal-installed

.PHONY: venv install book test exercises bench bench-quant bench-saliency bench-cifar bench-edge bench-medical vendor clean

venv install: $(INSTALLED)

$(PY):
	python3 -m venv $(VENV)

# PyTorch first, so that TORCH_SPEC decides which build the project gets.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[dev]"
	touch $@

# MPLBACKEND is dropped so that the notebooks' figures render inline (ipykernel only picks
# its inline backend when MPLBACKEND is unset).
# Both targets record their wall-clock time (_build/book_time.json, _build/test_time.json) for
# tools/book_report.py, which reports them against the 20- and 35-minute budgets.
book: $(INSTALLED)
	@mkdir -p _build; start=$$(date +%s); \
	env -u MPLBACKEND QSAL_BUDGET=$(BOOK_BUDGET) $(VENV)/bin/jupyter-book build . -W -n --keep-going; status=$$?; \
	echo "{\"budget\": \"$(BOOK_BUDGET)\", \"seconds\": $$(( $$(date +%s) - start )), \"status\": $$status}" > _build/book_time.json; \
	if [ $$status -eq 0 ]; then echo "The book is in $(CURDIR)/_build/html: open $(CURDIR)/_build/html/index.html"; fi; \
	exit $$status

# One pytest run: library tests, the notebooks under nbval, the exercises and the book build.
test: $(INSTALLED)
	@mkdir -p _build; start=$$(date +%s); \
	QSAL_BUDGET=$(TEST_BUDGET) $(PY) -m pytest tests -ra --durations=15 $(PYTEST_ARGS); status=$$?; \
	echo "{\"budget\": \"$(TEST_BUDGET)\", \"seconds\": $$(( $$(date +%s) - start )), \"status\": $$status}" > _build/test_time.json; \
	exit $$status

exercises: $(INSTALLED)
	$(PY) tools/nbtools.py make-exercises

# Each benchmark is one run that writes bench/results/<name>.json and .md, targets marked met or MISSED.
# `make bench` runs them all (tens of minutes on 2 cores); `make bench-quant` etc. run one.
# Offline, CIFAR-10's benchmark needs the labelled stand-in asked for: `make bench QSAL_STANDIN=1`.
BENCHES = quant saliency cifar edge medical
bench: $(addprefix bench-,$(BENCHES))
bench-quant: $(INSTALLED)
	$(PY) bench/quant_mnist.py
bench-saliency: $(INSTALLED)
	$(PY) bench/saliency_mnist.py
bench-edge: $(INSTALLED)
	$(PY) bench/edge.py
bench-medical: $(INSTALLED)
	$(PY) bench/medical.py
bench-cifar: $(INSTALLED)
	$(PY) bench/cifar_resnet20.py

# Re-fetch the JavaScript the book loads offline (book/_static/vendor/) from npm at the pinned
# versions in tools/vendor_assets.sh; needs npm. The result is committed.
vendor:
	tools/vendor_assets.sh

clean:
	rm -rf _build .pytest_cache
