"""Alignment-check plugins (learned or scene-level checks) that run after the rule checks."""

from safety.alignment.base import AlignmentCheck
from safety.alignment.loader import ENTRY_POINT_GROUP, import_check, load_alignment_checks

__all__ = ["ENTRY_POINT_GROUP", "AlignmentCheck", "import_check", "load_alignment_checks"]
