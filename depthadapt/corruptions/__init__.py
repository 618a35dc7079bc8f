"""Image corruptions (KITTI-C / RoboDepth: 18 types x 5 severities), their random fields, and the evaluation
conditions every corrupted evaluation runs through."""

from depthadapt.corruptions.apply import CORRUPTIONS, NYU_CORRUPTIONS, SEVERITIES, check_corruption, corrupt
from depthadapt.corruptions.conditions import EvaluationConditions

__all__ = ["CORRUPTIONS", "NYU_CORRUPTIONS", "SEVERITIES", "EvaluationConditions", "check_corruption", "corrupt"]
