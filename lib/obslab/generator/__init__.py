"""Telemetry generator: traffic profiles, faults, scenarios, clocks and publishing."""

from obslab.generator.clock import SimulatedClock, WallClock
from obslab.generator.events import EventStream
from obslab.generator.scenario import Scenario, available_scenarios, load_scenario

__all__ = ["EventStream", "Scenario", "SimulatedClock", "WallClock", "available_scenarios", "load_scenario"]
