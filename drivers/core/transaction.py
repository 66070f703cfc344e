"""One change to the core, from its first step to its last: the intent it leaves in the store
while it touches the kernel (drivers/local_store.py: Intent), and the steps that reverse what
it did so far, run newest first if it fails before its save."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

from drivers.local_store import Intent, State, Store
from drivers.model import Endpoint, Sandbox

log = logging.getLogger(__name__)


class Transaction:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self.intent: Intent | None = None
        self.saved = False

    def begin(self, intent: Intent) -> None:
        """Record, durably, what the change is about to do to the kernel."""
        self.intent = intent
        self._store.begin(intent)

    def intend_task(self, sandbox: Sandbox, endpoints: list[Endpoint], netns: str) -> None:
        """Add a task about to be made to the intent: a kill before the save leaves the
        namespaces and links of every new task of the change for the next start to remove."""
        held = self.intent or Intent("service tasks")
        self.begin(
            replace(
                held,
                sandboxes=(*held.sandboxes, sandbox),
                endpoints=(*held.endpoints, *endpoints),
                netns=(*held.netns, (sandbox.id, netns)),
            )
        )

    def on_undo(self, what: str, step: Callable[[], object]) -> None:
        """`step` reverses what was just done (`what` names it in the log if it fails)."""
        self._undo.append((what, step))

    def save(self, state: State) -> None:
        """Write the new state: from here on the change stands, and nothing is undone."""
        self._store.save(state)
        self.saved = True

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo only what the block did if it raises (the change goes on without it)."""
        mark = len(self._undo)
        try:
            yield
        except BaseException:
            self._rewind(mark)
            raise

    def _rewind(self, mark: int = 0) -> None:
        while len(self._undo) > mark:
            what, step = self._undo.pop()
            try:
                step()
            except Exception:
                log.exception("could not undo: %s", what)


@contextlib.contextmanager
def transaction(store: Store, intent: Intent | None = None) -> Iterator[Transaction]:
    """A change: undone if the block raises before `save`; its intent ended when the block is
    over. The block emits the change's events before it ends: a kill before the subscribers
    heard of a change leaves its intent, so the next start tells them."""
    txn = Transaction(store)
    if intent is not None:
        txn.begin(intent)
    try:
        yield txn
    except BaseException:
        if not txn.saved:
            txn._rewind()
        raise
    finally:
        if txn.intent is not None:
            store.end()
