# obslab: `make demo` (the pipeline) and `make test`; both run the idempotent `make setup` first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup test test-fast fuzz demo stop status airflow broker-start broker-stop lab clean-data help
.PHONY: otelcol demo-otel spark-start spark-stop cluster cluster-stop
.PHONY: container-tools image up down  # the container lab (compose.yaml; see docs/containers.md)

help:
	@echo "make setup       create .venv from requirements.lock (builds llama-cpp-python once), register the kernel, fetch Kafka/Spark jars, assemble the model"
	@echo "make test        every test, against a real Kafka broker, Spark and DuckDB (what CI runs)"
	@echo "make test-fast   the tests that need no broker, Spark or notebook run (under a minute)"
	@echo "make fuzz        the property-based tests of hostile input (settings, scenarios, payloads, CSVs) with 20x the examples"
	@echo "make demo        broker, generator, stream, detector, narrator and dashboard (http://127.0.0.1:8501); Ctrl-C stops"
	@echo "make stop        stop a demo started elsewhere, and the lab's Airflow; make status lists the demo's processes and the container lab's health"
	@echo "make airflow     Airflow 3 with the project's DAGs on http://127.0.0.1:8080 (prints how to log in)"
	@echo "make lab         JupyterLab on 127.0.0.1:8888"
	@echo "make book        the notebooks as a static site to read ahead (offline ones executed) in data/book/html"
	@echo "make exercises  the light set-up for the workshop: the exercises and notebooks 03-06 (no Java, jars, model or Airflow)"
	@echo "make check-exercise N   check workshop exercise N (1-4; also N=2; \`all\`: one line per exercise); see docs/workshop.md"
	@echo "make broker-start / broker-stop"
	@echo "make cluster / cluster-stop   a local cluster (Spark master + 2 workers, 3 Kafka brokers) the lab uses by settings only"
	@echo "make spark-start / spark-stop   the lab's one Spark (Spark Connect, 127.0.0.1:15002): steps then start no JVM of their own"
	@echo "make demo-otel   the demo on real spans: Collector, broker, the shop under Locust's load, stream, detector, narrator, dashboard"
	@echo "make otelcol     build the lab's OpenTelemetry Collector from Go modules into .cache/otelcol (once per manifest; needs Go)"
	@echo "make up / down   the whole lab in containers with Podman (make image builds; docs/containers.md)"

setup:
	$(PYTHON) lib/obslab/bootstrap.py

# `make test` is two pytest runs at once: the tests that need no broker or Spark (mostly CPU: detectors,
# the container lab) beside the ones that do (mostly waiting: JVMs, triggers, brokers), each with its own
# lab. The first's output is kept in data/logs/test-local.log and printed after the second's.
TEST_LOCAL_LOG := data/logs/test-local.log

test: setup otelcol  # both idempotent: about a second each when already done
	@mkdir -p $(dir $(TEST_LOCAL_LOG))
	@$(BIN)/python -m pytest tests -m "not kafka and not spark" -p no:cacheprovider --durations=20 \
	    > $(TEST_LOCAL_LOG) 2>&1 & local=$$!; \
	$(BIN)/python -m pytest -m "kafka or spark" --durations=30; lab=$$?; \
	wait $$local; local_rc=$$?; \
	echo "--- the tests without broker or Spark ($(TEST_LOCAL_LOG)):"; cat $(TEST_LOCAL_LOG); \
	echo "make test: with broker or Spark exit $$lab, without exit $$local_rc"; \
	[ $$lab -eq 0 ] && [ $$local_rc -eq 0 ]

demo: setup  # the whole pipeline on this machine; Ctrl-C stops it
	$(BIN)/obslab demo

stop:
	$(BIN)/obslab demo-stop
	$(BIN)/obslab airflow stop
	$(BIN)/obslab spark stop

airflow:  # scheduled notebooks: Airflow on 127.0.0.1, AIRFLOW_HOME in data/airflow; its tasks use the lab's Spark; `make stop` stops both
	$(BIN)/obslab spark start
	$(BIN)/obslab airflow start

spark-start:  # the lab's one Spark (Spark Connect on 127.0.0.1): the stream, notebooks and DAG tasks then start no JVM
	$(BIN)/obslab spark start

spark-stop:
	$(BIN)/obslab spark stop

cluster:  # a Spark master, two workers and three Kafka brokers on 127.0.0.1; prints the settings that use them
	$(BIN)/obslab cluster start

cluster-stop:
	$(BIN)/obslab cluster stop

status:  # the demo's processes, then the container lab's health checked now (podman ps alone shows "(starting)" without systemd)
	@if [ -x $(BIN)/obslab ]; then $(BIN)/obslab status; fi
	@containers/status.sh $(COMPOSE_PROJECT)

fuzz:  # the property-based tests of hostile input, with 20x the examples `make test` gives them
	FUZZ_SCALE=20 $(BIN)/python -m pytest tests -m fuzz -p no:cacheprovider

test-fast:
	$(BIN)/python -m pytest tests -m "not kafka and not spark and not slow" -n auto  # one worker per core

broker-start:
	$(BIN)/obslab broker start

broker-stop:
	$(BIN)/obslab broker stop

demo-otel: setup otelcol  # obslab demo --source spans; switch a fault with `obslab shop fault ...` (it says how)
	$(BIN)/obslab demo --source spans

otelcol: setup  # ocb builds it from lib/obslab/otel/builder.yaml; Go's caches stay in .cache/go
	$(BIN)/obslab otelcol build

LAB_PORT ?= 8888
lab:  # the project: notebooks/ and the kept runs in data/runs/; root (containers, these machines) needs --allow-root
	$(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) --no-browser --notebook-dir . \
	  --ServerApp.port_retries=0 $$([ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: book
book: setup  # lib/obslab/book.py: offline notebooks executed, the lab's shown unexecuted; docs/book/ has its config
	$(BIN)/obslab book build

# ---- the workshop's exercises (docs/workshop.md): `make check-exercise 2` or `make check-exercise N=2`
# `make exercises` is the light set-up (requirements-exercises.lock, a subset of requirements.lock with
# the same versions): enough for the exercises and the notebooks that need no broker. `make setup`
# afterwards completes it; after `make setup` it changes nothing.
.PHONY: exercises exercises-lock lock check-exercise
exercises:
	$(PYTHON) lib/obslab/bootstrap.py --light

# Both locks are universal (Linux, macOS on Intel and Apple silicon, Windows markers), so a laptop that is not
# Linux resolves the same pins. argon2-cffi-bindings stays at 25.1.0: the newest with an Intel macOS wheel.
lock:  # after a change to pyproject.toml's dependencies; then make exercises-lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  -P argon2-cffi-bindings==25.1.0 -o requirements.lock

exercises-lock:  # after a change to requirements-exercises.in or requirements.lock
	$(BIN)/uv pip compile requirements-exercises.in -c requirements.lock --universal --python-version 3.11 \
	  -o requirements-exercises.lock

EXERCISE = $(or $(N),$(word 2,$(MAKECMDGOALS)))
check-exercise: exercises
	@$(BIN)/python exercises/check.py $(EXERCISE)
ifeq (check-exercise,$(firstword $(MAKECMDGOALS)))
ifneq (,$(word 2,$(MAKECMDGOALS)))
$(word 2,$(MAKECMDGOALS)):  # the exercise's number, given as a second goal: nothing to make
	@:
endif
endif

clean-data:
	$(BIN)/obslab broker stop
	rm -rf data/kafka data/checkpoints data/runs data/logs data/observability.duckdb*

readme-settings:  # rewrite the settings table in docs/settings.md from obslab.settings (the name is kept for habit)
	$(BIN)/python -c "import re,subprocess,pathlib; p=pathlib.Path('docs/settings.md'); t=subprocess.run(['$(BIN)/obslab','settings','--markdown'],capture_output=True,text=True,check=True).stdout; s=p.read_text(); s=re.sub(r'(<!-- settings:start[^>]*-->\n).*?(<!-- settings:end -->)', lambda m: m.group(1)+t+m.group(2), s, flags=re.S); p.write_text(s)"

# ---- the container lab (compose.yaml, Containerfile, containers/): Podman on Debian, no image registry needed
export CONTAINERS_CONF := $(CURDIR)/containers/containers.conf
CONTAINER_TOOLS := podman podman-compose runc mmdebstrap netavark aardvark-dns iptables uidmap
COMPOSE_PROJECT ?= obslab
COMPOSE := podman-compose -p $(COMPOSE_PROJECT)
# Named, because Debian's podman-compose (1.0.3) ignores `profiles:` and would start ollama too.
LAB_SERVICES := broker generator stream detector narrator dashboard airflow lab

container-tools:  # Podman, podman-compose, runc, mmdebstrap from apt when missing (idempotent; fast when present)
	@missing=$$(for p in $(CONTAINER_TOOLS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing" $$missing; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

image: container-tools  # the Debian base (mmdebstrap, cached in .cache/containers) and the project image
	containers/build-image.sh

up: image  # the whole lab in containers, on 127.0.0.1 only
	$(COMPOSE) up -d $(LAB_SERVICES)
	@echo "dashboard http://127.0.0.1:$${DASHBOARD_PORT:-8501}  airflow http://127.0.0.1:$${AIRFLOW_PORT:-8080}  lab: $(COMPOSE) logs lab (URL with token)  stop: make down"
	@echo "health: make status (runs each health check now; without systemd podman ps shows (starting) until then)"

down:  # stop (30 s grace: the broker and the store close cleanly), remove containers and network; the data volume stays
	podman ps -q --filter label=io.podman.compose.project=$(COMPOSE_PROJECT) | xargs -r podman stop -t 30 >/dev/null
	$(COMPOSE) down
	podman network exists $(COMPOSE_PROJECT)_default && podman network rm $(COMPOSE_PROJECT)_default || true
