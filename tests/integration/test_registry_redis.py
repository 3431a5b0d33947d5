"""RedisRegistry against a real Redis: the shared contract plus Redis specifics
(key names, one round trip per batch, no pickling, trimming, error propagation)."""

import importlib.util
import socket
from pathlib import Path

import pytest
import redis
import redis.backoff
import redis.retry

from mpitrack.frames import FrameKey
from mpitrack.registry import RedisRegistry

pytestmark = pytest.mark.integration


def _load_contract():
    """The contract lives with the unit tests; load it by path (tests/ is no package)."""
    path = Path(__file__).resolve().parents[1] / "unit" / "test_registry.py"
    spec = importlib.util.spec_from_file_location("_registry_contract", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RegistryContract


RegistryContract = _load_contract()


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
def client(request, redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=request.param)
    yield c
    c.close()


class TestRedisRegistry(RegistryContract):
    @pytest.fixture
    def make_registry(self, client):
        return lambda run: RedisRegistry(client, run)


@pytest.fixture
def raw(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_keys_follow_the_design(raw):
    reg = RedisRegistry(raw, "demo")
    reg.add([FrameKey(3, 7, 2), FrameKey(3, 8, 2)])
    reg.request_stop()
    assert raw.smembers("mpitrack:demo:frames:3:2") == {b"7", b"8"}
    assert raw.smembers("mpitrack:demo:frame_sets") == {b"3:2"}
    assert raw.get("mpitrack:demo:stop") == b"1"
    assert raw.type("mpitrack:demo:frame_changes") == b"stream"
    assert sorted(raw.keys("*")) == [
        b"mpitrack:demo:frame_changes",
        b"mpitrack:demo:frame_sets",
        b"mpitrack:demo:frames:3:2",
        b"mpitrack:demo:stop",
    ]


def test_one_round_trip_per_batch(raw, monkeypatch):
    reg = RedisRegistry(raw, "demo")
    calls = []
    real_execute = redis.client.Pipeline.execute
    real_command = redis.Redis.execute_command

    def count_pipeline(self, *args, **kwargs):
        calls.append("pipeline")
        return real_execute(self, *args, **kwargs)

    def count_command(self, *args, **kwargs):
        calls.append(args[0])
        return real_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", count_pipeline)
    monkeypatch.setattr(redis.Redis, "execute_command", count_command)
    reg.add(FrameKey(r, f, 0) for r in range(5) for f in range(1440))
    assert calls == ["pipeline"]
    calls.clear()
    assert reg.is_complete(4, 0, range(1440))
    assert len(calls) == 1


def test_changes_survive_trimming_by_resynchronising(raw):
    reg = RedisRegistry(raw, "demo")
    reg.add([FrameKey(0, 0, 0)])
    _, cursor = reg.changed_since(None)
    reg.add([FrameKey(1, 0, 0)])
    raw.xtrim("mpitrack:demo:frame_changes", maxlen=0, approximate=False)
    pairs, cursor = reg.changed_since(cursor)
    assert pairs == [(0, 0), (1, 0)]  # every pair: nothing is lost
    reg.add([FrameKey(2, 0, 0)])
    assert reg.changed_since(cursor)[0] == [(2, 0)]


def test_change_stream_is_capped(raw):
    reg = RedisRegistry(raw, "demo", max_changes=100)
    for i in range(1000):
        reg.add([FrameKey(0, i, 0)])
    assert raw.xlen("mpitrack:demo:frame_changes") < 1000
    assert len(reg.frames(0, 0)) == 1000


def test_values_are_plain_text_never_pickles(raw):
    RedisRegistry(raw, "demo").add([FrameKey(1, 2, 3)])
    entries = raw.xrange("mpitrack:demo:frame_changes")
    assert [fields for _id, fields in entries] == [{b"pairs": b"1:3"}]


def test_connection_errors_propagate():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # redis-py retries with backoff by default; the registry must not add its own.
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, retry=no_retry)
    reg = RedisRegistry(dead, "demo")
    with pytest.raises(redis.exceptions.ConnectionError):
        reg.add([FrameKey(0, 0, 0)])
    with pytest.raises(redis.exceptions.ConnectionError):
        reg.changed_since(None)


@pytest.mark.parametrize("run", ["", "two words"])
def test_bad_run_names_are_rejected(raw, run):
    with pytest.raises(ValueError, match="run name"):
        RedisRegistry(raw, run)
