"""Expert parallelism across processes: placement, the EP experts backend, lockstep steps, local rank launcher."""

from cloudmatrix.engine.parallel.expert_parallel import (
    CommStats,
    ExpertParallelExperts,
    dispatch_row_bytes,
    use_expert_parallel,
)
from cloudmatrix.engine.parallel.launch import run_ranks
from cloudmatrix.engine.parallel.lockstep import MAIN, MAIN_MICROBATCHED, StepPlan, StepSync, mtp
from cloudmatrix.engine.parallel.placement import SlotMap

__all__ = [
    "CommStats",
    "ExpertParallelExperts",
    "dispatch_row_bytes",
    "MAIN",
    "MAIN_MICROBATCHED",
    "mtp",
    "run_ranks",
    "SlotMap",
    "StepPlan",
    "StepSync",
    "use_expert_parallel",
]
