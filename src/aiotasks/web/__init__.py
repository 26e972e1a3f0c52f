"""The web console: the grid, history, running runs and schedules in a browser, with the controls.

::

    token = os.environ.get("AIOTASKS_WEB_TOKEN")
    app.mount("/tasks", aiotasks.web.console(SCHEDULES, redis=client, token=token))

or ``aiotasks web TARGET`` from a shell. Needs ``aiotasks-redis[web]`` (Starlette,
Jinja2; uvicorn for the command); ``import aiotasks`` never imports this package.
See ``docs/how-to/web-console.md``.
"""

from __future__ import annotations

from ._app import console as console

__all__ = ["console"]
