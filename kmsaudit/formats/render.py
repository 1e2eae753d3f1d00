"""Findings and lints as a table for people, or JSON / JSON lines for programs (SPEC §4)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TextIO

from kmsaudit.model import Finding, Lint, ScopeStatus, severity_rank

FORMATS = ("table", "json", "jsonl")
# Findings and drift also as OCSF Detection Findings (kmsaudit/formats/ocsf.py): an array, or one a line.
FINDING_FORMATS = (*FORMATS, "ocsf", "ocsf-jsonl")
_COLOURS = {"critical": "\033[1;31m", "high": "\033[31m", "medium": "\033[33m", "low": "\033[36m"}
_RESET = "\033[0m"
_DIM = "\033[2m"


def _short_actions(actions: Sequence[str]) -> str:
    bare = [a.removeprefix("kms:") for a in actions]
    text = ",".join(bare)
    return text if len(text) <= 60 else f"{','.join(bare[:4])},… ({len(bare)} actions)"


def condition_text(cond: dict[str, object]) -> str:
    """Where a condition comes from (which policy and statement, Allow or Deny) and what it tests:
    `key-policy "ViaS3" Allow if StringEquals kms:ViaService=s3.…`."""
    if "error" in cond:
        return f"error: {cond['error']}"
    values = cond.get("values", [])
    shown = ",".join(str(v) for v in values) if isinstance(values, list) else str(values)
    if cond.get("source") == "grant":
        grant = str(cond.get("grant_id", ""))
        where = f"grant {grant[:12]}{'…' if len(grant) > 12 else ''}".strip()  # ids are 64 hex digits
    else:
        sid = f' "{cond["sid"]}"' if cond.get("sid") else " (no Sid)"
        where = f"{cond.get('source', '')}{sid} {cond.get('effect', '')}".strip()
    return f"{where} if {cond.get('operator')} {cond.get('key')}={shown}"


def key_label(arn: str, names: Mapping[str, Mapping[str, object]] | None) -> str:
    """The key's ARN with its aliases, and `AWS managed` for the keys AWS manages."""
    name = (names or {}).get(arn)
    if not name:
        return arn
    extra = [str(a) for a in name.get("aliases", ()) or ()]  # type: ignore[attr-defined]
    if name.get("manager") == "AWS":
        extra.append("AWS managed")
    return f"{arn}  ({', '.join(extra)})" if extra else arn


def scan_key_names(scopes: Iterable[ScopeStatus]) -> dict[str, Mapping[str, object]]:
    """Key ARN -> aliases and manager, as a scan read them: the `names` of write_findings."""
    return {arn: {"aliases": aliases, "manager": manager} for s in scopes for arn, aliases, manager in s.key_names}


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Keys by their worst finding, each key's findings together, worst first."""
    worst: dict[str, int] = {}
    for f in findings:
        worst[f.key_arn] = max(worst.get(f.key_arn, 0), severity_rank(f.severity))
    return sorted(
        findings, key=lambda f: (-worst[f.key_arn], f.key_arn, -severity_rank(f.severity), f.access, f.principal)
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def write_findings(
    findings: Sequence[Finding],
    fmt: str,
    out: TextIO,
    colour: bool = False,
    empty: str = "No cross-account access found.",
    names: Mapping[str, Mapping[str, object]] | None = None,
    seen_at: float | None = None,
) -> None:
    """`empty`: what an empty table says (a scan whose scopes failed must not say all-clear).
    `names`: key ARN -> aliases and manager, shown on each key's line (and in OCSF resources).
    `seen_at`: when the findings were seen (the snapshot's time; OCSF `time`)."""
    ordered = sort_findings(findings)
    if fmt in ("ocsf", "ocsf-jsonl"):
        from kmsaudit.formats.ocsf import finding_to_ocsf

        _write_objects([finding_to_ocsf(f, seen_at, (names or {}).get(f.key_arn)) for f in ordered], fmt, out)
        return
    if fmt == "json":
        json.dump([f.to_dict() for f in ordered], out, indent=2)
        out.write("\n")
        return
    if fmt == "jsonl":
        for f in ordered:
            out.write(json.dumps(f.to_dict()) + "\n")
        return
    if not ordered:
        out.write(empty + "\n")
        return
    rows = [("SEVERITY", "ACCESS", "ZONE", "PRINCIPAL", "VIA", "ACTIONS", "CONDITIONS")]
    for f in ordered:
        conds = "; ".join(condition_text(c) for c in f.conditions) or "-"
        if f.conditional_actions and not f.conditional:
            conds = f"{_short_actions(f.conditional_actions)} only {conds}"
        if f.accepted:
            conds += f"  [accepted: {f.accepted_by}]"
        elif f.outgrew:
            conds += f"  [beyond acceptance {f.outgrew}]"
        rows.append(
            (f.severity, f.access, f.zone, f.principal, "+".join(f.via), _short_actions(f.actions) or "-", conds)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    current_key = None
    for i, row in enumerate(rows):
        if i and ordered[i - 1].key_arn != current_key:
            current_key = ordered[i - 1].key_arn
            out.write(f"\n{key_label(current_key, names)}\n")
        cells = [row[c].ljust(widths[c]) for c in range(6)] + [row[6]]
        line = "  ".join(cells).rstrip()
        if colour and i and ordered[i - 1].accepted:
            line = _DIM + line + _RESET  # known-good: there, but out of the way
        elif colour and i:
            sev = ordered[i - 1].severity
            line = _COLOURS[sev] + line[: len(sev)] + _RESET + line[len(sev) :]
        out.write(line + "\n")
    counts: dict[str, int] = {}
    for f in ordered:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    summary = ", ".join(f"{counts[s]} {s}" for s in ("critical", "high", "medium", "low") if s in counts)
    accepted = sum(f.accepted for f in ordered)
    if accepted:
        summary += f" ({accepted} accepted)"
    keys = len({f.key_arn for f in ordered})
    out.write(f"\n{plural(len(ordered), 'finding')} on {plural(keys, 'key')}: {summary}\n")


def write_lints(lints: Sequence[Lint], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump([lint.to_dict() for lint in lints], out, indent=2)
        out.write("\n")
    elif fmt == "jsonl":
        for lint in lints:
            out.write(json.dumps(lint.to_dict()) + "\n")
    else:
        if not lints:
            out.write("No lints.\n")  # an empty screen reads as a failure to run (issue #25)
        for lint in lints:
            where = lint.key_arn or lint.account
            sid = f" [{lint.sid}]" if lint.sid else ""
            out.write(f"lint {lint.kind}: {where}{sid}: {lint.message}\n")


def write_drift(events: Sequence[dict[str, object]], fmt: str, out: TextIO) -> None:
    """Drift events (SPEC §5): JSON as stored, OCSF, or a table for people."""
    if fmt in ("ocsf", "ocsf-jsonl"):
        from kmsaudit.formats.ocsf import drift_to_ocsf

        _write_objects([drift_to_ocsf(e) for e in events], fmt, out)
        return
    if fmt == "json":
        json.dump(list(events), out, indent=2)
        out.write("\n")
        return
    if fmt == "jsonl":
        for event in events:
            out.write(json.dumps(event) + "\n")
        return
    if not events:
        out.write("No drift.\n")
        return
    rows = [("DETECTED (UTC)", "SEVERITY", "KIND", "KEY OR SCOPE", "PRINCIPAL", "CHANGE")]
    for e in events:
        before, after = e.get("before"), e.get("after")
        change = ""
        if isinstance(before, dict) and isinstance(after, dict) and "actions" in after:
            gained = sorted(set(after.get("actions", [])) - set(before.get("actions", [])))
            lost = sorted(set(before.get("actions", [])) - set(after.get("actions", [])))
            change = " ".join([*(f"+{a}" for a in gained), *(f"-{a}" for a in lost)]) or "conditions changed"
        elif isinstance(after, dict) and "actions" in after:
            change = _short_actions(after["actions"])
        elif isinstance(after, dict) and "error" in after:
            change = str(after["error"])
        where = str(e.get("key_arn") or f"{e.get('account')}/{e.get('region')}")
        when = _when(e.get("detected_at"))
        rows.append((when, str(e.get("severity")), str(e.get("kind")), where, str(e.get("principal") or "-"), change))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        out.write(("  ".join(row[i].ljust(widths[i]) for i in range(5)) + "  " + row[5]).rstrip() + "\n")


def _write_objects(objects: Sequence[object], fmt: str, out: TextIO) -> None:
    """A JSON array (`ocsf`), or one object a line (`ocsf-jsonl`)."""
    if fmt.endswith("jsonl"):
        for obj in objects:
            out.write(json.dumps(obj) + "\n")
        return
    json.dump(list(objects), out, indent=2)
    out.write("\n")


def _when(seconds: object) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"  # type: ignore[arg-type]


def write_snapshots(snapshots: Sequence[dict[str, object]], fmt: str, out: TextIO) -> None:
    """`kmsaudit snapshots`: ids to pass to `findings --snapshot`, with when and how complete."""
    if fmt == "json":
        json.dump(list(snapshots), out, indent=2)
        out.write("\n")
        return
    if fmt == "jsonl":
        for snapshot in snapshots:
            out.write(json.dumps(snapshot) + "\n")
        return
    if not snapshots:
        out.write("No snapshot yet.\n")
        return
    out.write(f"{'ID':>6}  {'FINISHED (UTC)':19}  {'KEYS':>7}  {'FINDINGS':>8}  SCOPES\n")
    for s in snapshots:
        failed = int(s["failed_scopes"])  # type: ignore[call-overload]
        scopes = f"{s['scopes']} ({failed} failed)" if failed else f"{s['scopes']}"
        out.write(f"{s['id']:>6}  {_when(s['finished_at']):19}  {s['keys']:>7}  {s['findings']:>8}  {scopes}\n")
