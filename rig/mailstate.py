"""Snapshots of a whole mailbox on the rig's Dovecot, to prove a command changed nothing."""

from __future__ import annotations

from rig.dovecot import Dovecot

# folder -> {uid: flags}; \Recent is left out: it is per session, not a change.
Snapshot = dict[str, dict[int, frozenset[str]]]


def snapshot(server: Dovecot, user: str) -> Snapshot:
    """Every folder of `user` with the UIDs and flags of its messages (two doveadm calls)."""
    state: Snapshot = {name: {} for name in server.folders(user)}
    out = server.doveadm("-f", "tab", "fetch", "-u", user, "mailbox uid flags", "all")
    lines = out.splitlines()
    if lines:
        header = lines[0].split("\t")
        for line in lines[1:]:
            row = dict(zip(header, line.split("\t"), strict=False))
            flags = frozenset(row["flags"].split()) - {"\\Recent"}
            state.setdefault(row["mailbox"], {})[int(row["uid"])] = flags
    return state
