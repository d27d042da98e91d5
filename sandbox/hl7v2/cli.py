"""``ehr-sandbox hl7 send FILE --host --port``: send the messages in a file over MLLP and print each ACK."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandbox.hl7v2.er7 import V2Error, parse
from sandbox.hl7v2.mllp import Client
from sandbox.hl7v2.service import DEFAULT_MLLP_PORT


def split_messages(text: str) -> list[str]:
    """The messages of a file: each starts at a line beginning with MSH (segments end with CR, LF or CRLF)."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    messages: list[list[str]] = []
    for line in lines:
        if line.startswith("MSH"):
            messages.append([line])
        elif line.strip() and messages:
            messages[-1].append(line)
        elif line.strip():
            raise ValueError(f"the file does not start with an MSH segment (found '{line[:20]}')")
    return ["\r".join(m) + "\r" for m in messages]


def send(args: argparse.Namespace) -> None:
    from sandbox.cli import CliError

    path = Path(args.file)
    try:
        messages = split_messages(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        raise CliError(f"{path}: {exc}") from None
    if not messages:
        raise CliError(f"{path}: no HL7 v2 messages (a message starts with an MSH segment)")
    rejected = 0
    with Client(args.host, args.port, timeout=args.timeout) as client:
        for message in messages:
            reply = client.send(message).decode("utf-8", "replace")
            code, text = _ack_summary(reply)
            rejected += code not in ("AA", "CA")
            control = parse(message).control_id if message.startswith("MSH") else "?"
            print(f"{control}: {code}{' ' + text if text else ''}")
            if args.verbose:
                print(reply.replace("\r", "\n"))
    if rejected:
        raise CliError(f"{rejected} of {len(messages)} messages were not accepted")


def _ack_summary(reply: str) -> tuple[str, str]:
    try:
        msa = parse(reply).first("MSA")
    except V2Error:
        return "??", "the reply is not an HL7 v2 ACK"
    if msa is None:
        return "??", "the reply has no MSA segment"
    return msa.get(1), msa.get(3)


def add_hl7_commands(sub: argparse._SubParsersAction) -> None:
    hl7 = sub.add_parser("hl7", help="HL7 v2 tools")
    hl7_sub = hl7.add_subparsers(dest="hl7_command", required=True)
    sender = hl7_sub.add_parser("send", help="send the messages in FILE over MLLP and print each ACK")
    sender.add_argument("file", help="a file of one or more ER7 messages")
    sender.add_argument("--host", default="127.0.0.1")
    sender.add_argument("--port", type=int, default=DEFAULT_MLLP_PORT)
    sender.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK")
    sender.add_argument("-v", "--verbose", action="store_true", help="print each ACK in full")
    sender.set_defaults(func=send)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: ehr-sandbox hl7 send FILE")
