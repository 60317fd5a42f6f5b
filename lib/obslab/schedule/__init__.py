"""Scheduled runs: notebooks as Airflow tasks (`tasks`) and the lab's own Airflow (`server`)."""
