"""How one change of the DriverCore goes (drivers/core/transaction.py): undo newest first when
it fails before its save, nothing undone after, the intent ended either way, savepoints."""

from __future__ import annotations

import logging

import pytest

from drivers.core.transaction import transaction
from drivers.local_store import Intent, State
from drivers.model import Sandbox


class RecordingStore:
    def __init__(self, *, fail_save: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_save = fail_save

    def begin(self, intent: Intent) -> None:
        self.calls.append(f"begin {intent.op} {len(intent.sandboxes)}")

    def save(self, state: State) -> None:
        if self.fail_save:
            raise OSError("disk full")
        self.calls.append("save")

    def end(self) -> None:
        self.calls.append("end")


def test_a_failure_before_the_save_undoes_newest_first_and_ends_the_intent():
    store = RecordingStore(fail_save=True)
    undone: list[str] = []
    with pytest.raises(OSError, match="disk full"), transaction(store, Intent("connect")) as txn:
        txn.on_undo("first", lambda: undone.append("first"))
        txn.on_undo("second", lambda: undone.append("second"))
        txn.save(State())
    assert undone == ["second", "first"]
    assert store.calls == ["begin connect 0", "end"]


def test_nothing_is_undone_once_saved_and_the_intent_ends_after_the_block():
    store = RecordingStore()
    undone: list[str] = []
    with pytest.raises(RuntimeError), transaction(store, Intent("connect")) as txn:
        txn.on_undo("step", lambda: undone.append("step"))
        txn.save(State())
        store.calls.append("events")
        raise RuntimeError("after the save")
    assert undone == []
    assert store.calls == ["begin connect 0", "save", "events", "end"]


def test_without_an_intent_nothing_is_ended():
    store = RecordingStore()
    with transaction(store) as txn:
        txn.save(State())
    assert store.calls == ["save"]


def test_a_failing_undo_step_is_logged_and_the_others_still_run(caplog):
    store = RecordingStore()
    undone: list[str] = []

    def broken() -> None:
        raise OSError("gone")

    with caplog.at_level(logging.ERROR), pytest.raises(ValueError), transaction(store) as txn:
        txn.on_undo("first", lambda: undone.append("first"))
        txn.on_undo("remove the namespace", broken)
        raise ValueError("plumbing")
    assert undone == ["first"]
    assert "could not undo: remove the namespace" in caplog.text


def test_a_savepoint_undoes_only_its_own_steps_and_the_change_goes_on():
    store = RecordingStore()
    undone: list[str] = []
    with transaction(store) as txn:
        txn.on_undo("outer", lambda: undone.append("outer"))
        with pytest.raises(OSError), txn.savepoint():
            txn.on_undo("inner", lambda: undone.append("inner"))
            raise OSError("one service's tasks")
        assert undone == ["inner"]
        txn.save(State())
    assert undone == ["inner"]


def test_each_task_extends_the_intent_of_the_change():
    store = RecordingStore()
    with transaction(store) as txn:
        for name in ("web.1", "web.2"):
            txn.intend_task(Sandbox(id=name, name=name, hostname=name), [], name)
        assert txn.intent is not None and [s.name for s in txn.intent.sandboxes] == [
            "web.1",
            "web.2",
        ]
        assert txn.intent.netns == (("web.1", "web.1"), ("web.2", "web.2"))
    assert store.calls == ["begin service tasks 1", "begin service tasks 2", "end"]
