"""Constants and the states a run can be in, defined once.

The enums are ``StrEnum`` so that the values stored in result dicts are the
seed's plain strings (``result["status"] == "skipped"`` keeps working, and the
dict stays JSON).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

#: Lock TTL in seconds (the seed's ``REDIS_LOCK_TIMEOUT``).
REDIS_LOCK_TIMEOUT: Final = 300
#: Success-marker TTL in seconds (the seed's ``REDIS_SUCCESS_TTL``).
REDIS_SUCCESS_TTL: Final = 86400
#: The seed's scheduler Redis (db 6), used when nothing else is configured.
DEFAULT_REDIS_URL: Final = "redis://localhost:6379/6"
#: Value of a success marker, as the seed writes it.
SUCCESS_MARKER: Final = "completed"
#: Length of a run's ``task_id`` (also the lock's value).
TASK_ID_LENGTH: Final = 8


class Status(StrEnum):
    """Terminal and initial states of a result dict's ``status``."""

    PENDING = "pending"
    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"


class Reason(StrEnum):
    """Values of a result dict's ``reason``: why a run was skipped or failed."""

    #: The success marker for this task and date exists.
    ALREADY_COMPLETED = "already_completed"
    #: Another worker holds the lock right now.
    LOCK_HELD = "lock_held"
    #: The lock expired or was taken while the body ran; no marker was written.
    LOCK_LOST = "lock_lost"
    #: The body ran longer than its timeout.
    TIMEOUT = "timeout"
    #: Redis failed during the run (unreachable, timed out, refused).
    REDIS_UNAVAILABLE = "redis_unavailable"
    #: The chain was cancelled before this task finished, or someone asked to
    #: cancel the run (``aiotasks cancel``; who: the record's ``cancelled_by``).
    CANCELLED = "cancelled"
    #: The task is paused fleet-wide (``aiotasks pause --task``): nothing ran, nothing was written.
    PAUSED = "paused"
    #: A dependency failed in this chain run.
    DEPENDENCY_FAILED = "dependency_failed"
    #: A dependency was itself skipped because one of its dependencies did not succeed.
    DEPENDENCY_BLOCKED = "dependency_blocked"
    #: A recurring dependency was running on another worker, so this run can't follow it.
    DEPENDENCY_LOCK_HELD = "dependency_lock_held"
    #: A dependency is paused (``blocked_by`` names it), so this run can't follow it.
    DEPENDENCY_PAUSED = "dependency_paused"
    #: Waiting for another worker's run of this task took longer than allowed.
    WAIT_TIMEOUT = "wait_timeout"
