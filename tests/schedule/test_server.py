"""The lab's Airflow configuration, built from settings (no Airflow started)."""

import configparser
import os
import subprocess
import sys

import pytest

from obslab.schedule import server
from obslab.settings import load_settings


def test_the_config_keeps_airflow_on_loopback_at_the_lab_s_port_and_in_its_data_dir(tmp_path):
    settings = load_settings(data_dir=tmp_path, airflow_port=18080)
    cfg = server.config(settings)
    assert server.url(settings) == "http://127.0.0.1:18080"
    assert (cfg["api"]["host"], cfg["api"]["port"], cfg["api"]["base_url"]) == ("127.0.0.1", "18080",
                                                                              "http://127.0.0.1:18080")
    assert cfg["core"]["execution_api_server_url"] == "http://127.0.0.1:18080/execution/"
    assert cfg["core"]["load_examples"] == "False" and cfg["core"]["dags_folder"].endswith("/dags")
    assert cfg["logging"]["base_log_folder"] == str(tmp_path / "airflow" / "logs")


def test_secrets_are_made_once_and_kept_when_the_config_is_rewritten(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    first = server.config(settings)
    again = server.config(settings.model_copy(update={"airflow_port": 18081}), existing=first)
    fresh = server.config(settings)
    for section, key in (("core", "fernet_key"), ("api", "secret_key"), ("api_auth", "jwt_secret")):
        assert first[section][key] and again[section][key] == first[section][key]
        assert fresh[section][key] != first[section][key]  # without the old file: new secrets
    assert again["api"]["port"] == "18081"  # everything else follows the settings


def test_airflow_commands_see_the_lab_s_settings_and_its_own_home(tmp_path):
    settings = load_settings(data_dir=tmp_path, window_seconds=30)
    env = server.environment(settings)
    assert env["WINDOW_SECONDS"] == "30" and env["DATA_DIR"] == str(tmp_path)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW_CONFIG"] == str(tmp_path / "airflow" / "airflow.cfg")
    assert isinstance(server.config(settings), configparser.ConfigParser)


def test_the_scheduler_and_dag_processor_start_with_what_their_forked_tasks_import(tmp_path):
    commands = server.commands(load_settings(data_dir=tmp_path))
    assert commands["airflow-api"][-1] == "api-server"
    for name, airflow_args in (("airflow-scheduler", ["scheduler", "--skip-serve-logs"]),
                               ("airflow-dag-processor", ["dag-processor"])):
        assert commands[name] == [sys.executable, "-m", "obslab.schedule.server", *airflow_args]
    # the tasks' kernels are forked by a zygote listening in this lab's data folder
    assert commands["airflow-kernels"][-2:] == ["obslab.schedule.kernels", str(tmp_path / "airflow" / "kernels.sock")]
    assert set(server.PROCESSES) == set(commands)  # started together, and stopped together
    # what a task process imports to parse the pipeline DAG and run a notebook
    assert {"papermill", "airflow.providers.papermill.operators.papermill", "obslab.lab"} <= set(server.PRELOAD)
    assert {"duckdb", "obslab.store"} <= set(server.PRELOAD) - set(server.PARSE_PRELOAD)  # a parse writes no row


@pytest.mark.slow  # starts Airflow's CLI in a process of its own
def test_the_preloaded_entry_runs_the_airflow_command_it_is_given(tmp_path):
    env = server.environment(load_settings(data_dir=tmp_path))
    done = subprocess.run([sys.executable, "-m", "obslab.schedule.server", "version"], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=server.ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1][:1].isdigit()  # Airflow's version, e.g. 3.3.2


@pytest.mark.slow  # starts Airflow's CLI in a process of its own
def test_an_unknown_airflow_command_fails_through_the_preloaded_entry(tmp_path):
    env = server.environment(load_settings(data_dir=tmp_path))
    done = subprocess.run([sys.executable, "-m", "obslab.schedule.server", "no-such-command"], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=server.ROOT, timeout=300)
    assert done.returncode != 0 and "no-such-command" in done.stderr
