"""The stream job's state store: what a batch reads is the same on its first run and on a replay."""
import pytest

from features.stream_state import StateAheadError, StateStore


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "checkpoint" / "user-state.sqlite")
    yield s
    s.close()


def test_a_replayed_batch_reads_the_state_from_before_its_first_attempt(store):
    assert store.load(["a", "b"], 0) == {"a": None, "b": None}
    store.save(0, {"a": b"a0", "b": b"b0"}, {})
    store.save(1, {"a": b"a1"}, {"a": b"a0"})
    assert store.load(["a", "b", "c"], 2) == {"a": b"a1", "b": b"b0", "c": None}  # the next batch
    assert store.load(["a", "b"], 1) == {"a": b"a0", "b": b"b0"}  # batch 1 again, after a crash
    store.save(1, {"a": b"a1"}, {"a": b"a0"})  # ... which stores the same
    assert store.load(["a"], 2) == {"a": b"a1"}


def test_a_store_ahead_of_the_checkpoint_is_refused(store):
    store.save(5, {"a": b"a5"}, {})
    with pytest.raises(StateAheadError, match="holds batch 5 .* checkpoint is at batch 3"):
        store.load(["a"], 3)


def test_dedup_rows_ignore_the_replayed_batch_and_expire_behind_the_watermark(store):
    store.save(0, {"a": b"s"}, {}, [("a", "e1", 100), ("a", "e2", 200)])
    store.save(1, {"a": b"s"}, {}, [("a", "e3", 300)])
    pairs = [("a", "e1"), ("a", "e2"), ("a", "e3"), ("b", "e1")]
    assert store.seen(pairs, 1) == {"a": {"e1", "e2"}}  # batch 1's own rows do not count on its replay
    assert store.seen(pairs, 2) == {"a": {"e1", "e2", "e3"}}
    store.save(2, {"a": b"s"}, {}, [], {"a": 250})  # a's watermark before batch 2 was 250
    assert store.seen(pairs, 3) == {"a": {"e3"}}


def test_state_survives_reopening(tmp_path):
    path = tmp_path / "user-state.sqlite"
    first = StateStore(path)
    first.save(0, {"a": b"a0"}, {}, [("a", "e1", 1)])
    first.close()
    again = StateStore(path)
    assert again.load(["a"], 1) == {"a": b"a0"} and again.seen([("a", "e1")], 1) == {"a": {"e1"}}
    again.close()
