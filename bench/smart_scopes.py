"""What SMART scope enforcement costs: reads and searches with the admin token and with SMART tokens.

``python -m bench.smart_scopes [--patients N] [--rounds N]`` prints one JSON line.

An in-process app (SQLite in a temporary directory, requests through Starlette's TestClient, so the figures
include the HTTP stack but no socket) holds ``--patients`` patients with ``--observations`` observations
each (half vital signs, half labs).  One patient's resources are read by id and searched, alternately with
the admin token (no scopes), a ``patient/*.rs`` token and a ``patient/Observation.rs?category=vital-signs``
token, ``--rounds`` times each; the medians are reported.  A scoped read runs one extra search (the
resource by ``_id`` under the token's restriction); a scoped search carries the restriction in its SQL.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import secrets
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*httpx2.*")

from fastapi.testclient import TestClient  # noqa: E402

from sandbox.app import create_app  # noqa: E402
from sandbox.config import Settings  # noqa: E402

ADMIN = {"Authorization": "Bearer bench-admin"}
REDIRECT = "https://bench.example.org/cb"


def _bundle(patients: int, observations: int) -> dict[str, Any]:
    entries = []
    for p in range(patients):
        pid = f"p{p}"
        entries.append(
            {"resource": {"resourceType": "Patient", "id": pid}, "request": {"method": "PUT", "url": f"Patient/{pid}"}}
        )
        for o in range(observations):
            category = "vital-signs" if o % 2 == 0 else "laboratory"
            oid = f"o{p}-{o}"
            resource = {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}
                        ]
                    }
                ],
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{pid}"},
            }
            entries.append({"resource": resource, "request": {"method": "PUT", "url": f"Observation/{oid}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _token(client: TestClient, scope: str) -> dict[str, str]:
    launch = client.post(
        "/admin/launches", json={"client_id": "bench", "sandbox": "default", "patient": "p0"}, headers=ADMIN
    ).json()["launch"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": "bench",
        "redirect_uri": REDIRECT,
        "scope": f"launch {scope}",
        "state": "s",
        "aud": "http://testserver/fhir",
        "launch": launch,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    location = client.get("/auth/authorize", params=params, follow_redirects=False).headers["location"]
    code = location.split("code=")[1].split("&")[0]
    token = client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "bench",
            "code_verifier": verifier,
        },
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _median_ms(run: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--observations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}", admin_token="bench-admin", data_dir=Path(tmp)
        )
        with TestClient(create_app(settings)) as client:
            loaded = client.post("/fhir", json=_bundle(args.patients, args.observations), headers=ADMIN)
            assert loaded.status_code == 200, loaded.text
            client.post(
                "/admin/clients",
                json={
                    "client_id": "bench",
                    "redirect_uris": [REDIRECT],
                    "public": True,
                    "scopes": "launch patient/*.rs",
                    "auto_approve": True,
                },
                headers=ADMIN,
            )
            callers = {
                "admin": ADMIN,
                "patient_rs": _token(client, "patient/*.rs"),
                "vital_signs_filter": _token(client, "patient/Observation.rs?category=vital-signs"),
            }
            figures: dict[str, Any] = {}
            for name, headers in callers.items():

                def read(h: dict[str, str] = headers) -> None:
                    assert client.get("/fhir/Observation/o0-0", headers=h).status_code == 200

                def search(h: dict[str, str] = headers) -> None:
                    assert client.get("/fhir/Observation?subject=Patient/p0", headers=h).status_code == 200

                figures[name] = {"read_ms": _median_ms(read, args.rounds), "search_ms": _median_ms(search, args.rounds)}
    print(
        json.dumps(
            {
                "bench": "smart_scopes",
                "backend": "sqlite",
                "patients": args.patients,
                "observations_per_patient": args.observations,
                "rounds": args.rounds,
                "median": figures,
                "machine": platform.machine(),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
