"""The journal: what a process must not forget if it is killed before its records are written.

A generation's record and charge reach the database in a batch after the client has its
answer (``settlement.py``). A process killed in between (``kill -9``, the OOM killer) would
leave an image served and never billed, and a generation cut off would leave no record and
its money held until the reservation expires. So each process appends to a journal file of
its own, as things happen, one JSON line each:

- ``start``: a generation began (its key and account), written before any money is held;
- ``delivered``: the last bytes of its answer are about to go to the client (written first, so
  that a kill once they are out still bills them), with the charge and the record to write
  (and whether money was held for it);
- ``withdrawn``: the client left before the end after all;
- ``finished``: the record and charge are in the database.

Its first line names the process's allowances (money held ahead for its requests,
``allowances.py``), which a replay gives back.

The lines are written straight to the file (no buffering in the process), so they survive
the process being killed. A process holds an exclusive lock on its journal while it lives;
at start, and from time to time after, every journal in the folder that no one holds
belonged to a process that died, and is replayed (``recover``): a generation delivered and
not settled is settled and recorded as succeeded; one started and not delivered is recorded
as failed (interrupted) and its money released. Then the file is removed.

A journal is rewritten with only its open generations once it grows past ``ROTATE_BYTES``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from imagegate.store.generations import GenerationRecord
from imagegate.store.settlement import Settlement

if TYPE_CHECKING:
    from imagegate.store import Store

log = logging.getLogger(__name__)

SUFFIX = ".journal"
ROTATE_BYTES = 64 * 1024 * 1024
INTERRUPTED = "interrupted: the gateway process stopped before the generation finished"


@dataclass(frozen=True, slots=True)
class Started:
    """What a journal knows of a generation from its start."""

    generation_id: str
    model: str
    key_id: int
    account_id: int
    streamed: bool
    created: int


class Journal:
    """This process's journal file, locked for as long as the process lives."""

    def __init__(self, folder: Path, *, allowances: str | None = None) -> None:
        """``allowances``: the owner name of this process's allowances (``Store.allowance_owner``)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._header = orjson.dumps({"event": "allowances", "owner": allowances}) + b"\n" if allowances else b""
        self._fd = -1
        #: The lines of generations not yet settled: what a rotation must keep.
        self._open: dict[str, list[bytes]] = {}
        self._size = 0
        self._open_file()

    def start(self, started: Started) -> None:
        self._append(started.generation_id, {"event": "start", **dataclasses.asdict(started)})

    def delivered(self, generation_id: str, cost_usd: Decimal, record: GenerationRecord, *, reserved: bool) -> None:
        self._append(generation_id, {"event": "delivered", "generation_id": generation_id, "reserved": reserved,
                                     "cost_usd": str(cost_usd), "record": _record_json(record)})

    def withdrawn(self, generation_id: str) -> None:
        self._append(generation_id, {"event": "withdrawn", "generation_id": generation_id})

    def finished(self, generation_id: str) -> None:
        """Its record and charge are in the database (or it never got so far as to need them)."""
        if self._open.pop(generation_id, None) is not None:
            self._write(orjson.dumps({"event": "finished", "generation_id": generation_id}) + b"\n")
        if self._size > ROTATE_BYTES:
            self._rotate()

    def close(self) -> None:
        """Closes (and, with nothing open, removes) the journal: a clean stop."""
        if self._fd < 0:
            return
        if not self._open:
            self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1

    # --- the file ---

    def _append(self, generation_id: str, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        self._open.setdefault(generation_id, []).append(line)
        self._write(line)

    def _write(self, line: bytes) -> None:
        os.write(self._fd, line)  # unbuffered: in the kernel's hands once this returns
        self._size += len(line)

    def _open_file(self) -> None:
        self._path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._size = 0
        if self._header:
            self._write(self._header)

    def _rotate(self) -> None:
        """A new file holding only the open generations' lines; the old one removed."""
        old_fd, old_path = self._fd, self._path
        self._open_file()
        for lines in self._open.values():
            for line in lines:
                self._write(line)
        old_path.unlink(missing_ok=True)
        os.close(old_fd)


async def recover(folder: Path, store: Store) -> int:
    """Replay the journals of processes that died; how many generations were settled or
    released. Journals still locked belong to live processes and are left alone."""
    if not folder.is_dir():
        return 0
    done = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        with _claimed(path) as claimed:
            if not claimed:
                continue
            owner, unfinished = _read(path)
            for settlement in unfinished:
                if await store.get_generation(settlement.generation_id) is None:  # else settled before
                    await store.finish(settlement)
                    done += 1
            if owner is not None:
                await store.release_allowances(owner)
            path.unlink(missing_ok=True)
    return done


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[bool]:
    """Whether this process could take ``path``'s lock: no live process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # another process replayed it meanwhile
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield path.exists()
    finally:
        os.close(fd)


def _read(path: Path) -> tuple[str | None, list[Settlement]]:
    """Whose allowances the journal names, and how each generation it left open ends: charged
    and recorded as succeeded if it was delivered, else recorded as interrupted with its
    money released."""
    owner = None
    started: dict[str, Started] = {}
    delivered: dict[str, dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:  # the last line, cut off by the kill
            log.warning("journal %s: an unreadable line was skipped", path.name)
            continue
        event = entry.pop("event")
        if event == "allowances":
            owner = entry["owner"]
            continue
        generation_id = entry["generation_id"]
        if event == "start":
            started[generation_id] = Started(**entry)
        elif event == "delivered":
            delivered[generation_id] = entry
        elif event == "withdrawn":
            delivered.pop(generation_id, None)
        else:
            started.pop(generation_id, None)
            delivered.pop(generation_id, None)
    return owner, [_settlement(s, delivered.get(s.generation_id)) for s in started.values()]


def _settlement(started: Started, delivered: dict[str, Any] | None) -> Settlement:
    """A delivered generation is charged as it was shown; one cut off releases what may have
    been held for it (a reservation that never was is simply not found)."""
    if delivered is not None:
        cost, reserved = Decimal(delivered["cost_usd"]), delivered["reserved"]
        values = delivered["record"]
        record = GenerationRecord(**{**values, "created_at": datetime.fromisoformat(values["created_at"])})
    else:
        cost, reserved = None, True
        record = GenerationRecord(
            id=started.generation_id, model=started.model, key_id=started.key_id, status="failed",
            http_status=500, error_message=INTERRUPTED, streamed=started.streamed,
            created_at=datetime.fromtimestamp(started.created, UTC),
        )
    return Settlement(started.generation_id, cost, reserved=reserved, key_id=started.key_id,
                      account_id=started.account_id, record=record)


def _record_json(record: GenerationRecord) -> dict[str, Any]:
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    values["cost_usd"] = str(record.cost_usd)
    values["created_at"] = record.created_at.isoformat()
    return values
