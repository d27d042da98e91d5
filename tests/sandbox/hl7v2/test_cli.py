"""``ehr-sandbox hl7 send FILE``: a file of messages sent over MLLP, one line per ACK, non-zero exit on rejections."""

from __future__ import annotations

from pathlib import Path

from sandbox.cli import main
from tests.sandbox.hl7v2.conftest import adt


def test_send_prints_each_ack_and_exits_zero_when_all_are_accepted(mllp_port, tmp_path: Path, capsys):
    path = tmp_path / "messages.hl7"
    path.write_text((adt("A04", "F1") + adt("A08", "F2", family="Dough")).replace("\r", "\n"))
    assert main(["hl7", "send", str(path), "--port", str(mllp_port)]) == 0
    assert capsys.readouterr().out.splitlines() == ["F1: AA", "F2: AA"]


def test_send_exits_non_zero_when_a_message_is_rejected(mllp_port, tmp_path: Path, capsys):
    path = tmp_path / "bad.hl7"
    path.write_text(adt("A04", "B1", sandbox="nowhere"))
    assert main(["hl7", "send", str(path), "--port", str(mllp_port)]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("B1: AR There is no sandbox 'nowhere'")
    assert "1 of 1 messages were not accepted" in captured.err


def test_a_file_that_is_not_hl7_is_refused_before_connecting(tmp_path: Path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    assert main(["hl7", "send", str(path), "--port", "1"]) == 2
    assert "does not start with an MSH segment" in capsys.readouterr().err
