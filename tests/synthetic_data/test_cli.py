"""``ehr-sandbox generate`` and ``ehr-sandbox load``: the output layout, determinism, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy import select

from sandbox.cli import main
from sandbox.fhir.validation import validate
from sandbox.store.database import Database
from sandbox.store.sandboxes import create_sandbox
from sandbox.store.schema import resources
from tests.synthetic_data.references import all_references


def generate(out: Path, *extra: str, patients: int = 5, seed: int = 3) -> int:
    return main(["generate", "--patients", str(patients), "--seed", str(seed), "--out", str(out), "--quiet", *extra])


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_writes_bundles_ndjson_and_hl7v2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate(tmp_path / "out") == 0
    assert "wrote 5 patients" in capsys.readouterr().out
    out = tmp_path / "out"
    bundles = sorted((out / "fhir").glob("*.json"))
    assert [b.name for b in bundles] == ["directory.json"] + [f"patient-00000{n}.json" for n in range(1, 6)]
    assert all(json.loads(b.read_bytes())["type"] == "transaction" for b in bundles)
    assert len(list((out / "hl7v2").glob("*-adt.hl7"))) == 5 and len(list((out / "hl7v2").glob("*-oru.hl7"))) == 5
    ndjson = {p.stem: p for p in (out / "ndjson").glob("*.ndjson")}
    assert {"Patient", "Encounter", "Observation", "Condition", "Practitioner", "Organization"} <= set(ndjson)
    patients = [json.loads(line) for line in ndjson["Patient"].read_text().splitlines()]
    assert len(patients) == 5


def test_ndjson_resources_validate_and_refer_by_type_and_id(tmp_path: Path) -> None:
    generate(tmp_path)
    known = set()
    lines = []
    for path in (tmp_path / "ndjson").glob("*.ndjson"):
        for line in path.read_text().splitlines():
            resource = validate(json.loads(line))
            assert path.stem == resource["resourceType"]
            known.add(f"{resource['resourceType']}/{resource['id']}")
            lines.append(line)
    for line in lines:
        for reference in all_references(json.loads(line)):
            assert reference in known, reference


def test_hl7v2_messages_pass_strict_v251_validation(tmp_path: Path) -> None:
    generate(tmp_path, patients=25)  # enough for long names and every kind of result to turn up
    for path in sorted((tmp_path / "hl7v2").glob("*.hl7")):
        text = path.read_bytes().decode()
        assert text.endswith("\r") and "\n" not in text
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
        kind = "ADT^A04^ADT_A01" if path.name.endswith("-adt.hl7") else "ORU^R01^ORU_R01"
        assert text.split("\r")[0].split("|")[8] == kind


def test_hl7v2_and_fhir_describe_the_same_patient(tmp_path: Path) -> None:
    generate(tmp_path)
    bundle = json.loads((tmp_path / "fhir" / "patient-000005.json").read_bytes())
    patient = bundle["entry"][0]["resource"]
    pid = next(
        s for s in (tmp_path / "hl7v2" / "patient-000005-adt.hl7").read_bytes().decode().split("\r") if s[:3] == "PID"
    )
    fields = pid.split("|")
    assert fields[3].split("^")[0] == patient["identifier"][0]["value"]
    assert fields[5].split("^")[:2] == [patient["name"][0]["family"], patient["name"][0]["given"][0]]
    assert fields[7] == patient["birthDate"].replace("-", "")


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    generate(tmp_path / "c", seed=4)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert tree(tmp_path / "a") != tree(tmp_path / "c")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patients", "-3"], "--patients must be 0 or more"),
        (["--patients", "2", "--seed", "-1"], "--seed must be 0 or more"),
        (["--patients", "2", "--today", "yesterday"], "--today must be a date"),
        (["--patients", "2", "--years", "0"], "history_years"),
    ],
)
def test_generate_refuses_bad_options_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["generate", *args, "--out", str(tmp_path / "x"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_generate_refuses_an_output_folder_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert generate(blocker / "out") != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("ehr-sandbox: cannot write to") and len(err.splitlines()) == 1


def test_load_refuses_a_missing_path_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert main(["load", str(tmp_path / "nowhere"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1


def test_load_refuses_an_unknown_sandbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    generate(tmp_path / "out", patients=1)
    assert main(["load", str(tmp_path / "out"), "--sandbox", "nope", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert "there is no sandbox 'nope'" in err and len(err.splitlines()) == 1


def test_load_refuses_a_baseline_a_sandbox_stands_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    generate(tmp_path / "out", patients=1)
    assert main(["load", str(tmp_path / "out" / "fhir" / "directory.json"), "--baseline", "b1", "--quiet"]) == 0
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with db.write() as conn:
        create_sandbox(conn, "Ward 4", "b1", sandbox_id="ward-4")
    db.dispose()
    capsys.readouterr()
    assert main(["load", str(tmp_path / "out"), "--baseline", "b1", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert "in use" in err and len(err.splitlines()) == 1


def test_generate_then_load_into_a_new_baseline(
    tmp_path: Path, db: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", db.url)
    generate(tmp_path / "out", patients=2, seed=9)
    capsys.readouterr()
    assert main(["load", str(tmp_path / "out"), "--baseline", "course-1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "created baseline course-1" in out and "rejected 0" in out
    loaded = int(out.split("loaded ")[1].split(" ")[0].replace(",", ""))
    written = sum(len(json.loads(p.read_bytes())["entry"]) for p in (tmp_path / "out" / "fhir").glob("*.json"))
    assert loaded == written


BAD_BUNDLE = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "resource": {"resourceType": "Patient", "id": "bad-p", "gender": "female"},
            "request": {"method": "PUT", "url": "Patient/bad-p"},
        },
        {
            "resource": {"resourceType": "Patient", "id": "bad-q", "gender": "robot"},
            "request": {"method": "PUT", "url": "Patient/bad-q"},
        },
    ],
}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_load_reports_a_bad_bundle_in_one_line_and_loads_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", url)
    generate(tmp_path / "out", patients=2, seed=9)
    (tmp_path / "out" / "fhir" / "patient-000001b.json").write_text(json.dumps(BAD_BUNDLE))
    capsys.readouterr()
    assert main(["load", str(tmp_path / "out"), "--baseline", "b1", "--quiet", "--workers", workers]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "rejected 1" in out
    [line] = [line for line in out if "patient-000001b.json" in line]
    assert "Bundle.entry[1]" in line and "'robot' is not a valid code" in line
    db = Database(url)
    with db.read() as conn:
        ids = set(conn.execute(select(resources.c.id).where(resources.c.layer_id == "b1")).scalars())
    db.dispose()
    assert {"bad-p", "bad-q"}.isdisjoint(ids) and len(ids) > 100


def test_load_of_nothing_but_a_bad_bundle_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    (tmp_path / "bad.json").write_text(json.dumps(BAD_BUNDLE))
    assert main(["load", str(tmp_path / "bad.json"), "--quiet"]) != 0
    captured = capsys.readouterr()
    assert "rejected 1" in captured.out
    err = captured.err.strip()
    assert "nothing was loaded" in err and len(err.splitlines()) == 1


def test_load_refuses_a_negative_number_of_workers_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    (tmp_path / "bad.json").write_text(json.dumps(BAD_BUNDLE))
    assert main(["load", str(tmp_path / "bad.json"), "--workers", "-1", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--workers must be 0 or more" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "db.sqlite").exists()
