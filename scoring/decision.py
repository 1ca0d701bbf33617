"""The decision ladder: a calibrated composite score -> the action the gateway takes.

A pure function of the score and a thresholds object, so a per-path override is nothing more than
another :class:`config.model.ThresholdSettings`.
"""

from __future__ import annotations

import math
from enum import Enum

from config.model import ThresholdSettings

__all__ = ["Decision", "decide", "most_severe"]


class Decision(str, Enum):  # noqa: UP042 - str mixin: Decision("BLOCK") == "BLOCK" in JSON/SQL
    """What happens to a request.

    ``LEARNING`` (no model yet, forwarded) and ``ERROR`` (scoring failed) are recorded states;
    the ladder never produces them and they enforce nothing by themselves.
    """

    ALLOW = "ALLOW"
    MONITOR = "MONITOR"
    CHALLENGE = "CHALLENGE"
    REQUIRE_2FA = "REQUIRE_2FA"
    BLOCK = "BLOCK"
    LEARNING = "LEARNING"
    ERROR = "ERROR"

    @property
    def severity(self) -> int:
        """0 (nothing enforced) .. 4 (BLOCK); recorded states rank with ALLOW."""
        return _SEVERITY[self]

    @property
    def is_anomaly(self) -> bool:
        """True from MONITOR upwards (the spec's ``isAnomaly``)."""
        return self.severity >= 1


_SEVERITY = {
    Decision.ALLOW: 0,
    Decision.LEARNING: 0,
    Decision.ERROR: 0,
    Decision.MONITOR: 1,
    Decision.CHALLENGE: 2,
    Decision.REQUIRE_2FA: 3,
    Decision.BLOCK: 4,
}


def decide(composite: float, thresholds: ThresholdSettings, *, strict: bool = False) -> Decision:
    """Map a composite score onto the ladder (each threshold is inclusive).

    Parameters
    ----------
    composite
        Calibrated composite score in [0, 1].
    thresholds
        The ladder; a per-rule override is just another instance.
    strict
        High-security paths: every score at or above ``strict_block`` is BLOCK.

    Raises
    ------
    ValueError
        If the score is NaN: a score that means nothing must never quietly become ALLOW.
    """
    if math.isnan(composite):
        raise ValueError("composite score is NaN")
    if composite >= thresholds.block or (strict and composite >= thresholds.strict_block):
        return Decision.BLOCK
    if composite >= thresholds.require_2fa:
        return Decision.REQUIRE_2FA
    if composite >= thresholds.challenge:
        return Decision.CHALLENGE
    if composite >= thresholds.monitor:
        return Decision.MONITOR
    return Decision.ALLOW


def most_severe(*decisions: Decision) -> Decision:
    """The most severe of several decisions (the first one wins a tie)."""
    return max(decisions, key=lambda d: d.severity)
