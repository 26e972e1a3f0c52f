"""``aiotasks run`` and ``serve`` run on uvloop when it is installed, else on asyncio's (issue 22)."""

from __future__ import annotations

import asyncio
import builtins
import importlib.util
import json
from typing import Any

import pytest

from aiotasks._cli import loop_factory
from tests.test_cli import CHAINS, DATE, cli, with_redis

UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.skipif(not UVLOOP, reason="uvloop is not installed")
def test_run_runs_its_tasks_on_uvloop_when_installed(redis_url: str) -> None:
    """A task run by ``aiotasks run`` finds itself on uvloop's event loop, and succeeds there."""
    done = cli(*with_redis(redis_url, "run", f"{CHAINS}:looped", "--date", DATE, "--json"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["tasks"]["which_loop"]
    assert (result["status"], result["loop"]) == ("success", "uvloop")


def test_without_uvloop_run_uses_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uvloop (its import fails) ``run``'s loop is asyncio's, and other commands never ask."""
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert loop_factory(fast=True) is None
    assert loop_factory(fast=False) is None
    with asyncio.Runner(loop_factory=loop_factory(fast=True)) as runner:
        assert runner.get_loop().__class__.__module__.startswith("asyncio")
