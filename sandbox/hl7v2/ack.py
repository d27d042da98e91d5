"""Acknowledgments: original mode (MSA AA/AE/AR) and enhanced mode (accept acks CA/CE/CR), with ERR segments.

Enhanced mode is on when MSH-15 or MSH-16 is valued.  MSH-15 (AL always, ER
on error, SU on success, NE never) says whether the accept acknowledgment
goes back on the connection; when it does not, the application acknowledgment
goes back instead if MSH-16 asks for it, else nothing is sent.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sandbox.hl7v2.er7 import CODE_TEXT, Builder, Message, Separators, V2Error

ACCEPT = {"AA": "CA", "AE": "CE", "AR": "CR"}


def enhanced(msg: Message | None) -> bool:
    return msg is not None and bool(msg.msh.get(15) or msg.msh.get(16))


def wanted(condition: str, code: str) -> bool:
    """MSH-15/16 condition (table 0155): AL always, NE never, ER on error, SU on success; empty means never."""
    return condition == "AL" or (condition == "ER" and code != "AA") or (condition == "SU" and code == "AA")


def reply_code(msg: Message | None, code: str) -> str | None:
    """Which acknowledgment code goes back on the connection for an outcome ``code`` (AA/AE/AR), if any."""
    if not enhanced(msg):
        return code
    assert msg is not None
    if wanted(msg.msh.get(15), code):
        return ACCEPT[code]
    if wanted(msg.msh.get(16), code):
        return code
    return None


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def build(msg: Message | None, code: str, errors: tuple[V2Error, ...] = (), *, text: str = "") -> str:
    """The ACK for ``msg`` (None when it could not be read at all) with acknowledgment ``code``."""
    seps = msg.seps if msg is not None else Separators()
    out = Builder(seps)
    msh = msg.msh if msg is not None else None
    trigger = msh.get(9, 2) if msh else ""
    version = (msh.get(12) if msh else "") or "2.5.1"
    out.seg(
        "MSH",
        # The reply swaps sender and receiver, field by field (whole HD values, subcomponents included).
        _hd(msg, 5),
        _hd(msg, 6),
        _hd(msg, 3),
        _hd(msg, 4),
        timestamp(),
        "",
        ["ACK", trigger, "ACK"] if trigger else ["ACK"],
        f"ACK{secrets.token_hex(8)}",
        (msh.get(11) if msh else "") or "P",
        version,
    )
    out.seg("MSA", code, msh.get(10) if msh else "", (errors[0].text if errors else text)[:80])
    for error in errors:
        location: list[str] = [error.segment, str(error.sequence)] if error.segment else []
        if error.segment and error.field is not None:
            location += [str(error.field), "1"]
            if error.component is not None:
                location.append(str(error.component))
        out.seg(
            "ERR",
            "",
            location,
            [error.code, CODE_TEXT.get(error.code, ""), "HL70357"],
            "E",
            "",
            "",
            "",
            error.text,
        )
    return out.text()


def _hd(msg: Message | None, n: int) -> list[list[str]]:
    if msg is None:
        return [[""]]
    reps = msg.msh.repetitions(n)
    return [list(c) for c in reps[0]] if reps else [[""]]
