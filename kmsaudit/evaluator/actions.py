"""The catalogue of KMS actions and action-pattern matching as bit masks.

Action sets are ints (one bit per catalogue action) so that key policy ∧ IAM ∧ ¬deny is
three `&` operations per principal rather than set algebra.
"""

from __future__ import annotations

from functools import lru_cache

from kmsaudit.evaluator.match import wildcard

# Every permission of the AWS KMS permissions reference ("kms:" + name).
KMS_ACTIONS: tuple[str, ...] = (
    "CancelKeyDeletion",
    "ConnectCustomKeyStore",
    "CreateAlias",
    "CreateCustomKeyStore",
    "CreateGrant",
    "CreateKey",
    "Decrypt",
    "DeleteAlias",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DescribeKey",
    "DisableKey",
    "DisableKeyRotation",
    "DisconnectCustomKeyStore",
    "EnableKey",
    "EnableKeyRotation",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GenerateRandom",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListAliases",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
    "ListRetirableGrants",
    "PutKeyPolicy",
    "ReEncryptFrom",
    "ReEncryptTo",
    "ReplicateKey",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "Sign",
    "SynchronizeMultiRegionKey",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
    "UpdateCustomKeyStore",
    "UpdateKeyDescription",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
)

# SPEC §2.3 (003_…txt): the only operations that work across accounts.
CROSS_ACCOUNT_ACTIONS: frozenset[str] = frozenset(
    {
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "ReEncryptFrom",
        "ReEncryptTo",
        "Sign",
        "Verify",
        "VerifyMac",
        "DeriveSharedSecret",
        "CreateGrant",
        "DescribeKey",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "ListGrants",
        "RetireGrant",
        "RevokeGrant",
    }
)

_INDEX = {name: i for i, name in enumerate(KMS_ACTIONS)}
_LOWER = {name.lower(): name for name in KMS_ACTIONS}
ALL_MASK = (1 << len(KMS_ACTIONS)) - 1
CROSS_ACCOUNT_MASK = sum(1 << _INDEX[name] for name in CROSS_ACCOUNT_ACTIONS)


def bit(action: str) -> int:
    """Mask of one catalogue action given as `Decrypt` or `kms:Decrypt` (any case)."""
    name = action.split(":", 1)[1] if ":" in action else action
    canonical = _LOWER.get(name.lower())
    return 1 << _INDEX[canonical] if canonical else 0


@lru_cache(maxsize=4096)
def pattern_mask(pattern: str) -> int:
    """The KMS actions an `Action` pattern matches (SPEC §2.4: case-insensitive, `*` `?`).

    A pattern of another service, or one such as `"kms:"` that matches no action, gives 0.
    """
    if not isinstance(pattern, str):
        return 0
    # Matched as written: `"kms:Decrypt "` names no action (IAM's grammar has no whitespace in an
    # action, and the pages describe no trimming), so a Deny or NotAction with it hides nothing;
    # the pattern is linted as matching nothing (issue #26: the simulator, too, matches literally).
    text = pattern.lower()
    if text == "*":
        return ALL_MASK
    service, sep, name = text.partition(":")
    if not sep:
        return 0
    if not wildcard(service, ignore_case=True).fullmatch("kms"):
        return 0
    matcher = wildcard(name, ignore_case=True)
    mask = 0
    for i, action in enumerate(KMS_ACTIONS):
        if matcher.fullmatch(action):
            mask |= 1 << i
    return mask


@lru_cache(maxsize=4096)
def names(mask: int) -> tuple[str, ...]:
    """Sorted `kms:`-prefixed names of the actions in a mask."""
    return tuple(sorted("kms:" + KMS_ACTIONS[i] for i in range(len(KMS_ACTIONS)) if mask >> i & 1))


def grant_operations_mask(operations: tuple[str, ...] | list[str]) -> int:
    """Mask of a grant's `Operations` (bare operation names, as ListGrants returns them)."""
    mask = 0
    for op in operations:
        if isinstance(op, str):
            mask |= bit(op)
    return mask
