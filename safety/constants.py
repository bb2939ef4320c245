"""Library-wide constants: versions, the advisory text and numeric tolerances."""

from __future__ import annotations

SAFETY_VERSION = "rules-1.0.0"
ADVISORY = "Not a safety-rated function; the robot controller's limits remain authoritative."

# Comparisons allow a little float slack so that a value clamped exactly onto a bound (and re-derived through
# cumulative sums) is not flagged again; this is what makes clamping idempotent.
ABS_TOL = 1e-9
REL_TOL = 1e-9

MODES = ("reject", "clamp", "monitor")
# Names used elsewhere (robot-limits.md section 7 says "modify") map onto ours.
MODE_ALIASES = {"modify": "clamp"}

# Hard caps that keep one request's work bounded.
MAX_OBSTACLES = 64
MAX_CHUNK_STEPS = 1024
