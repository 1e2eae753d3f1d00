"""What the HTML report (formats/report.py) shows, as plain values its template lays out: the
findings with their acceptance entry, the drift events of the period as rows (what, when,
severity, before → after), the acceptance entries with their owner, reason, expiry and ticket,
and account names beside ids. No markup here: the template escapes every value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from kmsaudit.formats.render import condition_text
from kmsaudit.model import Finding, severity_rank

DRIFT_ROWS = 200  # the newest events shown as rows; the rest are counted ("N more")
EXPIRES_SOON_DAYS = 30
# Finding fields another part of kmsaudit may add (SPEC §4), carried to the template when present.
EXTRA_FIELDS = ("explanation", "remediation")


def finding_views(findings: Iterable[Finding | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each finding as a dict (SPEC §4), with `explanation` and `remediation` when the finding
    carries them; worst first, then by key and principal."""
    views = []
    for f in findings:
        if isinstance(f, Mapping):
            view = Finding.from_dict(dict(f)).to_dict()
            view.update({name: f[name] for name in EXTRA_FIELDS if f.get(name)})
        else:
            view = f.to_dict()
        view["condition_texts"] = [condition_text(dict(c)) for c in view["conditions"]]
        views.append(view)
    return sorted(views, key=lambda f: (-severity_rank(f["severity"]), f["key_arn"], f["principal"], f["access"]))


def acceptance_views(entries: Iterable[Any], findings: Sequence[Mapping[str, Any]], today: date) -> dict[str, Any]:
    """Entry id -> {id, owner, reason, expires, ticket, status, accepts}; `status` is `expired`
    (the day is past: its findings are unaccepted from the next scan on), `expires-soon` (within
    30 days) or `active`. Entries are AcceptSettings or mappings of the same fields."""
    accepts: dict[str, int] = {}
    for f in findings:
        if f.get("accepted_by"):
            accepts[f["accepted_by"]] = accepts.get(f["accepted_by"], 0) + 1
    out: dict[str, Any] = {}
    for entry in entries:
        e = entry if isinstance(entry, Mapping) else entry.model_dump()
        expires = e["expires"] if isinstance(e["expires"], date) else date.fromisoformat(str(e["expires"]))
        days = (expires - today).days
        status = "expired" if days < 0 else "expires-soon" if days <= EXPIRES_SOON_DAYS else "active"
        out[str(e["id"])] = {
            "id": str(e["id"]),
            "owner": e.get("owner") or "",
            "reason": e.get("reason") or "",
            "expires": expires.isoformat(),
            "days": days,
            "ticket": e.get("ticket") or "",
            "status": status,
            "accepts": accepts.get(str(e["id"]), 0),
        }
    return out


def _actions(finding: Mapping[str, Any] | None) -> str:
    if not finding:
        return "—"
    actions = [str(a).removeprefix("kms:") for a in finding.get("actions", ())]
    text = ", ".join(actions) or "no action"
    extra = [str(finding.get("access", ""))]
    if finding.get("conditional"):
        extra.append("conditional")
    return f"{text} ({', '.join(e for e in extra if e)})"


def _hash(value: Any, name: str = "policy_sha256") -> str:
    if not isinstance(value, Mapping) or not value.get(name):
        return "—"
    return f"policy {str(value[name])[:12]}…"


def change(event: Mapping[str, Any]) -> tuple[str, str, str]:
    """(before, after, what changed) of one drift event, in words an auditor reads."""
    kind, before, after = str(event.get("kind", "")), event.get("before"), event.get("after")
    if kind in ("added", "removed", "widened", "narrowed"):
        old = before if isinstance(before, Mapping) else None
        new = after if isinstance(after, Mapping) else None
        gained = sorted(set((new or {}).get("actions", ())) - set((old or {}).get("actions", ())))
        lost = sorted(set((old or {}).get("actions", ())) - set((new or {}).get("actions", ())))
        bare = [f"+{a.removeprefix('kms:')}" for a in gained] + [f"−{a.removeprefix('kms:')}" for a in lost]
        delta = " ".join(bare)
        if old and new and not delta and bool(old.get("conditional")) != bool(new.get("conditional")):
            delta = "now conditional" if new.get("conditional") else "no longer conditional"
        return _actions(old), _actions(new), delta
    if kind == "acceptance-expired":
        entry = (before or {}).get("accepted_by") if isinstance(before, Mapping) else None
        return f"accepted by {entry or 'an entry'}", "unaccepted: alerts again", _actions(after)
    if kind in ("policy-changed", "key-created", "key-deleted"):
        return _hash(before), _hash(after), ""
    if kind in ("key-unreadable", "key-readable"):
        b = before.get("code") if isinstance(before, Mapping) else None
        a = after.get("code") if isinstance(after, Mapping) else None
        return (f"unreadable ({b})" if b else "readable"), (f"unreadable ({a})" if a else "readable"), ""
    if kind == "scope-failed":
        error = after if isinstance(after, Mapping) else {}
        return "read", f"not read ({error.get('code') or 'failed'})", str(error.get("error", ""))[:300]
    return str(before or "—")[:300], str(after or "—")[:300], ""


def drift_rows(events: Sequence[Mapping[str, Any]], limit: int = DRIFT_ROWS) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` events as rows, and how many more there are."""
    ordered = sorted(events, key=lambda e: (-float(e.get("detected_at") or 0), -severity_rank(str(e.get("severity")))))
    rows = []
    for e in ordered[:limit]:
        before, after, delta = change(e)
        finding = e.get("after") if isinstance(e.get("after"), Mapping) else e.get("before")
        principal_account = str(finding.get("principal_account", "")) if isinstance(finding, Mapping) else ""
        rows.append(
            {
                "when": datetime.fromtimestamp(float(e.get("detected_at") or 0), UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "kind": str(e.get("kind", "")),
                "severity": str(e.get("severity") or "low"),
                "key_arn": str(e.get("key_arn") or ""),
                "scope": f"{e.get('account', '')} {e.get('region', '')}".strip(),
                "account": str(e.get("account") or ""),
                "principal": str(e.get("principal") or ""),
                "principal_account": principal_account,
                "before": before,
                "after": after,
                "delta": delta,
                "snapshot_id": e.get("snapshot_id"),
            }
        )
    return rows, max(0, len(ordered) - limit)


def account_label(names: Mapping[str, str]) -> Any:
    """`label(id)`: the display name of an account from `[names]`, or "" (the template shows the
    id beside it)."""

    def label(account: Any) -> str:
        return names.get(str(account), "") if account else ""

    return label


def plain(value: Any, limit: int = 20_000) -> str:
    """A value of an explanation or remediation as text (a nested object as compact JSON)."""
    import json

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
