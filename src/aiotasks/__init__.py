"""aiotasks: scheduled work that is safe to run from many asyncio processes and machines.

Run a task once per day, never twice at the same time, and its dependents only
after it succeeded, with Redis as the only shared part::

    import aiotasks

    @aiotasks.task()
    async def task_contributions_analysis(run: aiotasks.Run) -> None:
        run.result["items_processed"] = 0

    result = await task_contributions_analysis("20261125")

The seed's low-level step stays available as :func:`task_boilerplate`.
"""

from __future__ import annotations

import logging as _logging

from ._boilerplate import finish_task as finish_task
from ._boilerplate import release_lock as release_lock
from ._boilerplate import task_boilerplate as task_boilerplate
from ._cancel_run import cancel as cancel
from ._chain import run_chain as run_chain
from ._config import Settings as Settings
from ._constants import REDIS_LOCK_TIMEOUT as REDIS_LOCK_TIMEOUT
from ._constants import REDIS_SUCCESS_TTL as REDIS_SUCCESS_TTL
from ._constants import Reason as Reason
from ._constants import Status as Status
from ._controls import clear as clear
from ._controls import pause_schedule as pause_schedule
from ._controls import pause_task as pause_task
from ._controls import paused_tasks as paused_tasks
from ._controls import resume_schedule as resume_schedule
from ._controls import resume_task as resume_task
from ._errors import AioTasksError as AioTasksError
from ._errors import CancelTimeout as CancelTimeout
from ._errors import InvalidChain as InvalidChain
from ._errors import InvalidConfig as InvalidConfig
from ._errors import InvalidDate as InvalidDate
from ._errors import InvalidInput as InvalidInput
from ._errors import InvalidSchedule as InvalidSchedule
from ._errors import InvalidTaskName as InvalidTaskName
from ._errors import RedisAuthError as RedisAuthError
from ._errors import RedisUnavailable as RedisUnavailable
from ._errors import TaskError as TaskError
from ._errors import TriggerExpired as TriggerExpired
from ._hooks import add_run_hook as add_run_hook
from ._hooks import remove_run_hook as remove_run_hook
from ._records import RunRecord as RunRecord
from ._schedule import Schedule as Schedule
from ._scheduler import Scheduler as Scheduler
from ._task import Run as Run
from ._task import Task as Task
from ._task import task as task
from ._trigger import Triggered as Triggered
from ._trigger import trigger as trigger

__version__ = "0.1.0"

# A library adds no handler but this one: the application decides where logs go.
_logging.getLogger("aiotasks").addHandler(_logging.NullHandler())

__all__ = [
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
