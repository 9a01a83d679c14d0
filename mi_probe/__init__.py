"""mi-probe: mutual information between transformer hidden states and the next token.

Quick start::

    import mi_probe
    r = mi_probe.estimate(x, y, estimator="renyi")     # x: (n, d), y: (n, d_y) or (n,)
    print(r.value, r.unit)
    mi_probe.estimators()                              # what is registered
"""

from .api import EstimatorInfo, estimate, estimate_layers, estimators, get_estimator
from .errors import (
    CheckpointError,
    FileFormatError,
    InputError,
    MIProbeError,
    ParameterError,
    PluginError,
    ResourceError,
    UnknownEstimatorError,
)
from .estimator import Estimate, Estimator
from .hookspecs import hookimpl
from .params import Param
from .probe import ProbeConfig, probe  # the function shadows the module name on purpose
from .probe_results import ProbeResults
from .result import MIResult

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Estimate",
    "Estimator",
    "EstimatorInfo",
    "FileFormatError",
    "InputError",
    "MIProbeError",
    "MIResult",
    "Param",
    "ParameterError",
    "PluginError",
    "ProbeConfig",
    "ProbeResults",
    "ResourceError",
    "UnknownEstimatorError",
    "__version__",
    "estimate",
    "estimate_layers",
    "estimators",
    "get_estimator",
    "hookimpl",
    "probe",
]
