"""The stream job's state store: what a batch reads is the same on its first run, on a replay in the
same process, and after a restart from the changelog and snapshots."""
import pytest

from features.stream_state import StateAheadError, StateStore


def reopened(store: StateStore) -> StateStore:
    """The store as a restarted job sees it: nothing in memory, only what is on disk."""
    return StateStore(store.dir, store.snapshot_every)


def test_a_replayed_batch_reads_the_state_from_before_its_first_attempt(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.load(["a", "b"], 0) == {"a": None, "b": None}
    store.save(0, {"a": b"a0", "b": b"b0"})
    store.save(1, {"a": b"a1"})
    for s in (store, reopened(store)):
        assert s.load(["a", "b", "c"], 2) == {"a": b"a1", "b": b"b0", "c": None}  # the next batch
    for s in (store, reopened(store)):
        assert s.load(["a", "b"], 1) == {"a": b"a0", "b": b"b0"}  # batch 1 again, after a crash
        s.save(1, {"a": b"a1"})  # ... which stores the same
        assert s.load(["a"], 2) == {"a": b"a1"}


def test_a_store_ahead_of_the_checkpoint_is_refused(tmp_path):
    store = StateStore(tmp_path / "state")
    for n in range(6):
        store.save(n, {"a": b"a%d" % n})
    with pytest.raises(StateAheadError, match="holds batch 5, but the checkpoint is at batch 3"):
        reopened(store).load(["a"], 3)


def test_dedup_ids_ignore_the_replayed_batch_and_expire_behind_the_watermark(tmp_path):
    store = StateStore(tmp_path / "state")
    store.save(0, {"a": b"s"}, [("a", "e1", 100), ("a", "e2", 200)])
    store.save(1, {"a": b"s"}, [("a", "e3", 300)])
    pairs = [("a", "e1"), ("a", "e2"), ("a", "e3"), ("b", "e1")]
    for s in (store, reopened(store)):
        assert s.seen(pairs, 1) == {"a": {"e1", "e2"}}  # batch 1's own ids do not count on its replay
        assert s.seen(pairs, 2) == {"a": {"e1", "e2", "e3"}}
    store.save(2, {"a": b"s"}, [], {"a": 250})  # a's watermark before batch 2 was 250
    for s in (store, reopened(store)):
        assert s.seen(pairs, 3) == {"a": {"e3"}}


def test_snapshots_bound_the_changelog_and_every_batch_can_still_be_replayed(tmp_path):
    store = StateStore(tmp_path / "state", snapshot_every=3)
    for n in range(10):
        store.save(n, {f"u{n}": b"r%d" % n, "all": b"r%d" % n}, [(f"u{n}", f"e{n}", n)])
    names = sorted(p.name for p in store.dir.iterdir())
    assert names == ["batch-7.arrow", "batch-8.arrow", "batch-9.arrow", "snapshot-6.arrow", "snapshot-9.arrow"]
    for replay in (9, 10):  # the last batch again after a crash right after its snapshot, or the next one
        s = reopened(store)
        got = s.load([f"u{n}" for n in range(10)] + ["all"], replay)
        assert got == {**{f"u{n}": b"r%d" % n for n in range(replay)}, **{f"u{n}": None for n in range(replay, 10)},
                       "all": b"r%d" % (replay - 1)}
        assert s.seen([(f"u{n}", f"e{n}") for n in range(10)], replay) == {f"u{n}": {f"e{n}"} for n in range(replay)}


def test_the_base_written_for_reset_offsets_carries_records_and_dedup_ids_into_a_new_store(tmp_path):
    store = StateStore(tmp_path / "old", snapshot_every=2)
    store.save(0, {"a": b"a0", "b": b"b0"}, [("a", "e1", 100)])
    store.save(1, {"a": b"a1"}, [("a", "e2", 200)])
    store.save(2, {"b": b"b2"}, [("b", "e3", 300)])  # a snapshot, then one more batch
    store.save(3, {"c": b"c3"})
    assert reopened(store).write_base(tmp_path / "new") == 3
    fresh = StateStore(tmp_path / "new")
    assert fresh.load(["a", "b", "c"], 0) == {"a": b"a1", "b": b"b2", "c": b"c3"}  # batch 0 of the new checkpoint
    assert fresh.seen([("a", "e1"), ("a", "e2"), ("b", "e3"), ("c", "e1")], 0) == {"a": {"e1", "e2"}, "b": {"e3"}}
    fresh.save(0, {"a": b"a-new"})
    assert StateStore(tmp_path / "new").load(["a", "b"], 1) == {"a": b"a-new", "b": b"b2"}  # after a restart too
