"""The Redis key layout: every key of a run under mpitrack:{run}:, spelled in one place."""

from __future__ import annotations

import pytest

from mpitrack.redis_keys import RedisKeys


def test_every_key_lives_under_the_run_prefix() -> None:
    keys = RedisKeys("demo")
    assert keys.frames(3, 2) == "mpitrack:demo:frames:3:2"
    named = {
        keys.frame_sets: "frame_sets",
        keys.frame_changes: "frame_changes",
        keys.stop: "stop",
        keys.jobs: "jobs",
        keys.attempts: "jobs:attempts",
        keys.dead: "jobs:dead",
        keys.events: "events",
        keys.dispatcher: "dispatcher",
        keys.finished: "finished",
    }
    assert named == {f"mpitrack:demo:{suffix}": suffix for suffix in named.values()}


@pytest.mark.parametrize("run", ["", "two words", "tab\there"])
def test_a_run_name_that_cannot_form_keys_is_refused(run: str) -> None:
    with pytest.raises(ValueError, match="run name"):
        RedisKeys(run)
