# Every target does its own set-up on a fresh clone: it creates .venv and installs the toolkit.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEMO ?= out/demo
# The demo's study: small enough for the demo's time on 2 CPU cores
DEMO_STUDY ?= --selection 2 --random-layers 2 --budgets 4,16 --steps 16 --pilot-steps 5 \
	--cloak-seeds 1 --generation-seeds 1 --eval-steps 10
# Every Python folder: the layers (bottom to top) core, models, world, probe, analyses, protect,
# evaluate and anti_i2v (plan, commands, the CLI), then tests and bench.
SRC := core models world probe analyses protect evaluate experiments anti_i2v tests bench tools artifacts/configs

.PHONY: browser test test-fast demo study-mini-svd-v2 study-mini-svd study-mini-cogvideox \
	study-levers-mini-svd-v2 study-levers-mini-svd study-attention-mini-cogvideox study-attention-target-mini-svd-v2 \
	study-attention-target-mini-svd study-region-mini-svd-v2 study-region-mini-svd \
	study-unrolled-mini-svd-v2 study-unrolled-mini-svd study-unrolled-confirm-mini-svd-v2 \
	study-unrolled-wide-mini-svd \
	inside-mini-cogvideox report-h264-mini-cogvideox lint format bench gpu-check clean-venv docs reports

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,faces]'
	# FaceNet for ISM (evaluate --identity facenet:PATH): its metadata pins torch<2.3, the code runs on this torch.
	$(BIN)/pip install -q --no-deps 'facenet-pytorch==2.6.0'
	touch $(STAMP)

# The explorer's browser tests drive Debian's Chromium through Playwright. Installed here when missing
# and apt-get is usable (root); otherwise those tests skip with a one-line reason and the rest run.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium with apt-get (for the explorer's browser tests)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
				|| echo "chromium: apt-get failed; the browser tests will be skipped"; \
		else echo "chromium: missing and apt-get is not usable here; the browser tests will be skipped"; fi; }

# Everything: unit tests and the slow end-to-end, training, memory, plan, torchrun, S3, Dask, browser,
# docs and packaging tests (about 8 minutes on 2 cores).
# Two pytest-xdist workers of one torch thread each (tests/conftest.py shares the cores out): most
# tests are too small to keep two threads busy. worksteal evens out the few long ones.
TEST_WORKERS ?= 2
# One OpenMP thread per worker, set before the workers start: a native pool that reads the
# variable when it loads (before tests/conftest.py runs) would otherwise start one thread per
# core in each worker, and the spinning threads slowed whole end-to-end tests 6-fold.
TEST_THREADS ?= 1
test: $(STAMP) browser
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15 tests

# The unit tier: everything not marked slow, on the same workers as the whole suite (serially it
# ran over its 30 s aim on a 2-core machine).
test-fast: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal tests

# The main job on the mini world, offline: render held-out portraits -> generate -> adapt
# (probe + analyse) -> protect (Anti-I2V and two baselines on mini-cogvideox, Anti-I2V on mini-svd)
# -> evaluate on both models (robustness and transfer tables).
demo: $(STAMP)
	$(BIN)/anti-i2v world render --out $(DEMO)/world --count 4 --seed 1 --photos $(DEMO)/photos
	$(BIN)/anti-i2v generate mini-cogvideox $$(ls $(DEMO)/photos/*.png | head -1) --out $(DEMO)/video.gif --strip
	$(BIN)/anti-i2v probe mini-cogvideox $(DEMO)/photos --out $(DEMO)/adapt/activations.zarr --timesteps 100,300,500,700,900
	$(BIN)/anti-i2v adapt mini-cogvideox $(DEMO)/photos --masks $(DEMO)/world --out $(DEMO)/adapt
	$(BIN)/anti-i2v adapt mini-svd $(DEMO)/photos --masks $(DEMO)/world --out $(DEMO)/adapt-svd
	$(BIN)/anti-i2v protect mini-cogvideox $(DEMO)/photos --profile $(DEMO)/adapt/profile.json --out $(DEMO)/anti-i2v
	$(BIN)/anti-i2v protect mini-cogvideox $(DEMO)/photos --method rgb-pgd --out $(DEMO)/rgb-pgd
	$(BIN)/anti-i2v protect mini-cogvideox $(DEMO)/photos --method random-noise --out $(DEMO)/random-noise
	$(BIN)/anti-i2v protect mini-svd $(DEMO)/photos --profile $(DEMO)/adapt-svd/profile.json --out $(DEMO)/anti-i2v-svd
	$(BIN)/anti-i2v evaluate mini-cogvideox --clean $(DEMO)/photos --protected $(DEMO)/anti-i2v \
		--protected $(DEMO)/rgb-pgd --protected $(DEMO)/random-noise --protected $(DEMO)/anti-i2v-svd \
		--models mini-svd --distortions jpeg75,platform,vae --out $(DEMO)/report
	# The question itself, small: on six fresh portraits (two choose the layers, four are evaluated),
	# does Anti-I2V beat RGB PGD at equal visibility, and do the probed layers beat random ones?
	$(BIN)/anti-i2v world render --out $(DEMO)/study-world --count 6 --seed 2 --photos $(DEMO)/study-photos
	$(BIN)/anti-i2v study mini-cogvideox $(DEMO)/study-photos --masks $(DEMO)/study-world \
		--out $(DEMO)/study $(DEMO_STUDY)
	@echo "demo done: open $(DEMO)/study/README.md (the answer), $(DEMO)/adapt/index.html and $(DEMO)/report/index.html"

# The shipped studies (`anti-i2v study`, docs/study.md): each renders fresh held-out portraits of
# its model's world from a seed no earlier run used, runs one pre-registered study on them and
# ships the study's files to artifacts/studies/NAME. Every step resumes; rerun the same target.
# Sized for a 2-core CPU (30 sign steps, 8 evaluation portraits, one video seed): each study's
# README gives its command and cost.json its time. On a GPU, raise STUDY_ARGS' steps and seeds
# (a new STUDY folder: a changed protocol is refused in the old one).
STUDY_PORTRAITS ?= 12
comma := ,
STUDY_ARGS ?= --selection 4 --random-layers 3 --budgets 4,8,14 --steps 30 --pilot-steps 20 \
	--cloak-seeds 2 --generation-seeds 1
STUDY_FILES := README.md report.json protocol.json portraits.csv results.csv frontier.png cost.json
# $(call study_recipe,NAME,WORLD,SEED[,MODEL[,ARGS]]): MODEL defaults to NAME, ARGS to STUDY_ARGS;
# an attention arm's shares (attention/attention.json) ship beside the study's files.
define study_recipe
	$(BIN)/anti-i2v world render --world $(2) --out out/study-$(1)/world --count $(STUDY_PORTRAITS) \
		--seed $(3) --photos out/study-$(1)/photos
	$(BIN)/anti-i2v study $(or $(4),$(1)) out/study-$(1)/photos --masks out/study-$(1)/world \
		--out out/study-$(1)/study $(or $(5),$(STUDY_ARGS))
	rm -rf artifacts/studies/$(1).tmp && mkdir -p artifacts/studies/$(1).tmp
	cd out/study-$(1)/study && cp $(STUDY_FILES) ../../../artifacts/studies/$(1).tmp/
	if [ -f out/study-$(1)/study/attention/attention.json ]; then \
		cp out/study-$(1)/study/attention/attention.json artifacts/studies/$(1).tmp/; fi
	rm -rf artifacts/studies/$(1) && mv artifacts/studies/$(1).tmp artifacts/studies/$(1)
endef
study-mini-svd-v2: $(STAMP)
	$(call study_recipe,mini-svd-v2,v2,41)
study-mini-svd: $(STAMP)
	$(call study_recipe,mini-svd,v1,43)
study-mini-cogvideox: $(STAMP)
	$(call study_recipe,mini-cogvideox,v1,47)

# The cost lever (issue: a cloak that wins at a quarter of the cost): fresh portraits, a pilot of
# optimisers on the study's selection photos only, then a study registered with the pilot's
# choice as the anti-i2v-fast arm (a quarter of the steps) beside full Anti-I2V and RGB PGD.
LEVER_ARGS ?= --selection 4 --arms rgb-pgd,anti-i2v --budgets 4,8,14 --steps 60 \
	--cloak-seeds 2 --generation-seeds 1
# $(call lever_recipe,NAME,WORLD,SEED,MODEL,PILOT,STUDY_ARGS[,PILOT_ARGS]): the pilot
# (anti_i2v.experiments.PILOT) writes the options the study is then registered with.
define lever_recipe
	$(BIN)/anti-i2v world render --world $(2) --out out/study-$(1)/world --count $(STUDY_PORTRAITS) \
		--seed $(3) --photos out/study-$(1)/photos
	$(BIN)/python -m anti_i2v.experiments.$(5) $(4) out/study-$(1)/photos \
		--profile artifacts/profiles/$(4).json --selection 4 --steps 60 $(7) --out out/study-$(1)/pilot
	$(BIN)/anti-i2v study $(4) out/study-$(1)/photos --masks out/study-$(1)/world \
		--out out/study-$(1)/study $(6) $$(cat out/study-$(1)/pilot/study-options.txt)
	rm -rf artifacts/studies/$(1).tmp && mkdir -p artifacts/studies/$(1).tmp
	cd out/study-$(1)/study && cp $(STUDY_FILES) ../../../artifacts/studies/$(1).tmp/
	cp out/study-$(1)/pilot/pilot.json artifacts/studies/$(1).tmp/
	rm -rf artifacts/studies/$(1) && mv artifacts/studies/$(1).tmp artifacts/studies/$(1)
endef
study-levers-mini-svd-v2: $(STAMP)
	$(call lever_recipe,levers-mini-svd-v2,v2,53,mini-svd-v2,optimiser_pilot,$(LEVER_ARGS))
study-levers-mini-svd: $(STAMP)
	$(call lever_recipe,levers-mini-svd,v1,59,mini-svd,optimiser_pilot,$(LEVER_ARGS))

# The region lever (issue: a cloak that wins at equal visibility): full Anti-I2V with its change
# moved towards the face (face-region), against itself and RGB PGD. The pilot picks the floor on
# the selection photos: the lowest whose p95/mean ΔE is no higher than RGB PGD's.
REGION_ARGS ?= --selection 4 --arms rgb-pgd,anti-i2v,face-region --budgets 4,8,14 --steps 60 \
	--cloak-seeds 2 --generation-seeds 1
study-region-mini-svd-v2: $(STAMP)
	$(call lever_recipe,region-mini-svd-v2,v2,89,mini-svd-v2,region_pilot,$(REGION_ARGS),--masks out/study-region-mini-svd-v2/world)
study-region-mini-svd: $(STAMP)
	$(call lever_recipe,region-mini-svd,v1,97,mini-svd,region_pilot,$(REGION_ARGS),--masks out/study-region-mini-svd/world)

# The attention share as a layer choice (`--arms ... attention-layers`, docs/study.md): do the
# blocks whose later frames attend most to the photo's frame make better anchors than the
# semantic scores' or random ones? Fresh portraits; the study's own protocol, as above.
ATTENTION_ARGS ?= --selection 4 --arms rgb-pgd,profile-layers,random-layers,attention-layers \
	--random-layers 3 --budgets 4,8,14 --steps 30 --cloak-seeds 2 --generation-seeds 1
study-attention-mini-cogvideox: $(STAMP)
	$(call study_recipe,attention-mini-cogvideox,v1,61,mini-cogvideox,$(ATTENTION_ARGS))

# The attention lever (issue: a cloak that wins at equal visibility): the colour space's diffusion
# loss plus a term lowering the later frames' attention on the photo's frame (attention-target),
# against RGB PGD and the colour space alone, on both SVD worlds. Fresh portraits each.
TARGET_ARGS ?= --selection 4 --arms rgb-pgd,colour-space,attention-target --budgets 4,8,14 \
	--steps 30 --cloak-seeds 2 --generation-seeds 1
study-attention-target-mini-svd-v2: $(STAMP)
	$(call study_recipe,attention-target-mini-svd-v2,v2,79,mini-svd-v2,$(TARGET_ARGS))
study-attention-target-mini-svd: $(STAMP)
	$(call study_recipe,attention-target-mini-svd,v1,83,mini-svd,$(TARGET_ARGS))

# The unrolled lever (issue: a cloak that wins at equal visibility): the colour space's diffusion
# loss read after two sampler steps (unrolled), against the one-step loss and RGB PGD, on both
# SVD worlds. Fresh portraits each; two steps, the fewest the lever has, so no pilot chooses.
UNROLLED_ARGS ?= --selection 4 --arms rgb-pgd,colour-space,unrolled --budgets 4,8,14 \
	--steps 30 --cloak-seeds 2 --generation-seeds 1
study-unrolled-mini-svd-v2: $(STAMP)
	$(call study_recipe,unrolled-mini-svd-v2,v2,101,mini-svd-v2,$(UNROLLED_ARGS))
study-unrolled-mini-svd: $(STAMP)
	$(call study_recipe,unrolled-mini-svd,v1,103,mini-svd,$(UNROLLED_ARGS))
# Registered after those two were read: a replication on fresh v2 portraits with the same
# protocol, and v1 again with budgets wide enough for the unrolled arm to span ΔE 2-5.
study-unrolled-confirm-mini-svd-v2: $(STAMP)
	$(call study_recipe,unrolled-confirm-mini-svd-v2,v2,107,mini-svd-v2,$(UNROLLED_ARGS))
study-unrolled-wide-mini-svd: $(STAMP)
	$(call study_recipe,unrolled-wide-mini-svd,v1,109,mini-svd,$(subst 4$(comma)8$(comma)14,6$(comma)12$(comma)20,$(UNROLLED_ARGS)))

# Inside mini-cogvideox (the README's lens strip and attention curve): fresh portraits, the lens on
# the first at two timesteps, the attention share on all four; the files ship to
# artifacts/reports/inside-mini-cogvideox, whose README `make reports` writes from them.
INSIDE_FILES := lens.json lens-t700.png
inside-mini-cogvideox: $(STAMP)
	$(BIN)/anti-i2v world render --world v1 --out out/inside/world --count 4 --seed 71 --photos out/inside/photos
	$(BIN)/anti-i2v lens mini-cogvideox out/inside/photos/$$(ls out/inside/photos | head -1) \
		--timesteps 300,700 --out out/inside/lens
	$(BIN)/anti-i2v attention mini-cogvideox out/inside/photos --out out/inside/attention
	rm -rf artifacts/reports/inside-mini-cogvideox.tmp && mkdir -p artifacts/reports/inside-mini-cogvideox.tmp
	cd out/inside/lens && cp $(INSIDE_FILES) ../../../artifacts/reports/inside-mini-cogvideox.tmp/
	cp out/inside/attention/attention.json out/inside/attention/attention.png \
		artifacts/reports/inside-mini-cogvideox.tmp/
	rm -rf artifacts/reports/inside-mini-cogvideox
	mv artifacts/reports/inside-mini-cogvideox.tmp artifacts/reports/inside-mini-cogvideox
	$(BIN)/python -m anti_i2v.reports

# Does LTX-2's own input re-compression (one H.264 frame at CRF 33: `h264crf33`) wash a cloak
# out? Registered before it first ran (session 21). On mini-cogvideox, the mini world's model
# where cloaks act most, 2 fresh selection portraits (seed 131) choose Anti-I2V's layers, and 8
# fresh evaluation portraits (seed 137) are cloaked by Anti-I2V and by RGB PGD at the default
# budget (8/255), then animated undistorted, through h264crf33 and through jpeg50 (the
# strongest JPEG reported before): one generation seed, 25 steps, both mini judges. The outcome:
# each method's ISM drop after each distortion, with its 95% bootstrap interval over photos,
# and the share of the undistorted drop that survives; no test beyond the intervals. Caveat:
# the world's 64x64 portraits give the codec far fewer macroblocks than a 512x768 photo does.
H264 := out/h264
report-h264-mini-cogvideox: $(STAMP)
	$(BIN)/anti-i2v world render --world v1 --out $(H264)/select-world --count 2 --seed 131 \
		--photos $(H264)/select
	$(BIN)/anti-i2v world render --world v1 --out $(H264)/world --count 8 --seed 137 --photos $(H264)/photos
	$(BIN)/anti-i2v adapt mini-cogvideox $(H264)/select --masks $(H264)/select-world --out $(H264)/adapt
	$(BIN)/anti-i2v protect mini-cogvideox $(H264)/photos --profile $(H264)/adapt/profile.json \
		--out $(H264)/anti-i2v
	$(BIN)/anti-i2v protect mini-cogvideox $(H264)/photos --method rgb-pgd --out $(H264)/rgb-pgd
	$(BIN)/anti-i2v evaluate mini-cogvideox --clean $(H264)/photos --protected $(H264)/anti-i2v \
		--protected $(H264)/rgb-pgd --distortions h264crf33,jpeg50 --out $(H264)/report
	rm -rf artifacts/reports/h264-mini-cogvideox.tmp
	cp -r $(H264)/report artifacts/reports/h264-mini-cogvideox.tmp
	rm -rf artifacts/reports/h264-mini-cogvideox.tmp/.videos  # evaluate's cache of the videos
	rm -rf artifacts/reports/h264-mini-cogvideox
	mv artifacts/reports/h264-mini-cogvideox.tmp artifacts/reports/h264-mini-cogvideox
	$(BIN)/python -m anti_i2v.reports

# ruff, then the import contracts (pyproject.toml): each layer imports only those below it.
lint: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/python tools/check_layers.py

# The documentation site: the command reference generated from the CLI, then mkdocs --strict
# (a broken link or a page missing from the nav fails it). Opens from build/site/index.html.
docs: $(STAMP)
	$(BIN)/typer anti_i2v.cli utils docs --name anti-i2v --title "Commands" --output docs/commands.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Every report folder's README.md and the README's results table, from the result files.
reports: $(STAMP)
	$(BIN)/python -m anti_i2v.reports

format: $(STAMP)
	$(BIN)/ruff format $(SRC)

# On the first GPU the project gets: gpu-marked tests, the probe's overhead on a midsize model and
# one protect step of full-size random-weight CogVideoX-5B-I2V and Wan2.2-TI2V-5B against plan,
# within 8 minutes; writes out/gpu-check/summary.{json,md} (format: bench/gpu_check.py's docstring).
# The CPU suite dry-runs the same script at toy size (tests/test_gpu_check.py).
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py --device cuda --out out/gpu-check --time-limit 480

bench: $(STAMP)
	$(BIN)/python bench/probe_overhead.py
	$(BIN)/python bench/protect_step.py

clean-venv:
	rm -rf $(VENV)
