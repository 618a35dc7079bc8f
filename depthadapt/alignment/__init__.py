"""Scale/shift alignment of a prediction to a target: ``fit_scale_shift`` (least squares or RANSAC, on all valid
points or the support points) and the closed-form ``lstsq_scale_shift``.

Modules, leaves first: ``cpu`` (compiled CPU kernels), ``support`` (valid points and the support selection),
``solver`` (weighted least squares), ``ransac`` (sklearn's reference, batched torch), ``fit`` (the dispatcher on
top); ``sparse`` aligns a relative map to a few known metric depths.
"""

from depthadapt.alignment.fit import ScaleShiftFit, ScaleShiftFitOptions, fit_scale_shift
from depthadapt.alignment.solver import check_choice, lstsq_scale_shift

__all__ = ["ScaleShiftFit", "ScaleShiftFitOptions", "check_choice", "fit_scale_shift", "lstsq_scale_shift"]
