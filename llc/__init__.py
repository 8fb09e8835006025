"""llc: the local learning coefficient of singular learning theory, in JAX."""

from llc import ground_truth, hessian, sgld
from llc.diagnose import Diagnosis, diagnose
from llc.estimator import LLCResult, default_nbeta, estimate_llc, llc_from_losses
from llc.hessian import HessianSpectrum, hessian_spectrum
from llc.refine import RefineResult, refine_to_minimum

__all__ = [
    "Diagnosis",
    "HessianSpectrum",
    "LLCResult",
    "RefineResult",
    "default_nbeta",
    "diagnose",
    "estimate_llc",
    "ground_truth",
    "hessian",
    "hessian_spectrum",
    "llc_from_losses",
    "refine_to_minimum",
    "sgld",
]

__version__ = "0.1.0"
