"""sysq: quantize transformer language models around their systematic outliers.

    import sysq
    model, tok = sysq.load("smollm2-135m")
    calib = sysq.calibration(tok, n=32, seqlen=512, seed=0)
"""
from .arch import get_adapter
from .data import calibration, windows
from .detect import OutlierReport, Thresholds, detect  # noqa: F401  (sysq.detect is the function)
from .errors import SysqError
from .explain import ExplainReport, explain  # noqa: F401  (sysq.explain is the function)
from .models import DEFAULT_MODEL, load
from .quant import Recipe, get_recipe, quantize, save
from .mitigate.api import mitigate, plan
from .mitigate.plan import MitigationPlan

__all__ = ["load", "DEFAULT_MODEL", "windows", "calibration", "get_adapter", "SysqError",
           "quantize", "save", "Recipe", "get_recipe", "plan", "mitigate", "MitigationPlan",
           "detect", "OutlierReport", "Thresholds", "explain", "ExplainReport"]
