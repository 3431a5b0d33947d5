"""Behaviour every FrameRegistry must have.

`RegistryContract` is the shared suite; `TestMemoryRegistry` runs it here and
tests/integration/test_registry_redis.py runs it against a real Redis. The
`make_registry(run)` fixture returns a registry handle for a run name; two calls
with the same name must share state (as two processes sharing one Redis do).
"""

import threading

import pytest

from mpitrack.frames import FrameKey
from mpitrack.registry import FrameRegistry, MemoryRegistry


def keys(region, scan, frames):
    return [FrameKey(region=region, frame=f, scan=scan) for f in frames]


class RegistryContract:
    @pytest.fixture
    def registry(self, make_registry):
        return make_registry("test")

    def test_satisfies_the_protocol(self, registry):
        assert isinstance(registry, FrameRegistry)

    def test_empty_registry(self, registry):
        assert registry.frames(0, 0) == set()
        assert registry.missing(0, 0, [3, 1, 2]) == [3, 1, 2]
        assert not registry.is_complete(0, 0, [0])
        assert registry.is_complete(0, 0, [])

    def test_add_then_query(self, registry):
        registry.add(keys(1, 5, [10, 11, 12]) + keys(2, 5, [10]))
        assert registry.frames(1, 5) == {10, 11, 12}
        assert registry.frames(2, 5) == {10}
        assert registry.frames(1, 4) == set()

    def test_add_is_idempotent_and_accumulates(self, registry):
        registry.add(keys(0, 0, [1, 2]))
        registry.add(keys(0, 0, [2, 3]))
        registry.add(keys(0, 0, [1]))
        assert registry.frames(0, 0) == {1, 2, 3}

    def test_add_accepts_generators_and_empty_batches(self, registry):
        registry.add(FrameKey(0, f, 1) for f in range(3))
        registry.add([])
        registry.add(iter(()))
        assert registry.frames(0, 1) == {0, 1, 2}

    def test_missing_keeps_window_order_across_wrap(self, registry):
        window = [1438, 1439, 0, 1, 2]
        registry.add(keys(3, 0, [1439, 1]))
        assert registry.missing(3, 0, window) == [1438, 0, 2]
        assert not registry.is_complete(3, 0, window)
        registry.add(keys(3, 0, [1438, 0, 2]))
        assert registry.missing(3, 0, window) == []
        assert registry.is_complete(3, 0, window)

    def test_frames_of_other_scans_and_regions_do_not_count(self, registry):
        registry.add(keys(0, 1, [0, 1]) + keys(1, 0, [0, 1]))
        assert not registry.is_complete(0, 0, [0, 1])

    def test_large_batch(self, registry):
        batch = [FrameKey(r, f, s) for r in range(4) for s in range(3) for f in range(1440)]
        registry.add(batch)
        assert registry.is_complete(2, 1, range(1440))
        assert len(registry.frames(3, 2)) == 1440

    def test_changed_since_none_lists_every_pair_with_frames(self, registry):
        pairs, _ = registry.changed_since(None)
        assert pairs == []
        registry.add(keys(1, 0, [0]) + keys(0, 2, [5]) + keys(0, 2, [6]))
        pairs, cursor = registry.changed_since(None)
        assert pairs == [(0, 2), (1, 0)]
        assert registry.changed_since(cursor)[0] == []

    def test_changed_since_reports_only_new_changes(self, registry):
        _, cursor = registry.changed_since(None)
        registry.add(keys(0, 0, [1]))
        registry.add(keys(1, 0, [1]) + keys(0, 0, [2]))
        pairs, cursor = registry.changed_since(cursor)
        assert pairs == [(0, 0), (1, 0)]
        pairs, cursor = registry.changed_since(cursor)
        assert pairs == []
        registry.add(keys(2, 7, [0]))
        assert registry.changed_since(cursor)[0] == [(2, 7)]

    def test_cursor_taken_on_an_empty_registry_sees_later_changes(self, registry):
        _, cursor = registry.changed_since(None)
        registry.add(keys(4, 4, [4]))
        pairs, cursor2 = registry.changed_since(cursor)
        assert pairs == [(4, 4)]
        assert registry.changed_since(cursor2)[0] == []

    def test_unknown_cursor_resynchronises(self, registry):
        registry.add(keys(1, 1, [1]))
        assert registry.changed_since("not-a-cursor")[0] == [(1, 1)]

    def test_second_handle_sees_writes_and_changes(self, make_registry):
        listener, dispatcher = make_registry("shared"), make_registry("shared")
        _, cursor = dispatcher.changed_since(None)
        listener.add(keys(0, 3, [7, 8]))
        pairs, cursor = dispatcher.changed_since(cursor)
        assert pairs == [(0, 3)]
        assert dispatcher.frames(0, 3) == {7, 8}

    def test_runs_are_isolated(self, make_registry):
        a, b = make_registry("run-a"), make_registry("run-b")
        a.add(keys(0, 0, [1]))
        a.request_stop()
        assert b.frames(0, 0) == set()
        assert b.changed_since(None)[0] == []
        assert not b.stop_requested()

    def test_stop_request(self, make_registry):
        registry, other = make_registry("stop"), make_registry("stop")
        assert not other.stop_requested()
        registry.request_stop()
        assert other.stop_requested()
        other.clear_stop()
        assert not registry.stop_requested()

    def test_concurrent_adds_lose_nothing(self, registry):
        def produce(region):
            for f in range(0, 200, 10):
                registry.add(keys(region, 0, range(f, f + 10)))

        threads = [threading.Thread(target=produce, args=(r,)) for r in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in range(4):
            assert registry.is_complete(r, 0, range(200))


class TestMemoryRegistry(RegistryContract):
    @pytest.fixture
    def make_registry(self):
        runs: dict[str, MemoryRegistry] = {}
        return lambda run: runs.setdefault(run, MemoryRegistry())
