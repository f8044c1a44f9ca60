"""Seeded workloads: the request table, arrivals, lengths, shared prefixes, traces, the `[workload]` spec."""

from cloudmatrix.sim.workload.arrivals import gamma_arrivals, poisson_arrivals
from cloudmatrix.sim.workload.lengths import LengthSpec
from cloudmatrix.sim.workload.prefixes import PrefixSpec, group_popularity
from cloudmatrix.sim.workload.requests import RequestTable
from cloudmatrix.sim.workload.spec import WorkloadSpec, describe_errors, generate_workload
from cloudmatrix.sim.workload.traces import read_trace, write_trace

__all__ = [
    "LengthSpec",
    "PrefixSpec",
    "RequestTable",
    "WorkloadSpec",
    "describe_errors",
    "gamma_arrivals",
    "generate_workload",
    "group_popularity",
    "poisson_arrivals",
    "read_trace",
    "write_trace",
]
