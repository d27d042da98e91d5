"""Decision support in the chart: the CDS Hooks cards a page shows, what the user does with them, and the gate
that keeps an order with an undecided critical card from being signed.

The hooks are called by ``app.state.cds`` (``sandbox.cdshooks.client.CdsClient``), the one CDS Hooks client;
this module turns what it logged into what a page shows.  A page names the hook calls whose cards it shows
(an order form's hidden ``cds_select`` and ``cds_sign`` fields; the chart, the newest patient-view), and the
cards are read back from the call log each time with what the user already did with them, so a card accepted
or overridden shows its outcome instead of its buttons on every page that shows it.

A user may act only on cards of their own hook calls for the patient at hand.  Decision support is an aid: a
service that fails, or a failure of ours while calling it, leaves a quiet notice and the chart working.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from markupsafe import Markup
from sqlalchemy import Connection
from starlette.datastructures import FormData

from sandbox.accounts.users import User
from sandbox.auth.authorize import practitioner_of
from sandbox.cdshooks import log
from sandbox.cdshooks.client import CdsError, HookResult
from sandbox.cdshooks.hooks import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW, HookUser
from sandbox.concurrency import run_in_threadpool
from web.chart.app_launch import LaunchableApp, app_for_link, launchable_apps
from web.chart.card_markdown import markdown_html

DECIDE = "cds_decide"  # the submit button's name: "accept:CALL:KEY[:SUGGESTION]" or "override:CALL:KEY"
LINK = "cds_link"  # a SMART link's button, posted to the chart's Launch app: "CALL:KEY:N", the card's Nth link
_INDICATORS = {"critical": (0, "Critical"), "warning": (1, "Warning"), "info": (2, "Info")}
_FAILED = {
    log.TIMEOUT: "did not answer in time",
    log.UNREACHABLE: "could not be reached",
    log.HTTP_ERROR: "answered with an error",
    log.INVALID: "sent an answer the chart cannot use",
    log.ERROR: "could not be called",
}
_log = logging.getLogger("ehr_sandbox.web.cds")


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    kind: str  # absolute; smart (a registered app, launched by the chart); unregistered (a SMART app we lack)
    client_id: str = ""
    ref: str = ""  # a smart link's "CALL:KEY:N": the launch finds the link's appContext by it


@dataclass(frozen=True)
class Suggestion:
    ref: str  # its uuid, or its position when it has none (what CdsClient.accept takes)
    label: str
    recommended: bool
    actions: tuple[str, ...]  # the actions' descriptions


@dataclass(frozen=True)
class ShownCard:
    call_id: str
    hook: str
    service: str
    card: dict[str, Any]
    links: tuple[Link, ...] = ()
    decision: log.Decision | None = None
    error: str = ""  # why the last accept or override of it was refused

    @property
    def key(self) -> str:
        return str(self.card["key"])

    @property
    def indicator(self) -> str:
        return str(self.card["indicator"])

    @property
    def indicator_label(self) -> str:
        return _INDICATORS[self.indicator][1]

    @property
    def summary(self) -> str:
        return str(self.card["summary"])

    @property
    def detail_html(self) -> Markup | None:
        detail = self.card.get("detail")
        return markdown_html(detail) if isinstance(detail, str) and detail.strip() else None

    @property
    def source_label(self) -> str:
        return str(self.card["source"]["label"])

    @property
    def source_url(self) -> str:
        return str(self.card["source"].get("url") or "")

    @property
    def suggestions(self) -> list[Suggestion]:
        return [
            Suggestion(
                str(s.get("uuid", n)),
                str(s["label"]),
                bool(s.get("isRecommended")),
                tuple(str(a.get("description", "")) for a in s.get("actions", [])),
            )
            for n, s in enumerate(self.card.get("suggestions") or [])
        ]

    @property
    def choose_many(self) -> bool:
        return self.card.get("selectionBehavior") == "any"

    @property
    def override_reasons(self) -> list[tuple[str, str]]:
        return [(str(r["code"]), str(r["display"])) for r in self.card.get("overrideReasons") or [] if r.get("code")]

    @property
    def undecided_critical(self) -> bool:
        return self.indicator == "critical" and self.decision is None

    @property
    def outcome(self) -> str:
        """What the user did with the card, in words (empty while undecided)."""
        d = self.decision
        if d is None:
            return ""
        if d.outcome == log.ACCEPTED:
            labels = {s.ref: s.label for s in self.suggestions}
            return "Accepted: " + "; ".join(labels.get(ref, ref) for ref in d.suggestions)
        given = d.override_reason or {}
        reason = str((given.get("reason") or {}).get("display") or "")
        comment = str(given.get("userComment") or "")
        if reason and comment:
            return f"Overridden: {reason} ({comment})"
        return f"Overridden: {reason or comment}" if reason or comment else "Overridden, no reason given"


@dataclass
class Cards:
    """The cards of some hook calls, critical first, and a notice for each service that did not answer."""

    cards: list[ShownCard] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    calls: list[log.Call] = field(default_factory=list)

    @property
    def call_ids(self) -> list[str]:
        return [c.id for c in self.calls]

    @property
    def field_value(self) -> str:
        """The hidden field that carries these calls to the page's next post."""
        return ",".join(self.call_ids)

    @property
    def undecided_critical(self) -> list[ShownCard]:
        return [c for c in self.cards if c.undecided_critical]

    def with_error(self, call_id: str, key: str, message: str) -> Cards:
        """The cards with ``message`` on the one it is about (a notice when that card is not among them)."""
        marked = [replace(c, error=message) if (c.call_id, c.key) == (call_id, key) else c for c in self.cards]
        if marked == self.cards:
            return Cards(marked, [*self.notices, message], self.calls)
        return Cards(marked, self.notices, self.calls)

    def __add__(self, other: Cards) -> Cards:
        merged = sorted([*self.cards, *other.cards], key=lambda c: _INDICATORS[c.indicator][0])
        return Cards(merged, [*self.notices, *other.notices], [*self.calls, *other.calls])


@dataclass(frozen=True)
class OrderCards:
    """Decision support on an order page: the draft's id (kept across the page's posts; the signed order gets it)
    and the cards of its order-select and order-sign calls, with a message about the last step."""

    draft_id: str
    selected: Cards = field(default_factory=Cards)
    signing: Cards = field(default_factory=Cards)
    message: str = ""
    alert: bool = False  # the message says the order was not signed

    @property
    def cards(self) -> Cards:
        return self.signing + self.selected

    def with_error(self, choice: Choice, message: str) -> OrderCards:
        if any((c.call_id, c.key) == (choice.call_id, choice.key) for c in self.signing.cards):
            return replace(self, signing=self.signing.with_error(choice.call_id, choice.key, message))
        return replace(self, selected=self.selected.with_error(choice.call_id, choice.key, message))


@dataclass(frozen=True)
class Choice:
    """An accept or override posted from a card (the button ``cds_decide`` and the card's own fields)."""

    action: str  # accept, override
    call_id: str
    key: str
    suggestions: tuple[str, ...] = ()
    reason: str | None = None
    comment: str = ""


def parse_choice(form: FormData) -> Choice | None:
    """The decision a post carries, or None when it carries none; ``ValueError`` for a malformed one."""
    raw = form.get(DECIDE)
    if raw is None:
        return None
    parts = str(raw).split(":", 3)
    if len(parts) < 3 or parts[0] not in ("accept", "override") or not parts[1] or not parts[2]:
        raise ValueError("That decision on a card cannot be read: reload the page and try again.")
    action, call_id, key = parts[:3]
    reason = str(form.get(f"cds_reason_{key}") or "").strip() or None
    comment = str(form.get(f"cds_comment_{key}") or "")
    if action == "accept":
        picked = (parts[3],) if len(parts) == 4 else tuple(str(v) for v in form.getlist(f"cds_pick_{key}"))
        return Choice(action, call_id, key, picked)
    return Choice(action, call_id, key, reason=reason, comment=comment)


def decided_text(shown: Cards, choice: Choice, decision: log.Decision) -> str:
    """What the user just did with a card, in words (for the page's "Saved" notice)."""
    card = next((c for c in shown.cards if (c.call_id, c.key) == (choice.call_id, choice.key)), None)
    return replace(card, decision=decision).outcome if card else decision.outcome


def call_ids(value: str | None) -> list[str]:
    """The hook calls a hidden field names (a few uuids, comma-separated); anything else is dropped."""
    return [v for v in (value or "").split(",") if 0 < len(v) <= 64][:20]


def touched(decision: log.Decision, reference: str) -> bool:
    """Whether the accepted suggestions wrote or deleted ``Type/id`` (e.g. removed the draft being ordered)."""
    return any("/".join(r.split("/")[:2]) == reference for r in decision.resources)


def comparable(orders: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Draft orders as the sign gate compares them: what the user decided on, not when it was built."""
    return [{k: v for k, v in o.items() if k not in ("meta", "authoredOn")} for o in orders]


class ChartCds:
    """Decision support for one user at one patient's chart in one sandbox."""

    def __init__(self, state: Any, sandbox_id: str, user: User, patient_id: str, root: str) -> None:
        self.state = state
        self.sandbox_id = sandbox_id
        self.user = user
        self.patient_id = patient_id
        self.root = root  # the server's public URL (sandbox.urls.public_root)
        self.actor = HookUser(user.id).actor_id

    # ---- firing the hooks ------------------------------------------------------------------------------

    async def patient_view(self, encounter_id: str | None) -> Cards:
        return await self._fire(
            PATIENT_VIEW,
            lambda u: self.state.cds.patient_view(self.sandbox_id, u, self.patient_id, encounter_id, root=self.root),
        )

    async def order_select(self, encounter_id: str | None, drafts: list[dict[str, Any]]) -> Cards:
        chosen = [f"{d['resourceType']}/{d['id']}" for d in drafts]
        return await self._fire(
            ORDER_SELECT,
            lambda u: self.state.cds.order_select(
                self.sandbox_id, u, self.patient_id, encounter_id, drafts, chosen, root=self.root
            ),
        )

    async def sign(
        self, encounter_id: str | None, drafts: list[dict[str, Any]], earlier: Cards, checked: Cards | None = None
    ) -> tuple[Cards, bool]:
        """The order-sign gate: ``(the cards, whether the orders may be written now)``.

        The first time, order-sign is called, and any card stops the signing so that the user sees it, except a
        card the user already overrode at "Check order" (``checked``: the order-select calls the page carried):
        as in a real EHR, an override documented with its reason holds for that order through signing, so it is
        recorded on the order-sign card too (``carry_overrides``).  Signing again the same drafts (``earlier``:
        the order-sign calls the page carried) asks no service again: the orders are written once every critical
        card of those calls is accepted or overridden.  Drafts changed since are new orders to the services, so
        they are asked again."""
        if earlier.calls and all(_drafts_of(c) == comparable(drafts) for c in earlier.calls):
            return earlier, not earlier.undecided_critical
        cards = await self._fire(
            ORDER_SIGN,
            lambda u: self.state.cds.order_sign(
                self.sandbox_id, u, self.patient_id, encounter_id, drafts, root=self.root
            ),
        )
        if checked is not None and await self.carry_overrides(checked, cards, drafts):
            cards = await self.shown(cards.call_ids, ORDER_SIGN)
        return cards, all(c.decision is not None for c in cards.cards)

    async def carry_overrides(self, checked: Cards, signing: Cards, drafts: list[dict[str, Any]]) -> int:
        """Override each undecided card of ``signing`` that repeats an alert the user overrode in ``checked``
        about one of these ``drafts``, with the same reason and comment; answers how many were.

        The same alert is the same words from the same source (``_alert``): an order changed so that the service
        says something else (another drug) is a new alert and is asked about again, and an override of another
        order never counts for this one.  A reason the order-sign card does not offer is not carried either:
        the user chooses one of its own."""
        orders = {f"{d['resourceType']}/{d['id']}" for d in drafts}
        calls = {c.id: c for c in checked.calls}
        overridden = {
            _alert(c.card): c.decision
            for c in checked.cards
            if c.decision is not None
            and c.decision.outcome == log.OVERRIDDEN
            and c.call_id in calls
            and _orders_of(calls[c.call_id]) & orders
        }
        carried = 0
        for card in signing.cards:
            earlier = overridden.get(_alert(card.card))
            if card.decision is not None or earlier is None:
                continue
            given = earlier.override_reason or {}
            code = (given.get("reason") or {}).get("code")
            if code is not None and code not in dict(card.override_reasons):
                continue
            try:
                await self.state.cds.override(
                    self.sandbox_id,
                    HookUser(self.user.id),
                    card.call_id,
                    card.key,
                    code,
                    given.get("userComment"),
                    root=self.root,
                )
            except CdsError:  # decided meanwhile (a second tab): the gate reads what was recorded
                continue
            carried += 1
        return carried

    async def _fire(self, hook: str, call: Callable[[HookUser], Awaitable[HookResult]]) -> Cards:
        try:
            user = HookUser(self.user.id, await run_in_threadpool(self._fhir_user))
            result = await call(user)
        except Exception:  # an aid must not take the chart down: whatever broke is logged, the page still works
            _log.exception("CDS Hooks %s for %s in %s", hook, self.patient_id, self.sandbox_id)
            return Cards(notices=["Decision support could not be reached just now; the chart works without it."])
        return await self.shown([c.call_id for c in result.calls], hook)

    def _fhir_user(self) -> str | None:
        with self.state.db.read() as conn:
            return practitioner_of(conn, self.state, self.sandbox_id, self.user.email)

    # ---- reading cards back ----------------------------------------------------------------------------

    async def shown(self, ids: list[str], hook: str) -> Cards:
        """The cards of these hook calls of ours (calls of another user, patient or hook are left out)."""

        def read() -> Cards:
            layer = self.state.views.get(self.sandbox_id).overlay
            with self.state.db.read() as conn:
                found = [log.get_call(conn, layer, i) for i in dict.fromkeys(ids)]
                mine = [c for c in found if c is not None and self._ours(c, hook)]
                return _cards(conn, layer, mine, self.user)

        return await run_in_threadpool(read) if ids else Cards()

    async def latest(self, hook: str) -> Cards:
        """The cards of the newest firing of ``hook`` for this user and patient."""

        def read() -> Cards:
            layer = self.state.views.get(self.sandbox_id).overlay
            with self.state.db.read() as conn:
                found = log.latest_hook_calls(conn, layer, actor=self.actor, patient_id=self.patient_id, hook=hook)
                return _cards(conn, layer, found, self.user)

        return await run_in_threadpool(read)

    def _ours(self, call: log.Call, hook: str) -> bool:
        return (
            call.kind == "hook"
            and call.hook == hook
            and call.actor == self.actor
            and call.patient_id == (self.patient_id)
        )

    # ---- what the user does with a card ----------------------------------------------------------------

    async def decide(self, choice: Choice, shown: Cards) -> log.Decision:
        """Accept the chosen suggestions or override the card, through ``CdsClient`` (which writes the actions
        through the one write path as the user, records the decision and sends the service its feedback).

        ``CdsError`` when the card is not one the page shows, or a critical card is overridden without a
        reason: a real EHR asks why an alert about harm is set aside, and so do we."""
        card = next((c for c in shown.cards if (c.call_id, c.key) == (choice.call_id, choice.key)), None)
        if card is None:
            raise CdsError(404, "That card is not shown here any more: reload the page.")
        if card.decision is not None:
            raise CdsError(409, "This card was accepted or overridden already.")
        user = HookUser(self.user.id)
        cds = self.state.cds
        if choice.action == "accept":
            if not choice.suggestions:
                raise CdsError(400, "Choose a suggestion to accept.")
            return await cds.accept(
                self.sandbox_id, user, card.call_id, card.key, list(choice.suggestions), root=self.root
            )
        if card.indicator == "critical" and not choice.reason and not choice.comment.strip():
            raise CdsError(400, "Say why you override a critical alert: choose a reason or write a comment.")
        return await cds.override(
            self.sandbox_id, user, card.call_id, card.key, choice.reason, choice.comment, root=self.root
        )


def _drafts_of(call: log.Call) -> list[dict[str, Any]]:
    bundle = ((call.request or {}).get("context") or {}).get("draftOrders") or {}
    return comparable(e.get("resource") or {} for e in bundle.get("entry") or [])


def _orders_of(call: log.Call) -> set[str]:
    """The draft orders (``Type/id``) a hook call was about."""
    return {f"{d.get('resourceType')}/{d.get('id')}" for d in _drafts_of(call)}


def _alert(card: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two cards (of two calls, or two hooks of one service) the same alert to the user."""
    source = card.get("source") or {}
    topic = source.get("topic") or {}
    return (
        card.get("indicator"),
        card.get("summary"),
        card.get("detail"),
        source.get("label"),
        topic.get("system"),
        topic.get("code"),
    )


def _cards(conn: Connection, layer: str, calls: list[log.Call], user: User) -> Cards:
    apps: list[LaunchableApp] | None = None
    found: list[ShownCard] = []
    notices = []
    for call in calls:
        if call.status != log.OK:
            what = _FAILED.get(call.status, "failed")
            notices.append(f"Decision support: the service {call.service_id} {what}; the chart works without it.")
        decided = {d.card_key: d for d in log.decisions(conn, layer, call_id=call.id)}
        for card in call.cards:
            if apps is None and any(link.get("type") == "smart" for link in card.get("links") or []):
                apps = launchable_apps(conn, user)
            links = tuple(
                _link(link, apps or [], f"{call.id}:{card['key']}:{n}")
                for n, link in enumerate(card.get("links") or [])
            )
            found.append(
                ShownCard(call.id, call.hook or "", call.service_id or "", card, links, decided.get(card["key"]))
            )
    found.sort(key=lambda c: _INDICATORS[c.indicator][0])
    return Cards(found, notices, calls)


def _link(link: dict[str, Any], apps: list[LaunchableApp], ref: str) -> Link:
    label, url = str(link["label"]), str(link["url"])
    if link.get("type") != "smart":
        return Link(label, url, "absolute")
    client_id = app_for_link(apps, url)
    return Link(label, url, "smart", client_id, ref) if client_id else Link(label, url, "unregistered")


def link_app_context(conn: Connection, layer: str, user: User, patient_id: str, ref: str, client_id: str) -> str | None:
    """The ``appContext`` of the SMART link ``ref`` names (``LINK``), for a launch of ``client_id`` from it.

    The value is read from the logged card, never taken from the form: the link must be on a card of this user's
    own hook call for this patient, and open this app.  ``CdsError`` (404) otherwise."""
    call_id, _, rest = ref.partition(":")
    key, _, index = rest.rpartition(":")
    call = log.get_call(conn, layer, call_id) if call_id and key else None
    if call is None or call.kind != "hook" or call.actor != HookUser(user.id).actor_id or call.patient_id != patient_id:
        raise CdsError(404, "That card link is not one the chart showed you for this patient: reload the chart.")
    links = (call.card(key) or {}).get("links") or []
    link = links[int(index)] if index.isdigit() and int(index) < len(links) else {}
    if link.get("type") != "smart" or app_for_link(launchable_apps(conn, user), str(link["url"])) != client_id:
        raise CdsError(404, "That card link does not open this app: reload the chart.")
    return link.get("appContext")
