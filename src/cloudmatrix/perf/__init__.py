"""Cost model: what one prefill or decode step costs on a die, a fabric and a deployment."""

from cloudmatrix.perf.breakdown import OpRow, StepBreakdown
from cloudmatrix.perf.decode import decode_step
from cloudmatrix.perf.deployment import Deployment, Precisions, build_deployment
from cloudmatrix.perf.prefill import prefill_step

__all__ = ["Deployment", "OpRow", "Precisions", "StepBreakdown", "build_deployment", "decode_step", "prefill_step"]
