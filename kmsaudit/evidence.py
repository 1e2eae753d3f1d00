"""The documents a finding was decided from, kept with each snapshot so that `kmsaudit explain`
can say why a stored finding exists and verify what would remove it (issue #27): per key its
grants, tags and properties (the key policy is kept apart, in canonical form, for `history`); per
audited account the principals and their policies as the evaluator read them; the organization's
accounts and control policies. JSON with sorted keys, so an unchanged document has one hash and
is stored once (kmsaudit/store/evidence.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from kmsaudit.model import Grant, IamPrincipal, KeyRecord, Organization, PolicyDocument

ORG_SUBJECT = "org"


def key_subject(arn: str) -> str:
    return "key:" + arn


def iam_subject(account: str) -> str:
    return "iam:" + account


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def key_text(key: KeyRecord) -> str:
    """What of a key besides its policy the evaluator reads (grants, tags, properties)."""
    fields = dataclasses.asdict(key)
    for dropped in ("policy", "unreadable"):  # errors stay: an unreadable policy's finding names them
        fields.pop(dropped)
    # AWS lists grants, tags and aliases in no promised order: one text for one state.
    fields["grants"] = sorted(fields["grants"], key=lambda g: (str(g.get("grant_id")), _dumps(g)))
    fields["tags"] = sorted(fields["tags"], key=_dumps)
    fields["aliases"] = sorted(fields["aliases"])
    return _dumps(fields)


def key_from(text: str, policy: str | None) -> KeyRecord:
    fields = json.loads(text)
    fields["grants"] = tuple(Grant(**{**g, "operations": tuple(g["operations"])}) for g in fields.get("grants", ()))
    for name in ("aliases", "errors"):
        fields[name] = tuple(fields.get(name, ()))
    fields["tags"] = tuple(tuple(t) for t in fields.get("tags", ()))
    return KeyRecord(policy=policy, **fields)


def principals_text(principals: Iterable[IamPrincipal]) -> str:
    return _dumps(sorted((dataclasses.asdict(p) for p in principals), key=lambda p: p["arn"]))


def principals_from(text: str) -> list[IamPrincipal]:
    out = []
    for p in json.loads(text):
        boundary = p.get("boundary")
        out.append(
            IamPrincipal(
                arn=p["arn"],
                account=p["account"],
                kind=p["kind"],
                name=p["name"],
                policies=tuple(PolicyDocument(d["name"], d["document"]) for d in p.get("policies", ())),
                boundary=PolicyDocument(boundary["name"], boundary["document"]) if boundary else None,
                unresolved=tuple(p.get("unresolved", ())),
                tags=tuple(tuple(t) for t in p.get("tags", ())),
            )
        )
    return out


def organization_text(org: Organization) -> str:
    return _dumps(
        {
            "org_id": org.org_id,
            "accounts": sorted(org.accounts),
            "scps": org.scps,
            "rcps": org.rcps,
            "org_paths": org.org_paths,
        }
    )


def organization_from(text: str) -> Organization:
    data = json.loads(text)

    def levels(value: Mapping[str, Any]) -> dict[str, tuple[tuple[Any, ...], ...]]:
        return {account: tuple(tuple(level) for level in lv) for account, lv in value.items()}

    return Organization(
        data["org_id"],
        frozenset(data.get("accounts", ())),
        scps=levels(data.get("scps", {})),
        rcps=levels(data.get("rcps", {})),
        org_paths=dict(data.get("org_paths", {})),
    )
