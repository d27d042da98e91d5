"""Loading FHIR data from files into a sandbox or a baseline: our output, Synthea's, bulk NDJSON.

Everything goes through the FHIR transaction/batch processor
(``sandbox.fhir.transaction.BundleProcessor``), hence through ``Interactions``
and ``Repository.write``: validated, indexed and attributed to the actor
``loader`` on the route ``loader``, like any other write.

What is accepted:

- transaction and batch Bundles (``urn:uuid:`` fullUrls, conditional references,
  ``ifNoneExist``), collection and searchset Bundles (each entry becomes a write);
- NDJSON files, one resource a line, in chunks.

An entry that POSTs a resource carrying an id is loaded as ``PUT Type/id``, so
ids stay as they are in the files (references between files hold) and loading
the same files twice updates rather than duplicates.  Bundles without a Patient
(Synthea's ``hospitalInformation``/``practitionerInformation``, our
``directory.json``) load first, since the others point into them.

A transaction Bundle is all or nothing: if any entry fails, the Bundle is
rejected with that entry's reason.  Batches, collections and NDJSON chunks are
tried as one unit of work first (fast); if that fails they are run entry by
entry, so only the bad entries are rejected, each with its reason.

Speed (a thousand generated patients, 130,000 resources): several units share
one write transaction (``COMMIT_EVERY`` resources), each unit in a savepoint of
it, so a rejected unit leaves nothing of itself behind and takes nothing of the
other units in that transaction with it; they are stored when it commits.  An
error that is no unit's own (the database failing, a bug) ends the load: the
units of the transaction it happened in are not stored, those committed before
it are.  With ``workers``, worker processes validate each Bundle and work out
its rows (``sandbox.fhir.transaction_plan``) while this process writes the ones
before it; the processor uses that work only where it is exactly what it would
have done itself, so what is stored, and every error, is the same as without.
The index rows of those bundles go in just before each commit, sorted by
resource (``sandbox.store.repository.HeldIndexRows``), rather than bundle by
bundle.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection

from sandbox.fhir.context import FhirContext
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.search_params import registry
from sandbox.fhir.transaction import BundleProcessor, TransactionPlan
from sandbox.fhir.transaction_plan import plan_transaction
from sandbox.fhir.validation import parse_json
from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import HELD_INDEX_ROWS, Actor, HeldIndexRows, IndexRowsHeld, Repository

LOADER = Actor(id="system:loader", route="loader")
NDJSON_CHUNK = 500
COMMIT_EVERY = 20_000  # resources a write transaction of the loader holds (see _Writer)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass
class Rejection:
    where: str  # file, and entry or line
    reason: str


@dataclass
class LoadReport:
    files: int = 0
    loaded: Counter[str] = field(default_factory=Counter)  # resource type -> resources written
    rejected: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.loaded.values())

    def summary_lines(self, limit: int = 20) -> list[str]:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(self.loaded.items(), key=lambda kv: (-kv[1], kv[0])))
        rate = f" ({self.total / self.seconds:,.0f}/s)" if self.seconds > 0 else ""
        lines = [f"loaded {self.total:,} resources from {self.files} files in {self.seconds:.1f}s{rate}"]
        if kinds:
            lines.append(f"  {kinds}")
        lines.append(f"rejected {len(self.rejected)}")
        for rejection in self.rejected[:limit]:
            lines.append(f"  {rejection.where}: {rejection.reason}")
        if len(self.rejected) > limit:
            lines.append(f"  ... and {len(self.rejected) - limit} more")
        return lines


class LoadError(Exception):
    """The input cannot be loaded at all (no such path, nothing loadable in it)."""


@dataclass
class _Unit:
    """One unit of work: a Bundle to run, where it came from, and whether it must be all-or-nothing."""

    where: str
    bundle: dict[str, Any]
    atomic: bool
    labels: list[str]  # per entry, for rejections: "file entry 3" or "file line 17"
    unreadable: list[Rejection] = field(default_factory=list)  # NDJSON lines that are not JSON at all
    # A JSON file's bytes, which ``_json_unit`` makes into this very unit again: what a worker is sent.
    # Pickled, the Bundle took a worker longer to unpickle (its decimals above all) than the bytes to parse.
    source: bytes | None = None


class Loader:
    """Loads files through the transaction processor.

    ``workers`` > 0: worker processes plan each Bundle's creates (validation, index rows:
    ``sandbox.fhir.transaction_plan``) while this process writes the Bundles before it.
    ``commit_every``: how many resources a write transaction holds before it commits (at a
    unit's end); each unit runs in a savepoint of it, so a failing unit still leaves nothing
    of itself and nothing of the others undone.
    """

    def __init__(
        self,
        db: Database,
        view: View,
        *,
        base: str = "http://localhost/fhir",
        progress: Callable[[int, int, LoadReport], None] | None = None,
        workers: int = 0,
        commit_every: int = COMMIT_EVERY,
    ) -> None:
        reg = registry()
        self.db = db
        self.view = view
        self.base = base.rstrip("/")
        self.ctx = FhirContext(db, Interactions(Repository(reg), reg), view, LOADER, self.base)
        self.progress = progress
        self.workers = workers
        self.commit_every = commit_every

    def load(self, path: Path) -> LoadReport:
        files = discover(path)
        report = LoadReport()
        started = time.perf_counter()
        with ExitStack() as stack:
            pool = None
            if self.workers > 0:
                context = multiprocessing.get_context("spawn")  # a forked child would inherit open database handles
                pool = ProcessPoolExecutor(self.workers, mp_context=context)
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            writer = stack.enter_context(_Writer(self.db, self.commit_every))
            ahead: deque[tuple[_Job, Future[TransactionPlan | None] | None]] = deque()
            for job in _jobs(files):
                plan = None
                if pool is not None and job.unit is not None and job.unit.bundle["entry"]:
                    # The moment its creates are written at is taken now, in the order the units commit.
                    unit = job.unit
                    sent = (unit.where, unit.source) if unit.source is not None else unit.bundle
                    plan = pool.submit(_plan, sent, self.base, self.view, instant_now())
                ahead.append((job, plan))
                if len(ahead) > 2 * self.workers:
                    self._finish(*ahead.popleft(), writer, report, len(files), started)
            while ahead:
                self._finish(*ahead.popleft(), writer, report, len(files), started)
        self.db.analyze()
        report.seconds = time.perf_counter() - started
        return report

    def _finish(
        self,
        job: _Job,
        plan: Future[TransactionPlan | None] | None,
        writer: _Writer,
        report: LoadReport,
        files: int,
        started: float,
    ) -> None:
        if job.error is not None:
            report.rejected.append(job.error)
        if job.unit is not None:
            self._run(job.unit, report, writer, plan.result() if plan is not None else None)
        if job.last:
            report.files += 1
            report.seconds = time.perf_counter() - started
            if self.progress:
                self.progress(job.file_number, files, report)

    def _run(self, unit: _Unit, report: LoadReport, writer: _Writer, plan: TransactionPlan | None) -> None:
        report.rejected.extend(unit.unreadable)
        if not unit.bundle["entry"]:
            return
        conn = writer.connection()
        try:
            self._transaction(conn, writer.held, unit.bundle, plan)
        except FhirError as exc:
            if unit.atomic:
                report.rejected.append(Rejection(unit.where, _reason(exc)))
                return
        else:
            report.loaded.update(_types(unit.bundle))
            writer.wrote(len(unit.bundle["entry"]))
            return
        # Not atomic and something failed: entry by entry, so only the bad ones are left out.
        writer.held.insert(conn)  # entries run one by one may search, and must see everything before them
        try:
            response = self._process(conn, unit.bundle, "batch", None)
        except FhirError as exc:
            report.rejected.append(Rejection(unit.where, _reason(exc)))
            return
        entries = unit.bundle.get("entry", [])
        for n, answer in enumerate(response.get("entry", [])):
            status = str(answer.get("response", {}).get("status", ""))
            if status[:1] == "2":
                resource = entries[n].get("resource")
                if isinstance(resource, dict):  # a DELETE or GET entry of a batch writes nothing to count
                    report.loaded[resource["resourceType"]] += 1
            else:
                outcome = answer.get("response", {}).get("outcome", {})
                issues = outcome.get("issue", [])
                reason = "; ".join(i.get("diagnostics", i.get("code", "")) for i in issues) or status
                report.rejected.append(Rejection(unit.labels[n], reason))
        writer.wrote(len(entries))

    def _transaction(
        self, conn: Connection, held: HeldIndexRows, bundle: dict[str, Any], plan: TransactionPlan | None
    ) -> None:
        """Run a unit as one transaction.  A planned one holds its new resources' index rows back (to go in
        sorted, with other units' ones); anything else, or a planned unit that turns out to search or update
        after all, first has the held rows inserted, outside its savepoint, so that its failure cannot undo them.
        """
        if plan is None:
            held.insert(conn)
            self._process(conn, bundle, "transaction", None)
            return
        held.begin()
        try:
            self._process(conn, bundle, "transaction", plan)
        except IndexRowsHeld:
            held.end(keep=False)  # its savepoint was rolled back: nothing of it is stored, its rows go too
            held.insert(conn)
            self._process(conn, bundle, "transaction", plan)
            return
        except BaseException:
            held.end(keep=False)
            raise
        held.end(keep=True)

    def _process(
        self, conn: Connection, bundle: dict[str, Any], kind: str, plan: TransactionPlan | None
    ) -> dict[str, Any]:
        processor = BundleProcessor(self.ctx, prefer="minimal", conn=conn, plan=plan)
        return processor.run({**bundle, "type": kind})


@dataclass
class _Job:
    """A unit to run, or a file's error, in load order; ``last``: the file is done after it."""

    file_number: int
    unit: _Unit | None
    error: Rejection | None
    last: bool


def _jobs(files: list[Path]) -> Iterator[_Job]:
    for number, file in enumerate(files, start=1):
        try:
            units = list(_units_of(file))
        except LoadError as exc:
            yield _Job(number, None, Rejection(str(file), str(exc)), last=True)
            continue
        if not units:
            yield _Job(number, None, None, last=True)
        for n, unit in enumerate(units, start=1):
            yield _Job(number, unit, None, last=n == len(units))


def _plan(
    sent: dict[str, Any] | tuple[str, bytes], base: str, view: View, now: tuple[str, str]
) -> TransactionPlan | None:
    """In a worker process: the plan for running a unit's Bundle as a transaction (see ``Loader._run``); ``sent``
    is the Bundle, or the file and bytes it was read from (``_Unit.source``)."""
    if isinstance(sent, tuple):
        where, source = sent
        bundle = _json_unit(Path(where), source).bundle
    else:
        bundle = sent
    return plan_transaction({**bundle, "type": "transaction"}, registry(), view, LOADER, base, now)


class _Writer:
    """The loader's write transactions, each holding several units (about ``commit_every`` resources).

    One commit for many bundles rather than one each: on SQLite every commit rewrote the index pages
    it touched (twice: write-ahead log, then checkpoint), gigabytes for a thousand patients.  The index
    rows that planned units hold back (``HeldIndexRows``) go in just before each commit.  An error that
    is not a unit's own (the database failing, a bug) ends the load: the units of the open transaction
    are not stored, those committed before stay.
    """

    def __init__(self, db: Database, commit_every: int) -> None:
        self.db = db
        self.commit_every = commit_every
        self.pending = 0
        self.held = HeldIndexRows()
        self._open: ExitStack | None = None
        self._conn: Connection | None = None

    def connection(self) -> Connection:
        if self._conn is None:
            self._open = ExitStack()
            self._conn = self._open.enter_context(self.db.bulk_write())
            self._conn.info[HELD_INDEX_ROWS] = self.held
            # conn.info outlives the checkout (it belongs to the pooled connection): always take it off again.
            self._open.callback(self._conn.info.pop, HELD_INDEX_ROWS, None)
        return self._conn

    def wrote(self, resources: int) -> None:
        self.pending += resources
        if self.pending >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if self._open is not None and self._conn is not None:
            self.held.insert(self._conn)
            opened, self._open, self._conn, self.pending = self._open, None, None, 0
            opened.close()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        elif self._open is not None:
            opened, self._open, self._conn, self.held = self._open, None, None, HeldIndexRows()
            opened.__exit__(kind, error, trace)  # rolls the open transaction back


def discover(path: Path) -> list[Path]:
    """The files to load, in order: bundles that hold no Patient first, then the rest by name."""
    if not path.exists():
        raise LoadError(f"{path} does not exist")
    if path.is_file():
        return [path]
    if (path / "fhir").is_dir():
        path = path / "fhir"  # our generator's output: the bundles hold everything the NDJSON holds
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".ndjson"))
    if not files:
        raise LoadError(f"{path} holds no .json or .ndjson files")
    return sorted(files, key=lambda p: (not _is_shared(p), str(p)))


def _is_shared(path: Path) -> bool:
    """A bundle of practitioners, organizations and the like that patients' bundles point into."""
    if path.suffix == ".ndjson":
        return path.stem in ("Organization", "Practitioner", "PractitionerRole", "Location")
    name = path.name
    if name.startswith(("hospitalInformation", "practitionerInformation", "directory")):
        return True
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    return b'"Patient"' not in head and b'"resourceType":"Patient"' not in head


def _units_of(path: Path) -> Iterator[_Unit]:
    if path.suffix == ".ndjson":
        yield from _ndjson_units(path)
        return
    yield _json_unit(path, path.read_bytes())


def _json_unit(path: Path, source: bytes) -> _Unit:
    """The one unit of a JSON file (a Bundle or a single resource), read from its bytes."""
    try:
        data = parse_json(source)
    except FhirError as exc:
        raise LoadError(f"not valid JSON ({_reason(exc)})") from None
    if not isinstance(data, dict) or "resourceType" not in data:
        raise LoadError("not a FHIR resource (no resourceType)")
    if data["resourceType"] != "Bundle":
        return _Unit(str(path), _bundle_of([data]), atomic=True, labels=[str(path)], source=source)
    kind = data.get("type")
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise LoadError("Bundle.entry is not an array")
    labels = [f"{path} entry {n}" for n in range(len(entries))]
    if kind in ("transaction", "batch"):
        bundle = {**data, "entry": [_keep_id(e) if isinstance(e, dict) else e for e in entries]}
        return _Unit(str(path), bundle, atomic=kind == "transaction", labels=labels, source=source)
    if kind in ("collection", "searchset", "document", "message"):
        resources = [e.get("resource") for e in entries if isinstance(e, dict)]
        bundle = _bundle_of(resources, [e.get("fullUrl") for e in entries if isinstance(e, dict)])
        return _Unit(str(path), bundle, atomic=False, labels=labels, source=source)
    raise LoadError(f"a Bundle of type '{kind}' holds nothing to load")


def _ndjson_units(path: Path) -> Iterator[_Unit]:
    resources: list[Any] = []
    lines: list[int] = []
    unreadable: list[Rejection] = []

    def unit() -> _Unit:
        labels = [f"{path} line {n}" for n in lines]
        span = f"{path} lines {lines[0]}-{lines[-1]}" if lines else str(path)
        return _Unit(span, _bundle_of(resources), atomic=False, labels=labels, unreadable=unreadable)

    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                resources.append(parse_json(line))
            except FhirError as exc:
                unreadable.append(Rejection(f"{path} line {number}", _reason(exc)))
                continue
            lines.append(number)
            if len(resources) == NDJSON_CHUNK:
                yield unit()
                resources, lines, unreadable = [], [], []
    if resources or unreadable:
        yield unit()


def _bundle_of(resources: list[Any], full_urls: list[str | None] | None = None) -> dict[str, Any]:
    entries = []
    for n, resource in enumerate(resources):
        entry: dict[str, Any] = {}
        if full_urls and full_urls[n]:
            entry["fullUrl"] = full_urls[n]
        if isinstance(resource, dict) and is_resource_type(str(resource.get("resourceType"))):
            entry["resource"] = resource
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
            entry = _keep_id(entry)
        else:
            # Left for the processor to refuse with its own message, so the rejection says why.
            entry["resource"] = resource if isinstance(resource, dict) else {"resourceType": "Unknown"}
            entry["request"] = {"method": "POST", "url": "Unknown"}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def _keep_id(entry: dict[str, Any]) -> dict[str, Any]:
    """``POST Type`` of a resource with a valid id becomes ``PUT Type/id`` (unless it is a conditional create)."""
    request, resource = entry.get("request"), entry.get("resource")
    if not isinstance(request, dict) or not isinstance(resource, dict) or request.get("method") != "POST":
        return entry
    rid, rtype = resource.get("id"), resource.get("resourceType")
    if request.get("ifNoneExist") or not isinstance(rid, str) or not rid or len(rid) > 64 or set(rid) - _ID_CHARS:
        return entry
    if request.get("url") != rtype:
        return entry
    return {**entry, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}


def _types(bundle: dict[str, Any]) -> Counter[str]:
    return Counter(
        e["resource"]["resourceType"]
        for e in bundle.get("entry", [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict) and "resourceType" in e["resource"]
    )


def _reason(error: FhirError) -> str:
    return "; ".join(issue.diagnostics for issue in error.issues) or f"HTTP {error.status}"
