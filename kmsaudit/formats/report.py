"""`kmsaudit report --html FILE`: one self-contained HTML file an auditor can file (README
"Integrations"): the snapshot's counts as text, an account × region matrix coloured by the worst
unaccepted severity (with a legend), the drift events of the last 30 days as a table (what, when,
severity, before → after) under an inline SVG timeline, the accepted access with each entry's
owner, reason, expiry and ticket, the findings with filters (each expandable to its explanation
and remediation when the finding carries them), account names from `[names]` beside the ids, and
the snapshot's date and config fingerprint. It fits 1,280 px: long values wrap, nothing is cut.
Nothing is fetched at view time. Every value from AWS is escaped (Jinja2 autoescape): a
principal or alias cannot inject markup."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape

from kmsaudit import __version__
from kmsaudit.formats.report_views import (
    EXTRA_FIELDS,
    acceptance_views,
    account_label,
    drift_rows,
    finding_views,
    plain,
)
from kmsaudit.model import Finding, severity_rank

if TYPE_CHECKING:
    from kmsaudit.store.database import Store

SEVERITIES = ("critical", "high", "medium", "low")
DAYS = 30


@dataclass(frozen=True)
class Cell:
    worst: str  # a severity, "none", or "failed"
    findings: int
    title: str


def config_fingerprint(paths: Sequence[str | Path]) -> str:
    """sha256 of the config file and the acceptance files it names, in order (16 hex digits):
    which configuration produced the evidence. The files hold no secrets (sinks name variables)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(Path(path).name).encode() + b"\0")
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            digest.update(b"(missing)")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _matrix(
    findings: Sequence[Mapping[str, Any]], scopes: Sequence[Any]
) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    accounts = sorted({s.account for s in scopes})
    regions = sorted({s.region for s in scopes})
    cells: dict[tuple[str, str], Cell] = {}
    by_scope: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for f in findings:
        by_scope.setdefault((f["key_account"], f["region"]), []).append(f)
    for s in scopes:
        found = [f for f in by_scope.get((s.account, s.region), []) if not f["accepted"]]
        accepted = len(by_scope.get((s.account, s.region), [])) - len(found)
        worst = max((f["severity"] for f in found), key=severity_rank, default="none")
        also = f"; {accepted} accepted" if accepted else ""
        if not s.ok:
            why = s.error_code or "failed"
            title = (
                f"{s.account} {s.region}: not read in this snapshot ({why}); "
                f"last known findings shown: {len(found)} unaccepted{also}"
            )
            cells[(s.account, s.region)] = Cell("failed", len(found), title)
        else:
            title = f"{s.account} {s.region}: {len(found)} unaccepted findings, worst {worst}{also}"
            cells[(s.account, s.region)] = Cell(worst, len(found), title)
    return accounts, regions, cells


def _timeline(events: Sequence[Mapping[str, Any]], until: float) -> dict[str, Any]:
    """Drift per day for the last 30 days, stacked by severity, as SVG rectangles."""
    end = datetime.fromtimestamp(until, UTC).date()
    days = [end - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    counts: dict[Any, Counter[str]] = {d: Counter() for d in days}
    for e in events:
        day = datetime.fromtimestamp(float(e.get("detected_at") or 0), UTC).date()
        if day in counts:
            counts[day][str(e.get("severity") or "low")] += 1
    peak = max((sum(c.values()) for c in counts.values()), default=0) or 1
    width, height, bar = 24, 120, 18
    bars = []
    for i, day in enumerate(days):
        y = height
        for severity in reversed(SEVERITIES):
            n = counts[day][severity]
            if not n:
                continue
            h = max(2, round(n / peak * (height - 10)))
            y -= h
            bars.append(
                {"x": i * width + 3, "y": y, "w": bar, "h": h, "severity": severity, "title": f"{day}: {n} {severity}"}
            )
    labels = [
        {"x": i * width + 3, "text": d.strftime("%m-%d")} for i, d in enumerate(days) if i % 5 == 0 or i == DAYS - 1
    ]
    total = sum(sum(c.values()) for c in counts.values())
    return {"bars": bars, "labels": labels, "width": DAYS * width, "height": height, "total": total, "peak": peak}


def render_report(
    findings: Sequence[Finding | Mapping[str, Any]],
    scopes: Sequence[Any],
    snapshot: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    names: Mapping[str, Mapping[str, Any]],
    fingerprint: str,
    *,
    account_names: Mapping[str, str] | None = None,
    acceptances: Sequence[Any] = (),
    today: date | None = None,
) -> str:
    """The report's HTML. `names`: key ARN -> aliases; `account_names`: the config's `[names]`;
    `acceptances`: the config's acceptance entries (AcceptSettings), for owner, reason, expiry
    and ticket; `today` (default: the UTC date) decides which entries have expired."""
    env = Environment(
        loader=PackageLoader("kmsaudit.formats", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda t: datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    env.filters["plain"] = plain
    views = finding_views(findings)
    counts = Counter(f["severity"] for f in views)
    accounts, regions, cells = _matrix(views, scopes)
    entries = acceptance_views(acceptances, views, today or datetime.now(UTC).date())
    drift, more = drift_rows(events)
    return env.get_template("report.html.j2").render(
        version=__version__,
        snapshot=snapshot,
        fingerprint=fingerprint,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        total=len(views),
        counts=[(s, counts.get(s, 0)) for s in SEVERITIES],
        accepted=[f for f in views if f["accepted"]],
        entries=entries,
        keys=len({f["key_arn"] for f in views}),
        failed=[s for s in scopes if not s.ok],
        accounts=accounts,
        regions=regions,
        cells=cells,
        findings=views,
        names=names,
        account=account_label(account_names or {}),
        timeline=_timeline(events, float(snapshot["finished_at"])),
        drift=drift,
        drift_more=more,
        drift_total=len(events),
        severities=SEVERITIES,
        extra_fields=EXTRA_FIELDS,
    )


EXPLAINED_KEYS = 2_000  # keys whose findings the report explains, the most severe first
EXPLAIN_SECONDS = 60.0  # and for how long at most (the rest: `kmsaudit explain ID`)


def explain_findings(store: Store, snapshot_id: int, findings: list[dict[str, Any]], trusted: Sequence[str]) -> int:
    """Each finding's explanation and remediation (SPEC §4), decided again from the documents kept
    with the snapshot, for the keys of the most severe findings first, within EXPLAIN_SECONDS;
    returns how many findings."""
    ordered = sorted(findings, key=lambda f: severity_rank(str(f.get("severity"))), reverse=True)
    scope = store.stored_scope(snapshot_id, trusted)
    deadline = time.monotonic() + EXPLAIN_SECONDS
    found = store.explain_stored(snapshot_id, ordered, scope, max_keys=EXPLAINED_KEYS, deadline=deadline)
    for finding in findings:
        if finding["id"] in found:
            finding["explanation"], finding["remediation"] = found[finding["id"]]
    return len(found)


def run_report(config_path: str | Path, html_path: str | Path, snapshot_id: int | None = None) -> str:
    """`kmsaudit report --html FILE`: the report of the latest (or a given) snapshot; returns
    the line to print. Reads only: a path where no scan stored a database is an error (exit 2)."""
    from kmsaudit.config.settings import load_config
    from kmsaudit.errors import SnapshotNotFound
    from kmsaudit.files import check_destination, write_file
    from kmsaudit.store.database import Store

    config = load_config(config_path)
    destination = check_destination(html_path, "--html")  # before any work (issue #25)
    store = Store(config.store.path, create=False)
    try:
        snapshot = store.snapshot(snapshot_id)
        if snapshot is None:
            raise SnapshotNotFound(f"no snapshot in {config.store.path} yet: run `kmsaudit scan` first")
        scopes = store.scope_view(snapshot["id"])
        findings = store.findings(snapshot["id"])  # dicts: fields beyond Finding's (explanation…) kept
        until = float(snapshot["finished_at"])
        events = [e for e in store.drift(until - DAYS * 86400) if int(e.get("snapshot_id") or 0) <= snapshot["id"]]
        names = store.key_names(snapshot["id"])
        explained = explain_findings(store, snapshot["id"], findings, config.trust.accounts)
    finally:
        store.close()
    fingerprint = config_fingerprint([config_path, *config.acceptance.files])
    html = render_report(
        findings, scopes, snapshot, events, names, fingerprint, account_names=config.names, acceptances=config.accept
    )
    written = write_file(destination, html)
    unexplained = (
        f"; {len(findings) - explained} without an explanation (kmsaudit explain ID says why)"
        if explained < len(findings)
        else ""
    )
    return (
        f"report of snapshot {snapshot['id']} ({len(findings)} findings, {len(events)} drift events in "
        f"{DAYS} days) written to {written}{unexplained}"
    )
