"""The public surface is small and pinned."""

from __future__ import annotations

import aiotasks


def test_all_is_pinned() -> None:
    """__all__ lists exactly the public names, and each is importable from the package."""
    assert sorted(aiotasks.__all__) == sorted(
        [
            "REDIS_LOCK_TIMEOUT",
            "REDIS_SUCCESS_TTL",
            "AioTasksError",
            "CancelTimeout",
            "InvalidChain",
            "InvalidConfig",
            "InvalidDate",
            "InvalidInput",
            "InvalidSchedule",
            "InvalidTaskName",
            "Reason",
            "RedisAuthError",
            "RedisUnavailable",
            "Run",
            "RunRecord",
            "Schedule",
            "Scheduler",
            "Settings",
            "Status",
            "Task",
            "TaskError",
            "TriggerExpired",
            "Triggered",
            "add_run_hook",
            "cancel",
            "clear",
            "finish_task",
            "pause_schedule",
            "pause_task",
            "paused_tasks",
            "release_lock",
            "remove_run_hook",
            "resume_schedule",
            "resume_task",
            "run_chain",
            "task",
            "task_boilerplate",
            "trigger",
        ]
    )
    for name in aiotasks.__all__:
        assert getattr(aiotasks, name) is not None


def test_seed_constants_and_error_tree() -> None:
    """Seed constants keep their values; every error derives from AioTasksError; bad input is ValueError."""
    assert (aiotasks.REDIS_LOCK_TIMEOUT, aiotasks.REDIS_SUCCESS_TTL) == (300, 86400)
    for leaf in (
        aiotasks.InvalidTaskName,
        aiotasks.InvalidDate,
        aiotasks.InvalidChain,
        aiotasks.InvalidConfig,
        aiotasks.InvalidSchedule,
    ):
        assert issubclass(leaf, aiotasks.InvalidInput)
        assert issubclass(leaf, ValueError)
    for error in (
        aiotasks.TaskError,
        aiotasks.InvalidInput,
        aiotasks.RedisUnavailable,
        aiotasks.RedisAuthError,
        aiotasks.TriggerExpired,
        aiotasks.CancelTimeout,
    ):
        assert issubclass(error, aiotasks.AioTasksError)
    failure = aiotasks.TaskError("failed", "boom")
    assert (failure.status, failure.message, failure.result, str(failure)) == (
        "failed",
        "boom",
        None,
        "failed: boom",
    )


def test_statuses_and_reasons_are_plain_strings() -> None:
    """Status and Reason values compare equal to the seed's strings, so result dicts stay JSON."""
    assert str.__eq__(aiotasks.Status.SKIPPED, "skipped")
    assert str.__eq__(aiotasks.Reason.ALREADY_COMPLETED, "already_completed")
    assert str.__eq__(aiotasks.Reason.LOCK_HELD, "lock_held")
    assert {s.value for s in aiotasks.Status} == {"pending", "success", "skipped", "failed"}
