"""The safety profile of a robot named by a dataset (LeRobot `robot_type`, robosuite's robot in robomimic's
env metadata), so a replay that names no robot is still judged against the robot that was recorded.

Names are matched case-insensitively after the profile ids themselves, then through the aliases below (the
spellings LeRobot, Open X-Embodiment and robosuite use for the robots we have profiles of). A name that maps to
nothing returns None: the caller falls back to its default robot and says so.
"""
from __future__ import annotations

import re

from safety.errors import SafetyConfigError
from safety.profiles import load_profile

ALIASES = {
    "widowx": "widowx_250", "widowx250": "widowx_250", "wx250s": "widowx_250", "widowx_250s": "widowx_250",
    "bridge": "widowx_250", "panda": "franka_panda", "franka": "franka_panda", "frankapanda": "franka_panda",
    "franka_emika_panda": "franka_panda", "fr3": "franka_fr3", "ur5": "ur5e", "ur5e": "ur5e",
    "google": "google_robot", "rt1": "google_robot", "everyday_robot": "google_robot", "fractal": "google_robot",
}


def profile_for(robot_type: str | None) -> str | None:
    """The profile id for a dataset's robot name, or None when it names none we know."""
    if not isinstance(robot_type, str) or not robot_type.strip():
        return None
    name = re.sub(r"[\s\-]+", "_", robot_type.strip().lower())
    for candidate in (name, ALIASES.get(name), ALIASES.get(name.replace("_", ""))):
        if candidate and _exists(candidate):
            return candidate
    return None


def _exists(profile_id: str) -> bool:
    try:
        load_profile(profile_id)
    except SafetyConfigError:  # unknown, or a broken file a deployment added: not a profile to judge by
        return False
    return True
