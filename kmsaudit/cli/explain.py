"""`kmsaudit explain FINDING_ID` (SPEC §6): why a stored finding exists and the verified smallest
changes that remove it, decided again from the documents stored with its snapshot — the key
policy (canonical, as `history` prints it), the key's grants, tags and properties, the audited
accounts' principals and policies, the organization (kmsaudit/evidence.py). Nothing is read from
AWS: what is shown is what the finding was decided from."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kmsaudit.errors import KmsAuditError, UsageError
from kmsaudit.model import Finding

MIN_PREFIX = 8


class NotReproduced(KmsAuditError):
    """The stored documents do not give the stored finding again (exit 1, a clear message)."""


def _find(rows: list[dict[str, Any]], wanted: str, snapshot: int) -> dict[str, Any]:
    wanted = wanted.strip().lower()
    exact = [r for r in rows if r["id"] == wanted]
    found = exact or ([r for r in rows if r["id"].startswith(wanted)] if len(wanted) >= MIN_PREFIX else [])
    if not found:
        hint = f" (at least {MIN_PREFIX} characters of an id)" if len(wanted) < MIN_PREFIX else ""
        raise UsageError(
            f"no finding {wanted} in snapshot {snapshot}{hint}: `kmsaudit findings --format json` lists the ids"
        )
    if len(found) > 1:
        raise UsageError(f"{wanted} starts {len(found)} finding ids in snapshot {snapshot}: give more of it")
    return found[0]


def explain_stored(args: argparse.Namespace) -> int:
    from kmsaudit.config.settings import load_config
    from kmsaudit.formats.explained import write_explained
    from kmsaudit.store.database import Store

    config = load_config(args.config)
    store = Store(config.store.path, create=False)
    snapshot = args.snapshot if args.snapshot is not None else store.latest_snapshot()
    if snapshot is None or store.snapshot(snapshot) is None:
        which = f"no snapshot {args.snapshot}" if args.snapshot is not None else "no snapshot yet"
        raise UsageError(f"{which}: `kmsaudit snapshots` lists them (`kmsaudit scan` makes one)")
    row = _find(store.findings(snapshot), args.finding_id, snapshot)
    stored = Finding.from_dict(row)
    scanned = {view.account for view in store.scope_view(snapshot)}  # a scan trusts the accounts it audits
    if store.stored_key(stored.key_arn, snapshot) is None:
        raise NotReproduced(
            f"snapshot {snapshot} has no stored grants and properties for {stored.key_arn} (it was scanned "
            "before kmsaudit kept them): run a scan, then `kmsaudit explain` its finding"
        )
    scope = store.stored_scope(snapshot, [*config.trust.accounts, *sorted(scanned)])
    found = store.explain_stored(snapshot, [row], scope)
    if stored.id not in found:
        raise NotReproduced(
            f"finding {stored.id} of snapshot {snapshot} is not given again by the documents stored with it "
            "(its key or an account's IAM was last read before this kmsaudit kept them: the next scan records them)"
        )
    explanation, remediation = found[stored.id]
    policy = store.policy_at(stored.key_arn, snapshot)
    write_explained([(stored, explanation, remediation)], args.format, sys.stdout, policy, sys.stdout.isatty())
    return 0


def write_evaluated(explained: list[Any], fmt: str, policy: str | None) -> None:
    """`evaluate --explain`: every finding with its explanation and remediation, in `findings`'
    order, in any finding format (OCSF with `remediation`)."""
    import json

    from kmsaudit.formats.explained import explained_dict, write_explained
    from kmsaudit.formats.render import sort_findings

    order = {f.id: i for i, f in enumerate(sort_findings([f for f, _, _ in explained]))}
    explained.sort(key=lambda item: order[item[0].id])
    if fmt.startswith("ocsf"):
        from kmsaudit.formats.ocsf import finding_to_ocsf

        objects = [finding_to_ocsf(f, explained=(e, r)) for f, e, r in explained]
        if fmt == "ocsf":
            json.dump(objects, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.writelines(json.dumps(o) + "\n" for o in objects)
    elif fmt == "json":  # a list, as without --explain (`explain`'s one finding is an object)
        json.dump([explained_dict(*item) for item in explained], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not explained and fmt == "table":
        print("No cross-account access found.")
    else:
        write_explained(explained, "jsonl" if fmt == "jsonl" else "table", sys.stdout, policy, sys.stdout.isatty())
