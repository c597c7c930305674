from __future__ import annotations

from cdc.core.tracker import AckTracker


def test_commit_becomes_safe_only_when_its_batch_is_stored() -> None:
    tracker = AckTracker(100)
    tracker.commit(200, batch_seq=1)
    tracker.commit(300, batch_seq=2)
    assert tracker.safe_lsn == 100
    assert tracker.stored(1) == 200
    assert tracker.safe_lsn == 200
    assert tracker.stored(2) == 300


def test_commit_into_an_already_stored_batch_is_safe_at_once() -> None:
    tracker = AckTracker(0)
    tracker.stored(5)
    tracker.commit(42, batch_seq=5)
    assert tracker.safe_lsn == 42


def test_idle_position_never_overtakes_pending_commits() -> None:
    tracker = AckTracker(10)
    tracker.commit(50, batch_seq=1)
    tracker.advance_idle(1000)
    assert tracker.safe_lsn == 10
    tracker.stored(1)
    tracker.advance_idle(1000)
    assert tracker.safe_lsn == 1000


def test_safe_lsn_never_moves_backwards() -> None:
    tracker = AckTracker(500)
    tracker.commit(400, batch_seq=1)
    tracker.stored(1)
    tracker.advance_idle(300)
    assert tracker.safe_lsn == 500


def test_last_commit_is_the_newest_seen_even_before_it_is_stored() -> None:
    tracker = AckTracker(10)
    assert tracker.last_commit_lsn == 10
    tracker.commit(50, batch_seq=1)
    tracker.commit(70, batch_seq=2)
    assert tracker.last_commit_lsn == 70
    tracker.stored(2)
    assert tracker.last_commit_lsn == 70


def test_many_commits_into_one_batch_become_safe_together_at_the_newest() -> None:
    tracker = AckTracker(10)
    for lsn in range(20, 220, 20):
        tracker.commit(lsn, batch_seq=1)
    tracker.commit(500, batch_seq=2)
    assert tracker.pending == 2  # one entry per batch, however many transactions
    assert tracker.last_commit_lsn == 500
    assert tracker.stored(1) == 200
    assert tracker.stored(2) == 500


def test_each_stored_batch_is_reported_once_in_order() -> None:
    reported: list[int] = []
    t = AckTracker(0, on_stored=reported.append)
    t.commit(100, 1)
    t.stored(1)
    t.stored(2)
    assert reported == [1, 2] and t.safe_lsn == 100
