"""Is the messages.db a monitor follows still the file its cursor was taken in? If not, where to read from.

A cursor is a rowid, and a rowid is no identity across files. messages.db put
back from a backup, salvaged with `.recover` (a shorter tail) or created anew
hands out again rowids the cursor has passed, and the bridge stores there what
WhatsApp replays after the restart (the offline queue, history): read on from
the old cursor, those drops were skipped without a word. So a cursor keeps
marks (monitors.store.model.Position): the file's `store_id` (bridge_state,
written when the file is created and kept by every copy of it) and the id and
`stored_at` of the message at the cursor. At start:

- another store id: another file; it is read from its start.
- the message at the cursor is still there: the same file up to the cursor
  (every ordinary start: one row read).
- it is not (gone, or another message at that rowid): the rows at or below the
  cursor stored after the cursor's message were stored after the file lost its
  tail, and this monitor never saw them. The bridge only appends, so they are
  the newest rowids at or below the cursor: the check walks down from the
  cursor to the first row stored no later than the cursor's message and reads
  on from there. A cursor's message that `prune` removed costs one step (the
  next row down is older) and moves nothing.
- the file now ends before the cursor: new rows will get rowids the cursor has
  passed; it is followed from its end.

Drops are unique per project and submissions per message, so whatever is read
again records nothing twice and acknowledges nothing twice. Every move is
logged and written to the recovery log (`reread`). stored_at is the bridge's
wall clock: stepped back between the cursor's message and the restart, it
makes rows stored since look older than the cursor's message. So the walk also
passes every row above `start_rowid`, the newest rowid when the bridge last
started on the file (bridge_state), where the cursor's rowid holds another
message or the file ends before it: the cursor was taken before the file lost
rows, so it read none of them. (A cursor's message gone from a file that goes
on past it was pruned: the bridge appends on, and the cursor stands.)
"""
from __future__ import annotations

from typing import NamedTuple

from monitors.follow import StoreFollower
from monitors.store.model import Position


class Recheck(NamedTuple):
    position: Position  # read the rows after this one
    reread: int  # rows at or below the old cursor that are read (again): -1 = all of another file
    why: str  # "" when the cursor stands


def recheck(store: StoreFollower, cursor: Position) -> Recheck:
    """Where to read from in `store` for a project whose drops store has `cursor` (see the module docstring)."""
    current = store.store_id()
    if cursor.rowid == 0:
        return Recheck(cursor, 0, "")
    if cursor.store_id and current and cursor.store_id != current:
        return Recheck(Position(0), -1, f"it is another file (store id {current}; rowid {cursor.rowid} was read "
                                        f"in {cursor.store_id}): read from its start")
    newest = store.newest_rowid()
    if cursor.message_id is None:  # a cursor saved before cursors had marks: only the end of the file tells
        if newest < cursor.rowid:
            return Recheck(Position(0), -1, f"it ends at rowid {newest}, before the cursor {cursor.rowid}: "
                                            "a new file, read from its start")
        return Recheck(cursor, 0, "")
    passed, safe, there = 0, Position(0), "gone"
    started = store.start_rowid()
    for rowid, message_id, stored_at in store.marks_down_from(cursor.rowid):
        if rowid == cursor.rowid:
            if message_id == cursor.message_id:
                return Recheck(cursor, 0, "")
            there = f"another message ({message_id})"
        elif stored_at is not None and cursor.stored_at is not None and stored_at <= cursor.stored_at and (
                started is None or rowid <= started or (there == "gone" and newest > cursor.rowid)):
            safe = Position(rowid, message_id, stored_at, current)  # (gone from a file going on past it: pruned)
            break
        passed += 1
    if passed:
        many = f"{passed} messages at or below it were" if passed != 1 else "1 message at or below it was"
        return Recheck(safe, passed, f"the message read at rowid {cursor.rowid} ({cursor.message_id}) is {there} "
                                     f"and {many} stored after it (a restored or salvaged file): read again from "
                                     f"rowid {safe.rowid}")
    if newest < cursor.rowid:
        return Recheck(safe, 0, f"it ends at rowid {newest}, before the cursor {cursor.rowid} (a restored or "
                                "salvaged file lost its tail): followed from its end")
    return Recheck(cursor, 0, "")  # the cursor's message was pruned; nothing new lies below it
