"""The lab's Airflow configuration, built from settings (no Airflow started)."""

import configparser

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
