"""The entry point: a scenario in, a `SimResult` out (`run_scenario`), in the scenario's serving mode."""

from __future__ import annotations

from collections.abc import Callable

from cloudmatrix.sim.colocated import ColocatedSimulation
from cloudmatrix.sim.disaggregated import DisaggregatedSimulation
from cloudmatrix.sim.results import SimResult
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.serving_sim import ServingSimulation

__all__ = ["Simulation", "SimResult", "build_simulation", "run_scenario", "simulate"]


def build_simulation(scenario: Scenario) -> ServingSimulation:
    """Check the scenario and set up its pools (raises CloudMatrixError before anything runs)."""
    if scenario.mode == "colocated":
        return ColocatedSimulation(scenario)
    return DisaggregatedSimulation(scenario)


Simulation = build_simulation  # the name existing callers use: Simulation(scenario).run()


def run_scenario(
    scenario: Scenario, progress: Callable[[float], None] | None = None, *, drain: bool = True
) -> SimResult:
    """Simulate `scenario` to its duration (or until its workload ends), then, with `drain`, until the
    requests that arrived in the measurement window have finished (see `ServingSimulation.run`)."""
    return build_simulation(scenario).run(progress, drain=drain)


simulate = run_scenario
