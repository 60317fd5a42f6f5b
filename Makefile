# obslab: `make demo` (the pipeline) and `make test`; both run the idempotent `make setup` first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup test test-fast demo stop status airflow broker-start broker-stop lab clean-data help

help:
	@echo "make setup       create .venv from requirements.lock (builds llama-cpp-python once), register the kernel, fetch Kafka/Spark jars, assemble the model"
	@echo "make test        every test, against a real Kafka broker, Spark and DuckDB (what CI runs)"
	@echo "make test-fast   the tests that need no broker, Spark or notebook run (under a minute)"
	@echo "make demo        broker, generator, stream, detector, narrator and dashboard (http://127.0.0.1:8501); Ctrl-C stops"
	@echo "make stop        stop a demo started elsewhere, and the lab's Airflow; make status lists the demo's processes"
	@echo "make airflow     Airflow 3 with the project's DAGs on http://127.0.0.1:8080 (prints how to log in)"
	@echo "make lab         JupyterLab on 127.0.0.1:8888"
	@echo "make broker-start / broker-stop"

setup:
	$(PYTHON) lib/obslab/bootstrap.py

test: setup  # setup is idempotent: about a second when it is already done
	$(BIN)/python -m pytest

demo: setup  # the whole pipeline on this machine; Ctrl-C stops it
	$(BIN)/obslab demo

stop:
	$(BIN)/obslab demo-stop
	$(BIN)/obslab airflow stop

airflow:  # scheduled notebooks: Airflow on 127.0.0.1, AIRFLOW_HOME in data/airflow; `make stop` stops it
	$(BIN)/obslab airflow start

status:
	$(BIN)/obslab status

test-fast:
	$(BIN)/python -m pytest tests -m "not kafka and not spark and not slow"

broker-start:
	$(BIN)/obslab broker start

broker-stop:
	$(BIN)/obslab broker stop

LAB_PORT ?= 8888
lab:  # the project: notebooks/ and the kept runs in data/runs/; root (containers, these machines) needs --allow-root
	$(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) --no-browser --notebook-dir . \
	  --ServerApp.port_retries=0 $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean-data:
	$(BIN)/obslab broker stop
	rm -rf data/kafka data/checkpoints data/runs data/logs data/observability.duckdb*

readme-settings:  # rewrite the README's settings table from obslab.settings
	$(BIN)/python -c "import re,subprocess,pathlib; p=pathlib.Path('README.md'); t=subprocess.run(['$(BIN)/obslab','settings','--markdown'],capture_output=True,text=True,check=True).stdout; s=p.read_text(); s=re.sub(r'(<!-- settings:start[^>]*-->\n).*?(<!-- settings:end -->)', lambda m: m.group(1)+t+m.group(2), s, flags=re.S); p.write_text(s)"
