"""`kmsaudit check`: the pre-flight of a deployment, before its first scan (issue #13).

Per account: the credentials resolve (or the role is assumed), they are that account's
(`sts:GetCallerIdentity`), and one real read of each kind a scan makes is allowed (KMS
`ListKeys`, `GetKeyPolicy`, `ListGrants`; IAM `GetAccountAuthorizationDetails`). Then the
organization (if configured), the store path, each alert sink (a dry request) and the daemon's
listen address. Each failure comes with what to do about it. Nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from kmsaudit.collect.api import Api
from kmsaudit.collect.session import STS_REGION, Sessions
from kmsaudit.config.settings import Config
from kmsaudit.delivery.alerts import build_sinks
from kmsaudit.errors import AlertError, CollectError, KmsAuditError
from kmsaudit.store.database import check_location

ROLE_TEMPLATE = "deploy/cloudformation/kmsaudit-audit-role-stackset.json"
READ_POLICY = "deploy/iam/kmsaudit-readonly.json"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class _Target:
    account: str
    role_arn: str | None
    external_id: str | None
    region: str


def _fix(exc: CollectError, target: _Target, what: str) -> str:
    if exc.code == "credentials":
        return "give kmsaudit AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID…, or an instance or pod role)"
    if exc.code == "network":
        return "check the network path to AWS (proxy, VPC endpoints, AWS_ENDPOINT_URL)"
    if exc.code == "access-denied" and what == "credentials":
        return (
            f"create the role in {target.account} ({ROLE_TEMPLATE}) and let kmsaudit's identity assume it "
            "(its trust policy and ExternalId)"
        )
    if exc.code == "access-denied":
        return f"attach {READ_POLICY} to the audit role of {target.account}"
    return "see the error; `kmsaudit scan` would fail the same way"


async def _account(api: Api, sessions: Sessions, target: _Target) -> list[Check]:
    head = f"account {target.account}"
    how = f"role {target.role_arn} assumed" if target.role_arn else "ambient credentials"
    try:
        session = await sessions.for_account(target.account, target.role_arn, target.external_id)
        if target.role_arn is None and await session.get_credentials() is None:
            raise CollectError("no AWS credentials found", code="credentials")
    except CollectError as exc:
        return [Check(f"{head}: credentials", False, str(exc), _fix(exc, target, "credentials"))]
    out = [Check(f"{head}: credentials", True, how)]
    try:
        sts = await sessions.client(session, "sts", STS_REGION)
        actual = str((await api.call(sts, target.account, "global", "GetCallerIdentity")).get("Account", ""))
    except CollectError as exc:
        return [*out, Check(f"{head}: identity", False, str(exc), _fix(exc, target, "identity"))]
    if actual != target.account:
        fix = "set role_arn to a role in that account" if target.role_arn is None else "fix the account id or role_arn"
        return [
            *out,
            Check(f"{head}: identity", False, f"the credentials are account {actual}'s, not {target.account}'s", fix),
        ]
    out.append(Check(f"{head}: identity", True, f"sts:GetCallerIdentity says {actual}"))
    out.append(await _kms_read(api, sessions, session, target))
    out.append(await _iam_read(api, sessions, session, target))
    return out


async def _kms_read(api: Api, sessions: Sessions, session: Any, target: _Target) -> Check:
    name = f"account {target.account}: kms read"
    try:
        kms = await sessions.client(session, "kms", target.region)
        keys = (await api.call(kms, target.account, target.region, "ListKeys", Limit=1)).get("Keys") or []
        if not keys:
            return Check(name, True, f"kms:ListKeys in {target.region} (no key there to read further)")
        key = str(keys[0].get("KeyArn") or keys[0].get("KeyId"))
        await api.call(kms, target.account, target.region, "GetKeyPolicy", KeyId=key, PolicyName="default")
        await api.call(kms, target.account, target.region, "ListGrants", KeyId=key, Limit=1)
    except CollectError as exc:
        return Check(name, False, str(exc), _fix(exc, target, "kms"))
    except Exception as exc:  # a key deleted between the two calls, …: the read itself was allowed
        return Check(name, True, f"kms:ListKeys in {target.region}; then {type(exc).__name__}")
    return Check(name, True, f"kms:ListKeys, GetKeyPolicy, ListGrants in {target.region}")


async def _iam_read(api: Api, sessions: Sessions, session: Any, target: _Target) -> Check:
    name = f"account {target.account}: iam read"
    try:
        iam = await sessions.client(session, "iam", STS_REGION)
        await api.call(iam, target.account, "global", "GetAccountAuthorizationDetails", MaxItems=1)
    except CollectError as exc:
        return Check(name, False, str(exc), _fix(exc, target, "iam"))
    return Check(name, True, "iam:GetAccountAuthorizationDetails")


async def _organization(api: Api, sessions: Sessions, config: Config) -> tuple[list[Check], list[_Target]]:
    org = config.organization
    assert org is not None
    arn = org.management_role_arn
    target = _Target(arn.split(":")[4] if arn else "organization", arn, org.external_id, "us-east-1")
    try:
        session = await sessions.for_account(target.account, arn, org.external_id)
        client = await sessions.client(session, "organizations", "us-east-1")
        described = await api.call(client, "organization", "global", "DescribeOrganization")
        accounts = await api.pages(client, "organization", "global", "ListAccounts", "Accounts")
    except CollectError as exc:
        fix = "run kmsaudit with the management account's credentials, or set management_role_arn"
        if exc.code == "access-denied" and "NotInUse" in str(exc):
            fix = "these credentials belong to no organization: remove [organization] or use its management account"
        return [Check("organization", False, str(exc), fix)], []
    members = [
        _Target(str(a["Id"]), f"arn:aws:iam::{a['Id']}:role/{org.role_name}", org.external_id, config.scan.regions[0])
        for a in accounts
        if a.get("Status", "ACTIVE") == "ACTIVE"
    ]
    org_id = described["Organization"]["Id"]
    return [Check("organization", True, f"{org_id}: {len(members)} active accounts")], members


async def _sinks(config: Config) -> list[Check]:
    try:
        sinks = build_sinks(config.alerts)
    except KmsAuditError as exc:
        return [Check("alert sinks", False, str(exc), "export the environment variable the config names")]
    out = []
    async with aiohttp.ClientSession() as http:
        for sink in sinks:
            try:
                detail = await sink.probe(http)
            except AlertError as exc:
                out.append(
                    Check(f"alert sink {sink.name}", False, str(exc), "check the URL and the network path to it")
                )
            else:
                out.append(Check(f"alert sink {sink.name}", True, detail))
    return out


async def _events(api: Api, sessions: Sessions, config: Config) -> list[Check]:
    """Each event queue answers the credentials that will read it (README "Real-time detection")."""
    from kmsaudit.run.receive import queue_region

    assert config.events is not None
    out = []
    for url in config.events.queues:
        region = queue_region(url, config.events)
        name = f"event queue {url.rstrip('/').rsplit('/', 1)[-1]}"
        try:
            session = await sessions.for_account("events", config.events.role_arn, config.events.external_id)
            sqs = await sessions.client(session, "sqs", region)
            wanted = ["ApproximateNumberOfMessages"]
            answer = await api.call(sqs, "events", region, "GetQueueAttributes", QueueUrl=url, AttributeNames=wanted)
        except CollectError as exc:
            fix = (
                "create it (deploy/cloudformation/kmsaudit-events.json, Mode=central) and allow "
                "sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on it"
            )
            out.append(Check(name, False, str(exc), fix))
            continue
        waiting = answer.get("Attributes", {}).get("ApproximateNumberOfMessages", "?")
        out.append(Check(name, True, f"{region}: {waiting} messages waiting"))
    return out


async def _exports(api: Api, sessions: Sessions, config: Config) -> list[Check]:
    """Each Security Hub export: the account the findings will land in has Security Hub enabled."""
    out = []
    for export in config.export:
        name = f"export {export.sink_name.removeprefix('export:')}"
        try:
            session = await sessions.for_account(export.sink_name, export.role_arn, export.external_id)
            sts = await sessions.client(session, "sts", export.region)
            account = str((await api.call(sts, "export", export.region, "GetCallerIdentity"))["Account"])
            hub = await sessions.client(session, "securityhub", export.region)
            await api.call(hub, "export", export.region, "DescribeHub")
        except CollectError as exc:
            fix = (
                "enable Security Hub in that account and region, and allow securityhub:BatchImportFindings "
                "and sts:GetCallerIdentity to the credentials (role_arn, or the ambient ones)"
            )
            out.append(Check(name, False, str(exc), fix))
            continue
        out.append(Check(name, True, f"findings go to the Security Hub of {account} in {export.region}"))
    return out


def _store(config: Config) -> Check:
    try:
        return Check("store", True, check_location(config.store.path))
    except KmsAuditError as exc:
        return Check("store", False, str(exc), "point [store] path at a file kmsaudit may create and write")


def _listen(config: Config) -> Check:
    listen = config.daemon.listen
    host, _, port = listen.rpartition(":")
    try:
        with socket.create_server((host.strip("[]"), int(port))):
            pass
    except OSError as exc:
        return Check(f"listen {listen}", False, exc.strerror or str(exc), "another process listens there (a daemon?)")
    return Check(f"listen {listen}", True, "free")


async def run_checks(config: Config) -> list[Check]:
    api = Api(config.scan)
    results: list[Check] = []
    targets = [_Target(a.id, a.role_arn, a.external_id, config.regions_of(a)[0]) for a in config.accounts]
    async with Sessions(config.scan, on_response=api.on_response) as sessions:
        if config.organization is not None:
            org_checks, members = await _organization(api, sessions, config)
            results += org_checks
            known = {t.account for t in targets}
            targets += [m for m in members if m.account not in known]
        for found in await asyncio.gather(*(_account(api, sessions, t) for t in targets)):
            results += found
        if config.events is not None:
            results += await _events(api, sessions, config)
        results += await _exports(api, sessions, config)
    results.append(_store(config))
    for name in config.acceptance.files:
        exists = Path(name).exists()
        detail = (
            f"{name}: {len(config.accept)} entries in all" if exists else f"{name}: not written yet (accepts nothing)"
        )
        results.append(Check("acceptance file", True, detail))
    results += await _sinks(config)
    if config.alerts or config.daemon.listen:
        results.append(_listen(config))
    return results


def write_checks(results: Sequence[Check], out: TextIO) -> None:
    width = max((len(r.name) for r in results), default=10)
    for r in results:
        out.write(f"{'✓' if r.ok else '✗'} {r.name.ljust(width)}  {r.detail}\n")
        if not r.ok and r.fix:
            out.write(f"  {' ' * width}  fix: {r.fix}\n")
    failed = sum(not r.ok for r in results)
    out.write(
        f"\n{len(results) - failed} of {len(results)} checks passed" + (f"; {failed} failed\n" if failed else "\n")
    )
