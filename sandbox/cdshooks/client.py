"""The CDS Hooks client: what the chart calls when a chart opens, an order is drafted or signed, and when the
user accepts a suggestion or overrides a card.

``CdsClient`` (``app.state.cds``) is the service layer; the web UI calls it directly, not over HTTP:

- ``await cds.patient_view(sandbox_id, user, patient_id, encounter_id, root=...)``
- ``await cds.order_select(sandbox_id, user, patient_id, encounter_id, draft_orders, selections, root=...)``
- ``await cds.order_sign(sandbox_id, user, patient_id, encounter_id, draft_orders, root=...)``
- ``await cds.accept(sandbox_id, user, call_id, card_key, suggestion_ids, root=...)``
- ``await cds.override(sandbox_id, user, call_id, card_key, reason_code, comment, root=...)``

A hook call goes to every service of the sandbox registered for that hook, concurrently (httpx async),
each request signed with our JWT and carrying ``hookInstance`` (one per firing), ``hook``, ``fhirServer``
(the sandbox's FHIR base), ``fhirAuthorization`` (only when a token issuer is given), ``context`` and the
service's prefetch, filled from the sandbox.  A service that times out, fails or answers garbage is
logged and gives no cards; the chart always gets an answer.  The built-in demo services are called
in-process (an ASGI transport) by exactly the same code as a vendor's service over the network.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from sandbox.cdshooks import log
from sandbox.cdshooks.cards import CardError, check_response, find_suggestion
from sandbox.cdshooks.demo_services import demo_app
from sandbox.cdshooks.discovery import DiscoveryError, parse_discovery
from sandbox.cdshooks.hooks import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW, HookUser, build_context, token_values
from sandbox.cdshooks.jwt import SigningKey
from sandbox.cdshooks.prefetch import run_prefetch
from sandbox.cdshooks.services import Registration, ServiceDef, check_discovery_url, for_hook, get, replace_services
from sandbox.cdshooks.services import add as add_registration
from sandbox.cdshooks.suggestions import apply_actions
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.urls import fhir_base_at

DEFAULT_TIMEOUT = 5.0  # seconds; the spec expects answers in about half a second
_MAX_RESPONSE = 2 * 1024 * 1024
_log = logging.getLogger("ehr_sandbox.cdshooks")


@dataclass(frozen=True)
class TokenRequest:
    """What a token issuer is asked for: a short-lived token for one service, user and patient."""

    sandbox_id: str
    registration_id: str
    service_id: str
    user: HookUser
    patient_id: str
    scope: str  # SMART v2 read scopes for the resource types the service's prefetch reads


# Returns the ``fhirAuthorization`` object (access_token, token_type, expires_in, scope, subject) or None.
TokenIssuer = Callable[[TokenRequest], dict[str, Any] | None]


class CdsError(Exception):
    """Something the chart asked that cannot be done (no such card, a suggestion that cannot be applied)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Exchanged:
    """One HTTP exchange with a service, as the log records it."""

    url: str
    status: str
    duration_ms: float
    http_status: int | None = None
    body: str | None = None
    error: str | None = None
    data: Any = None  # the parsed JSON body, when it was JSON


@dataclass
class ServiceCall:
    call_id: str
    registration_id: str
    service_id: str
    status: str
    cards: list[dict[str, Any]]
    error: str | None


@dataclass
class HookResult:
    hook: str
    hook_instance: str
    calls: list[ServiceCall] = field(default_factory=list)

    @property
    def cards(self) -> list[dict[str, Any]]:
        """Every card of every service, critical first; each names its ``call`` and ``key`` for accept/override."""
        order = {"critical": 0, "warning": 1, "info": 2}
        found = [
            {**card, "call": c.call_id, "registration": c.registration_id, "service": c.service_id}
            for c in self.calls
            for card in c.cards
        ]
        return sorted(found, key=lambda card: order[card["indicator"]])

    def to_json(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "hookInstance": self.hook_instance,
            "cards": self.cards,
            "calls": [
                {"call": c.call_id, "registration": c.registration_id, "service": c.service_id, "status": c.status}
                | ({"error": c.error} if c.error else {})
                for c in self.calls
            ],
        }


@dataclass
class _Planned:
    registration: Registration
    service: ServiceDef
    url: str
    body: dict[str, Any]
    notes: list[str]


class CdsClient:
    def __init__(
        self,
        db: Database,
        fhir: Interactions,
        views: Views,
        *,
        token_issuer: TokenIssuer | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        local: Any = None,
    ) -> None:
        self.db = db
        self.fhir = fhir
        self.views = views
        self.signer = SigningKey(db)
        self.token_issuer = token_issuer
        self.timeout = timeout
        self._local = local or demo_app()  # the built-in services' ASGI app

    # ---- the hooks ---------------------------------------------------------------------------------------

    async def patient_view(
        self, sandbox_id: str, user: HookUser, patient_id: str, encounter_id: str | None = None, *, root: str
    ) -> HookResult:
        context = build_context(PATIENT_VIEW, user, patient_id, encounter_id)
        return await self.call(sandbox_id, PATIENT_VIEW, context, user, root=root)

    async def order_select(
        self,
        sandbox_id: str,
        user: HookUser,
        patient_id: str,
        encounter_id: str | None,
        draft_orders: list[dict[str, Any]],
        selections: list[str] | None = None,
        *,
        root: str,
    ) -> HookResult:
        context = build_context(
            ORDER_SELECT, user, patient_id, encounter_id, draft_orders=draft_orders, selections=selections
        )
        return await self.call(sandbox_id, ORDER_SELECT, context, user, root=root)

    async def order_sign(
        self,
        sandbox_id: str,
        user: HookUser,
        patient_id: str,
        encounter_id: str | None,
        draft_orders: list[dict[str, Any]],
        *,
        root: str,
    ) -> HookResult:
        context = build_context(ORDER_SIGN, user, patient_id, encounter_id, draft_orders=draft_orders)
        return await self.call(sandbox_id, ORDER_SIGN, context, user, root=root)

    async def call(
        self, sandbox_id: str, hook: str, context: dict[str, Any], user: HookUser, *, root: str
    ) -> HookResult:
        hook_instance = str(uuid.uuid4())
        planned = await run_in_threadpool(self._plan, sandbox_id, hook, hook_instance, context, user, root)
        exchanged = await asyncio.gather(*(self._post(p.registration, p.url, p.body, root) for p in planned))
        result = HookResult(hook, hook_instance)
        records = []
        for plan, ex in zip(planned, exchanged, strict=True):
            cards: list[dict[str, Any]] = []
            problems = list(plan.notes)
            status = ex.status
            if status == log.OK:
                checked = check_response(ex.data)
                cards = checked.cards
                problems += checked.problems
                if not cards and checked.problems and not isinstance((ex.data or {}).get("cards"), list):
                    status = log.INVALID
            error = "; ".join(filter(None, [ex.error, *problems])) or None
            call_id = log.new_id()
            result.calls.append(ServiceCall(call_id, plan.registration.id, plan.service.id, status, cards, error))
            records.append((call_id, plan, ex, status, error, cards))
        await run_in_threadpool(self._log_calls, sandbox_id, hook, hook_instance, context, user, records)
        return result

    def _plan(
        self, sandbox_id: str, hook: str, hook_instance: str, context: dict[str, Any], user: HookUser, root: str
    ) -> list[_Planned]:
        view = self.views.get(sandbox_id)
        base = fhir_base_at(root, sandbox_id)
        tokens = token_values(context, user)
        planned = []
        with self.db.read() as conn:
            targets = for_hook(conn, sandbox_id, hook)
            for registration, service in targets:
                fetched = run_prefetch(conn, self.fhir, view, base, service.prefetch or {}, tokens)
                body: dict[str, Any] = {
                    "hookInstance": hook_instance,
                    "hook": hook,
                    "fhirServer": base,
                    "context": context,
                }
                if fetched.values:
                    body["prefetch"] = fetched.values
                notes = [f"prefetch '{k}' not sent: {why}" for k, why in fetched.skipped.items()]
                planned.append(_Planned(registration, service, registration.endpoint(root, service.id), body, notes))
        for plan in planned:  # tokens after the read transaction: an issuer may write (it records its grants)
            authorization = self._authorization(sandbox_id, plan, user, str(context["patientId"]))
            if authorization:
                plan.body["fhirAuthorization"] = authorization
        return planned

    def _authorization(self, sandbox_id: str, plan: _Planned, user: HookUser, patient_id: str) -> dict[str, Any] | None:
        if self.token_issuer is None:
            return None
        types = sorted({t.split("?")[0].split("/")[0] for t in (plan.service.prefetch or {}).values()} - {""})
        scope = " ".join(f"patient/{t}.rs" for t in types) or "patient/Patient.rs"
        request = TokenRequest(sandbox_id, plan.registration.id, plan.service.id, user, patient_id, scope)
        try:
            return self.token_issuer(request)
        except Exception as exc:  # a failing issuer costs the service its token, not the chart its cards
            plan.notes.append(f"no fhirAuthorization: the token issuer failed ({type(exc).__name__}: {exc})")
            return None

    def _log_calls(
        self,
        sandbox_id: str,
        hook: str,
        hook_instance: str,
        context: dict[str, Any],
        user: HookUser,
        records: list[tuple[str, _Planned, Exchanged, str, str | None, list[dict[str, Any]]]],
    ) -> None:
        layer = self.views.get(sandbox_id).overlay
        with self.db.write() as conn:
            for call_id, plan, ex, status, error, cards in records:
                log.record_call(
                    conn,
                    layer,
                    call_id=call_id,
                    kind="hook",
                    url=plan.url,
                    status=status,
                    duration_ms=ex.duration_ms,
                    hook=hook,
                    hook_instance=hook_instance,
                    registration_id=plan.registration.id,
                    service_id=plan.service.id,
                    actor=user.actor_id,
                    patient_id=str(context["patientId"]),
                    http_status=ex.http_status,
                    error=error,
                    request=_masked(plan.body),
                    response=ex.body,
                    cards=cards,
                )

    # ---- HTTP ----------------------------------------------------------------------------------------------

    async def _post(self, registration: Registration, url: str, body: dict[str, Any], root: str) -> Exchanged:
        return await self._exchange("POST", registration.builtin, url, root, body)

    async def _exchange(self, method: str, builtin: bool, url: str, root: str, body: Any = None) -> Exchanged:
        """One signed request; never raises: timeouts, refusals and bad answers come back as a status.

        The timeout covers the whole exchange (a service dripping bytes cannot hold the chart), and an
        answer is read only up to 2 MiB."""
        started = time.perf_counter()
        # A demo service that fails answers 500 like any server would, rather than raising into the chart.
        transport = httpx.ASGITransport(app=self._local, raise_app_exceptions=False) if builtin else None
        too_big = False
        try:
            if self.signer.loaded:  # signing is a fraction of a millisecond; only loading the key reads the database
                token = self.signer.sign(issuer=root, audience=url)
            else:
                token = await run_in_threadpool(self.signer.sign, issuer=root, audience=url)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            content = orjson.dumps(body) if body is not None else None
            if content is not None:
                headers["Content-Type"] = "application/json"
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(transport=transport, timeout=self.timeout, follow_redirects=False) as http,
                http.stream(method, url, headers=headers, content=content) as response,
            ):
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > _MAX_RESPONSE:
                        too_big = True
                        break
        except (httpx.TimeoutException, TimeoutError):
            return Exchanged(url, log.TIMEOUT, _ms(started), error=f"No answer within {self.timeout:g} s")
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return Exchanged(url, log.UNREACHABLE, _ms(started), error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # whatever else goes wrong with one service must not take the chart down
            _log.exception("CDS Hooks exchange with %s", url)
            return Exchanged(url, log.ERROR, _ms(started), error=f"{type(exc).__name__}: {exc}")
        raw = raw[:_MAX_RESPONSE]
        ex = Exchanged(url, log.OK, _ms(started), response.status_code, raw.decode("utf-8", "replace"))
        if not 200 <= response.status_code < 300:
            ex.status, ex.error = log.HTTP_ERROR, f"HTTP {response.status_code}"
        elif too_big:
            ex.status, ex.error = log.INVALID, f"The answer is larger than {_MAX_RESPONSE // (1024 * 1024)} MiB"
        else:
            try:
                ex.data = orjson.loads(raw) if raw.strip() else None
            except orjson.JSONDecodeError:
                ex.status, ex.error = log.INVALID, "The answer is not JSON"
        return ex

    # ---- registering services ------------------------------------------------------------------------------

    async def register(
        self, sandbox_id: str, discovery_url: str, *, root: str, registration_id: str | None = None
    ) -> Registration:
        """Read the discovery document and register its services for the sandbox (admin errors: 400/409/502)."""
        url = check_discovery_url(discovery_url)
        services = await self._discover(sandbox_id, url, root)

        def save() -> Registration:
            with self.db.write() as conn:
                return add_registration(conn, sandbox_id, url, services, registration_id=registration_id)

        return await run_in_threadpool(save)

    async def refresh(self, sandbox_id: str, registration_id: str, *, root: str) -> Registration:
        def find() -> Registration:
            with self.db.read() as conn:
                return get(conn, sandbox_id, registration_id)

        registration = await run_in_threadpool(find)
        if registration.builtin:
            return registration  # the built-in services are this code; nothing to re-read
        services = await self._discover(sandbox_id, registration.discovery_url, root)

        def save() -> Registration:
            with self.db.write() as conn:
                replace_services(conn, sandbox_id, registration_id, services)
                return get(conn, sandbox_id, registration_id)

        return await run_in_threadpool(save)

    async def _discover(self, sandbox_id: str, url: str, root: str) -> list[ServiceDef]:
        layer = await run_in_threadpool(lambda: self.views.get(sandbox_id).overlay)
        ex = await self._exchange("GET", False, url, root)
        error, services = ex.error, []
        if ex.status == log.OK:
            try:
                services = parse_discovery(ex.data)
            except DiscoveryError as exc:
                ex.status, error = log.INVALID, exc.message

        def record() -> None:
            with self.db.write() as conn:
                log.record_call(
                    conn,
                    layer,
                    kind="discovery",
                    url=url,
                    status=ex.status,
                    duration_ms=ex.duration_ms,
                    http_status=ex.http_status,
                    error=error,
                    response=ex.body,
                )

        await run_in_threadpool(record)
        if ex.status != log.OK:
            raise DiscoveryError(f"Discovery at {url} failed: {error}")
        return services

    # ---- what the user did with a card ---------------------------------------------------------------------

    async def accept(
        self,
        sandbox_id: str,
        user: HookUser,
        call_id: str,
        card_key: str,
        suggestion_ids: list[str],
        *,
        root: str,
    ) -> log.Decision:
        """Apply the chosen suggestions' actions (one transaction, attributed to the user, route ``cds-hooks``),
        record the decision, and send the service its feedback.  ``CdsError`` (nothing written) when the card
        or a suggestion is unknown, already decided, or an action cannot be applied."""

        def work() -> tuple[log.Decision, log.Call, dict[str, Any]]:
            view = self.views.get(sandbox_id)
            with self.db.write() as conn:
                call, card = self._card(conn, view.overlay, call_id, card_key, user)
                if not suggestion_ids:
                    raise CdsError(400, "Accepting a card means choosing at least one of its suggestions")
                if card.get("selectionBehavior") == "at-most-one" and len(set(suggestion_ids)) > 1:
                    raise CdsError(400, "This card allows at most one suggestion to be accepted")
                try:
                    chosen = [find_suggestion(card, ref) for ref in dict.fromkeys(suggestion_ids)]
                    actions = [a for _, s in chosen for a in s.get("actions", [])]
                    written = apply_actions(conn, self.fhir, view, actions, user.actor_id, call.patient_id)
                except CardError as exc:
                    raise CdsError(422, str(exc)) from None
                except FhirError as exc:
                    detail = "; ".join(i.diagnostics for i in exc.issues) or str(exc)
                    status = exc.status if exc.status in (409, 412) else 422  # a version conflict stays one
                    raise CdsError(status, f"The suggestion cannot be applied: {detail}") from None
                ids = [s.get("uuid", str(n)) for n, s in chosen]
                decision = log.record_decision(
                    conn,
                    view.overlay,
                    call,
                    card,
                    outcome=log.ACCEPTED,
                    suggestions=ids,
                    resources=written,
                    actor=user.actor_id,
                )
                return decision, call, card

        decision, call, card = await run_in_threadpool(work)
        item: dict[str, Any] = {"card": card.get("uuid"), "outcome": log.ACCEPTED}
        with_uuid = [
            {"id": s} for s in decision.suggestions if any(x.get("uuid") == s for x in card.get("suggestions", []))
        ]
        if with_uuid:
            item["acceptedSuggestions"] = with_uuid
        return await self._feedback(sandbox_id, decision, call, card, item if with_uuid else None, root)

    async def override(
        self,
        sandbox_id: str,
        user: HookUser,
        call_id: str,
        card_key: str,
        reason_code: str | None = None,
        comment: str | None = None,
        *,
        root: str,
    ) -> log.Decision:
        """Dismiss the card, with one of its override reasons (by code) and/or a comment; feedback follows."""

        def work() -> tuple[log.Decision, log.Call, dict[str, Any]]:
            view = self.views.get(sandbox_id)
            with self.db.write() as conn:
                call, card = self._card(conn, view.overlay, call_id, card_key, user)
                reason: dict[str, Any] = {}
                if reason_code:
                    coding = next((r for r in card.get("overrideReasons", []) if r.get("code") == reason_code), None)
                    if coding is None:
                        offered = ", ".join(str(r.get("code")) for r in card.get("overrideReasons", [])) or "none"
                        raise CdsError(400, f"'{reason_code}' is not one of this card's override reasons ({offered})")
                    reason["reason"] = coding
                if comment is not None:
                    if not isinstance(comment, str) or len(comment) > 2000:
                        raise CdsError(400, "The comment is text of at most 2000 characters")
                    if comment.strip():
                        reason["userComment"] = comment.strip()
                decision = log.record_decision(
                    conn,
                    view.overlay,
                    call,
                    card,
                    outcome=log.OVERRIDDEN,
                    override_reason=reason or None,
                    actor=user.actor_id,
                )
                return decision, call, card

        decision, call, card = await run_in_threadpool(work)
        item: dict[str, Any] = {"card": card.get("uuid"), "outcome": log.OVERRIDDEN}
        if decision.override_reason:
            item["overrideReason"] = decision.override_reason
        return await self._feedback(sandbox_id, decision, call, card, item, root)

    def _card(
        self, conn: Any, layer: str, call_id: str, card_key: str, user: HookUser
    ) -> tuple[log.Call, dict[str, Any]]:
        call = log.get_call(conn, layer, call_id)
        if call is None or call.kind != "hook":
            raise CdsError(404, f"No hook call '{call_id}' in this sandbox")
        if call.actor != user.actor_id:
            raise CdsError(403, "Only the user the card was shown to may act on it")
        card = call.card(card_key)
        if card is None:
            raise CdsError(404, f"Hook call '{call_id}' has no card '{card_key}'")
        if any(d.card_key == card_key for d in log.decisions(conn, layer, call_id=call_id)):
            raise CdsError(409, "This card was accepted or overridden already")
        return call, card

    async def _feedback(
        self,
        sandbox_id: str,
        decision: log.Decision,
        call: log.Call,
        card: dict[str, Any],
        item: dict[str, Any] | None,
        root: str,
    ) -> log.Decision:
        """POST ``{service}/feedback`` when the card (and an accepted suggestion) has a uuid, as the spec says."""
        if item is None or not card.get("uuid"):
            outcome = "not-sent"
        else:
            item["outcomeTimestamp"] = instant_now()[0]
            url = call.url.rstrip("/") + "/feedback"
            body = {"feedback": [item]}
            ex = await self._exchange("POST", call.registration_id == "builtin", url, root, body)
            outcome = "sent" if ex.status == log.OK else "failed"

            def record() -> None:
                with self.db.write() as conn:
                    log.record_call(
                        conn,
                        decision.layer_id,
                        kind="feedback",
                        url=url,
                        status=ex.status,
                        duration_ms=ex.duration_ms,
                        hook=call.hook,
                        hook_instance=call.hook_instance,
                        registration_id=call.registration_id,
                        service_id=call.service_id,
                        actor=decision.actor,
                        patient_id=call.patient_id,
                        http_status=ex.http_status,
                        error=ex.error,
                        request=body,
                        response=ex.body,
                    )
                    log.set_feedback(conn, decision.layer_id, decision.id, outcome)

            await run_in_threadpool(record)
            return log.Decision(**{**decision.__dict__, "feedback": outcome})
        await run_in_threadpool(self._set_feedback, decision, outcome)
        return log.Decision(**{**decision.__dict__, "feedback": outcome})

    def _set_feedback(self, decision: log.Decision, outcome: str) -> None:
        with self.db.write() as conn:
            log.set_feedback(conn, decision.layer_id, decision.id, outcome)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _masked(body: dict[str, Any]) -> dict[str, Any]:
    """The request for the log: the FHIR access token is a credential, so the log keeps only its tail."""
    authorization = body.get("fhirAuthorization")
    if not isinstance(authorization, dict) or "access_token" not in authorization:
        return body
    token = str(authorization["access_token"])
    return {**body, "fhirAuthorization": {**authorization, "access_token": "..." + token[-4:]}}
