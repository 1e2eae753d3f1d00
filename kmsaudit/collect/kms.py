"""One scope (account × region): every key with its policy, grants, tags and aliases (SPEC §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from botocore.exceptions import ClientError

from kmsaudit.collect.api import Api
from kmsaudit.collect.errors import convert, error_code, is_missing
from kmsaudit.model import Grant, KeyRecord

log = structlog.get_logger("kmsaudit.collect")
KEY_WORKERS = 32  # keys read at once per scope; each key's four reads run concurrently
# The largest pages AWS serves (its defaults are 100/50/50): a key with 50,000 grants is 500
# ListGrants calls at the slowest quota, not 1,000 (issue #19).
PAGE_LIMITS = {"ListKeys": 1000, "ListAliases": 100, "ListGrants": 100, "ListResourceTags": 50}


def _grant(raw: dict[str, Any]) -> Grant:
    return Grant(
        grant_id=str(raw.get("GrantId", "")),
        grantee_principal=str(raw.get("GranteePrincipal", "")),
        operations=tuple(str(op) for op in raw.get("Operations") or ()),
        key_id=str(raw.get("KeyId", "")),
        name=str(raw.get("Name", "") or ""),
        retiring_principal=str(raw.get("RetiringPrincipal", "") or ""),
        issuing_account=str(raw.get("IssuingAccount", "") or ""),
        constraints=raw.get("Constraints") or None,
    )


async def _read_key(
    api: Api, kms: Any, account: str, region: str, key_id: str, key_arn: str, aliases: dict[str, list[str]]
) -> KeyRecord | None:
    """DescribeKey, GetKeyPolicy, ListGrants and ListResourceTags of one key, concurrently."""
    results = await asyncio.gather(
        api.call(kms, account, region, "DescribeKey", KeyId=key_arn),
        api.call(kms, account, region, "GetKeyPolicy", KeyId=key_arn, PolicyName="default"),
        api.pages(kms, account, region, "ListGrants", "Grants", KeyId=key_arn, Limit=PAGE_LIMITS["ListGrants"]),
        api.pages(
            kms, account, region, "ListResourceTags", "Tags", KeyId=key_arn, Limit=PAGE_LIMITS["ListResourceTags"]
        ),
        return_exceptions=True,
    )
    describe, policy, grants, tags = results
    if any(isinstance(r, ClientError) and error_code(r) == "NotFoundException" for r in results):
        # Deleted between ListKeys and now: skipped, with a log event (issue #3).
        log.info("key.vanished", account=account, region=region, key_id=key_id)
        return None
    errors: list[str] = []
    codes: list[str] = []
    for result, operation in zip(
        results, ("DescribeKey", "GetKeyPolicy", "ListGrants", "ListResourceTags"), strict=True
    ):
        if isinstance(result, ClientError):  # a code `call` leaves to us (the key's state)
            errors.append(f"{operation}: {error_code(result)}")
            if not is_missing(result):
                codes.append(error_code(result))
        elif isinstance(result, Exception):
            # This key alone could not be read (its policy shuts the audit role out, or reads keep
            # failing after every retry): the key is reported unreadable and keeps its last good
            # state; the rest of the scope is still audited (SPEC §5).
            failure = convert(result, operation)
            errors.append(str(failure))
            codes.append(failure.code)
        elif isinstance(result, BaseException):
            raise result
    unreadable = codes[0] if codes else ""
    if unreadable:
        log.warning("key.unreadable", account=account, region=region, key_id=key_id, code=unreadable)
    meta = describe["KeyMetadata"] if isinstance(describe, dict) else {}
    return KeyRecord(
        arn=str(meta.get("Arn") or key_arn),
        account=account,
        region=region,
        key_id=key_id,
        policy=policy.get("Policy") if isinstance(policy, dict) else None,
        key_manager=str(meta.get("KeyManager", "CUSTOMER")),
        key_state=str(meta.get("KeyState", "")),
        key_spec=str(meta.get("KeySpec", "") or meta.get("CustomerMasterKeySpec", "")),
        key_usage=str(meta.get("KeyUsage", "")),
        origin=str(meta.get("Origin", "")),
        multi_region=meta.get("MultiRegion"),
        description=str(meta.get("Description", "") or "")[:500],
        aliases=tuple(sorted(aliases.get(key_id, ()))),
        tags=tuple((str(t.get("TagKey", "")), str(t.get("TagValue", ""))) for t in tags)
        if isinstance(tags, list)
        else (),
        grants=tuple(_grant(g) for g in grants) if isinstance(grants, list) else (),
        errors=tuple(errors),
        unreadable=unreadable,
    )


async def collect_region(
    api: Api, kms: Any, account: str, region: str, progress: Callable[[int], None] | None = None
) -> list[KeyRecord]:
    """Every key of the scope. Raises CollectError if the scope cannot be read completely."""
    listed, alias_list = await asyncio.gather(
        api.pages(kms, account, region, "ListKeys", "Keys", Limit=PAGE_LIMITS["ListKeys"]),
        api.pages(kms, account, region, "ListAliases", "Aliases", Limit=PAGE_LIMITS["ListAliases"]),
    )
    aliases: dict[str, list[str]] = {}
    for alias in alias_list:
        target = alias.get("TargetKeyId")
        if target and alias.get("AliasName"):
            aliases.setdefault(str(target), []).append(str(alias["AliasName"]))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for item in listed:
        queue.put_nowait(item)
    keys: list[KeyRecord] = []

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            key_id = str(item.get("KeyId"))
            record = await _read_key(api, kms, account, region, key_id, str(item.get("KeyArn") or key_id), aliases)
            if record is not None:
                keys.append(record)
            if progress is not None:
                progress(1)

    workers = [asyncio.create_task(worker()) for _ in range(min(KEY_WORKERS, len(listed)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    keys.sort(key=lambda k: k.arn)
    return keys


async def collect_keys(api: Api, kms: Any, account: str, region: str, key_ids: Iterable[str]) -> list[KeyRecord]:
    """Some keys of a scope only (a CloudTrail event named them): each key's four reads and its
    aliases. A key that no longer exists is left out. Raises CollectError as collect_region."""

    async def one(key_id: str) -> KeyRecord | None:
        try:
            listed = await api.pages(
                kms, account, region, "ListAliases", "Aliases", KeyId=key_id, Limit=PAGE_LIMITS["ListAliases"]
            )
        except ClientError as exc:
            if error_code(exc) == "NotFoundException":
                return None  # deleted since the event
            raise convert(exc, "ListAliases") from None
        names = [str(a["AliasName"]) for a in listed if a.get("AliasName")]
        bare = key_id.rsplit("/", 1)[-1]
        return await _read_key(api, kms, account, region, bare, key_id, {bare: names})

    records = await asyncio.gather(*(one(k) for k in sorted(set(key_ids))))
    return sorted((r for r in records if r is not None), key=lambda k: k.arn)
