"""Fixtures for CDS Hooks: the app with the training cases in a sandbox, and a vendor's CDS service on a real
local port (uvicorn in a thread) whose behaviour each test picks."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sandbox.cdshooks.hooks import HookUser
from sandbox.store.sandboxes import create_sandbox
from tasks.cases import load_case_baseline

ROOT = "http://testserver"
SANDBOX = "ward"
CHEST_PAIN = "chest-pain-cardiology"
DIABETES = "diabetes-uncontrolled"
CHILD = "pediatric-asthma"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ANA = HookUser("ana")


def draft(code: str, display: str, patient: str = CHEST_PAIN, rid: str = "draft-1") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


AMOXICILLIN = draft("308182", "Amoxicillin 250 MG Oral Capsule")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def cases_app(app: Any) -> Any:
    """The app with a sandbox ``ward`` made from a baseline holding the built-in training cases."""
    load_case_baseline(app.state.db, app.state.fhir, "Training cases", baseline_id="cases")
    with app.state.db.write() as conn:
        create_sandbox(conn, "Ward", "cases", sandbox_id=SANDBOX)
    return app


class VendorService:
    """A vendor's CDS service: discovery lists what ``services`` holds; each service answers as ``behaviour``
    says (``card``, ``garbage``, ``500``, ``slow``, ``drip``, ``huge``, ``bad-suggestion``,
    ``write-other-patient``)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], Any]] = []
        self.discovery: Any = None
        self.behaviour: dict[str, str] = {}
        self.port = 0
        self.app = FastAPI()
        self._routes()

    def reset(self) -> None:
        self.received.clear()
        self.behaviour = {"greeter": "card"}
        self.discovery = {
            "services": [
                {
                    "id": "greeter",
                    "hook": "patient-view",
                    "title": "Greeter",
                    "description": "Says hello",
                    "prefetch": {
                        "patient": "Patient/{{context.patientId}}",
                        "allergies": "AllergyIntolerance?patient={{context.patientId}}",
                        "nothing": "Observation?patient={{context.patientId}}&code=http://loinc.org|0000-0",
                        "user": "PractitionerRole?_id={{userPractitionerRoleId}}",
                    },
                }
            ]
        }

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _routes(self) -> None:
        app = self.app

        @app.get("/cds-services")
        async def discovery(request: Request) -> Response:
            self.received.append(("discovery", dict(request.headers), None))
            if self.discovery == "garbage":
                return Response(b"<html>not json</html>", media_type="text/html")
            return JSONResponse(self.discovery)

        @app.post("/cds-services/{service_id}")
        async def call(service_id: str, request: Request) -> Response:
            body = await request.json()
            self.received.append((service_id, dict(request.headers), body))
            behaviour = self.behaviour.get(service_id, "card")
            if behaviour == "garbage":
                return Response(b"\x00\xffnot json at all", media_type="application/json")
            if behaviour == "500":
                return JSONResponse({"error": "boom"}, 500)
            if behaviour == "slow":
                await asyncio.sleep(3)
            if behaviour == "huge":
                return JSONResponse({"cards": [], "padding": "x" * (3 * 1024 * 1024)})
            if behaviour == "drip":  # each byte in time, the whole answer not

                async def drip() -> AsyncIterator[bytes]:
                    for _ in range(40):
                        await asyncio.sleep(0.1)
                        yield b" "

                return StreamingResponse(drip(), media_type="application/json")
            card: dict[str, Any] = {
                "uuid": "card-1",
                "summary": "Hello from the vendor",
                "indicator": "info",
                "source": {"label": "Vendor"},
                "links": [
                    {"label": "Open app", "url": "https://app.example/launch", "type": "smart", "appContext": "x"}
                ],
            }
            if behaviour == "bad-suggestion":
                card["selectionBehavior"] = "any"
                card["suggestions"] = [{"label": "Do it", "actions": [{"type": "upsert", "description": "?"}]}]
            if behaviour == "write-other-patient":
                card["selectionBehavior"] = "any"
                other = {"resourceType": "Condition", "subject": {"reference": f"Patient/{DIABETES}"}}
                other["code"] = {"text": "Hypertension"}
                card["suggestions"] = [
                    {
                        "label": "Add",
                        "uuid": "s-1",
                        "actions": [{"type": "create", "description": "x", "resource": other}],
                    }
                ]
            return JSONResponse({"cards": [card, {"summary": "no indicator", "source": {"label": "Vendor"}}]})

        @app.post("/cds-services/{service_id}/feedback")
        async def feedback(service_id: str, request: Request) -> Response:
            self.received.append((f"{service_id}/feedback", dict(request.headers), await request.json()))
            return JSONResponse({})


@pytest.fixture(scope="session")
def vendor_server() -> Iterator[VendorService]:
    service = VendorService()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    service.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(service.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield service
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def vendor(vendor_server: VendorService) -> VendorService:
    vendor_server.reset()
    return vendor_server
