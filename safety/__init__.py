"""Safety stage of the VLA inference service: a pure library (numpy; torch only in the example classifier).

Public API:
    evaluate(actions, *, robot_config, robot_state, mode, action_stats, options, alignment_checks) -> SafetyResult
    validate_robot_config(robot_config, *, default_type=None) -> RobotConfig   (raises SafetyConfigError)
    load_profile(name) / list_profiles()
    load_alignment_checks(enabled, path, threshold, import_paths) -> list[AlignmentCheck]
"""

from safety.alignment import AlignmentCheck, load_alignment_checks
from safety.constants import ADVISORY, SAFETY_VERSION
from safety.errors import AlignmentCheckLoadError, SafetyConfigError, SafetyError, UnknownProfileError
from safety.profiles import list_profiles, load_profile
from safety.request import validate_robot_config
from safety.result import SafetyResult
from safety.shield import evaluate

__all__ = [
    "ADVISORY", "SAFETY_VERSION", "AlignmentCheck", "AlignmentCheckLoadError", "SafetyConfigError", "SafetyError",
    "SafetyResult", "UnknownProfileError", "evaluate", "list_profiles", "load_alignment_checks", "load_profile",
    "validate_robot_config",
]
