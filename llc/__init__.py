"""llc: the local learning coefficient of singular learning theory, in JAX."""

from llc import ground_truth, hessian, masks, plot, samplers, sgld
from llc.calibration import calibrate
from llc.diagnose import Diagnosis, diagnose
from llc.estimator import estimate_llc
from llc.flags import Evidence
from llc.hessian import HessianSpectrum, hessian_spectrum
from llc.models import from_equinox, from_linen, from_nnx, predict_from_nnx
from llc.observables import bif, loss_kernel, susceptibilities
from llc.refine import RefineResult, refine_to_minimum
from llc.refined import estimate_refined_llc
from llc.relabel import Relabelling, relabel
from llc.report import llc_from_losses
from llc.result import CalibrationResult, LLCResult, load_result
from llc.settings import default_nbeta
from llc.temperature import MultiTemperatureResult, estimate_llc_multitemp
from llc.trajectory import TrajectoryResult, estimate_llc_trajectory

__all__ = [
    "CalibrationResult",
    "Diagnosis",
    "Evidence",
    "HessianSpectrum",
    "LLCResult",
    "MultiTemperatureResult",
    "RefineResult",
    "Relabelling",
    "TrajectoryResult",
    "calibrate",
    "default_nbeta",
    "diagnose",
    "estimate_llc",
    "estimate_llc_multitemp",
    "estimate_llc_trajectory",
    "estimate_refined_llc",
    "from_equinox",
    "from_linen",
    "from_nnx",
    "ground_truth",
    "hessian",
    "hessian_spectrum",
    "bif",
    "llc_from_losses",
    "load_result",
    "loss_kernel",
    "masks",
    "plot",
    "predict_from_nnx",
    "refine_to_minimum",
    "relabel",
    "samplers",
    "susceptibilities",
    "sgld",
]

__version__ = "0.1.0"
