"""Expert parallelism across processes: placement, the EP experts backend, local rank launcher."""

from cloudmatrix.engine.parallel.expert_parallel import (
    CommStats,
    ExpertParallelExperts,
    dispatch_row_bytes,
    use_expert_parallel,
)
from cloudmatrix.engine.parallel.launch import run_ranks
from cloudmatrix.engine.parallel.placement import SlotMap

__all__ = [
    "CommStats",
    "ExpertParallelExperts",
    "dispatch_row_bytes",
    "run_ranks",
    "SlotMap",
    "use_expert_parallel",
]
