"""llc: the local learning coefficient of singular learning theory, in JAX."""

from llc import ground_truth, hessian, sgld
from llc.estimator import LLCResult, default_nbeta, estimate_llc, llc_from_losses

__all__ = [
    "LLCResult",
    "default_nbeta",
    "estimate_llc",
    "ground_truth",
    "hessian",
    "llc_from_losses",
    "sgld",
]

__version__ = "0.1.0"
