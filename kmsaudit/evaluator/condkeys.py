# ruff: noqa: E501  (a data table: one row a line)
"""One table of condition keys (SPEC §2.7): when each key is in a request, whether it is decided
at audit time, its type, and the page it rests on. Absent-key semantics follow from this table
alone: `conditions.Context.lookup` asks it about every key a subject's context does not give,
and `access.py` asks it which operations carry an operation-bound key.

Presence (who or what puts the key in the request):
  always          every request
  iam             every request of an IAM identity (user, role session, root, federated user);
                  absent when an AWS service principal calls
  signed          every signed request; for a service principal the page gives no value (undecided)
  service         only when an AWS service principal calls
  service-source  only when a service calls on behalf of a resource (`aws:Source…`)
  org             only when the principal's account is an organization member
  resource-org    only when the key's account is an organization member
  tagged          only when the principal carries that tag
  resource-tagged only when the key carries that tag
  aliased         only when the key has aliases
  key             a property every KMS key has (decided from the key)
  user            only for IAM users (not roles, root or federated users)
  temporary       only with temporary credentials (always for roles and federated users)
  mfa             only when MFA was used
  via-service     only when a service calls with the principal's credentials
  vpc             only through a VPC endpoint
  not-vpc         except through a VPC endpoint
  ec2             only with an EC2 instance's role credentials
  chosen          only when the caller puts it in the request (a header, a parameter)
  operation       only in requests of the listed operations (and then as the caller chooses)

Decided: `principal` (from who asks), `resource` (from the key), `request` (never at audit time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GLOBAL: Final = 'IAM User Guide, "AWS global condition context keys"'
KMS: Final = 'AWS KMS Developer Guide, "AWS KMS condition keys"'


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str  # as the documentation spells it; a family ends with "/" or ":"
    presence: str
    decided: str  # "principal" | "resource" | "request"
    type: str  # String | ARN | Bool | Numeric | Date | IP | Binary
    multi: bool
    doc: str
    operations: frozenset[str] | None = None  # presence "operation", or a key with exceptions


def _ops(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CRYPTO = "Decrypt Encrypt GenerateDataKey GenerateDataKeyPair GenerateDataKeyPairWithoutPlaintext GenerateDataKeyWithoutPlaintext ReEncryptFrom ReEncryptTo"

_ROWS: tuple[tuple[str, str, str, str, bool, str, str | None], ...] = (
    # name, presence, decided, type, multi, page, operations (space-separated)
    ("aws:CalledVia", "via-service", "request", "String", True, GLOBAL, None),
    ("aws:CalledViaFirst", "via-service", "request", "String", False, GLOBAL, None),
    ("aws:CalledViaLast", "via-service", "request", "String", False, GLOBAL, None),
    ("aws:ViaAWSService", "always", "request", "Bool", False, GLOBAL, None),
    ("aws:CurrentTime", "always", "request", "Date", False, GLOBAL, None),
    ("aws:EpochTime", "always", "request", "Date", False, GLOBAL, None),
    ("aws:SecureTransport", "always", "request", "Bool", False, GLOBAL, None),
    ("aws:UserAgent", "always", "request", "String", False, GLOBAL, None),
    ("aws:RequestedRegion", "always", "resource", "String", False, GLOBAL, None),
    ("aws:Referer", "chosen", "request", "String", False, GLOBAL, None),
    ("aws:MultiFactorAuthAge", "mfa", "request", "Numeric", False, GLOBAL, None),
    ("aws:MultiFactorAuthPresent", "temporary", "request", "Bool", False, GLOBAL, None),
    ("aws:TokenIssueTime", "temporary", "request", "Date", False, GLOBAL, None),
    ("aws:FederatedProvider", "chosen", "request", "String", False, GLOBAL, None),
    ("aws:SourceIdentity", "chosen", "request", "String", False, GLOBAL, None),
    ("aws:AssumedRoot", "chosen", "request", "Bool", False, GLOBAL, None),
    ("aws:PrincipalAccount", "iam", "principal", "String", False, GLOBAL, None),
    ("aws:PrincipalArn", "iam", "principal", "ARN", False, GLOBAL, None),
    ("aws:PrincipalType", "signed", "principal", "String", False, GLOBAL, None),
    ("aws:userid", "signed", "principal", "String", False, GLOBAL, None),
    ("aws:username", "user", "principal", "String", False, GLOBAL, None),
    ("aws:PrincipalIsAWSService", "always", "principal", "Bool", False, GLOBAL, None),
    ("aws:PrincipalServiceName", "service", "principal", "String", False, GLOBAL, None),
    ("aws:PrincipalServiceNamesList", "service", "principal", "String", True, GLOBAL, None),
    ("aws:PrincipalOrgID", "org", "principal", "String", False, GLOBAL, None),
    ("aws:PrincipalOrgPaths", "org", "principal", "String", True, GLOBAL, None),
    ("aws:PrincipalTag/", "tagged", "principal", "String", False, GLOBAL, None),
    ("aws:SourceAccount", "service-source", "principal", "String", False, GLOBAL, None),
    ("aws:SourceArn", "service-source", "principal", "ARN", False, GLOBAL, None),
    ("aws:SourceOrgID", "service-source", "principal", "String", False, GLOBAL, None),
    ("aws:SourceOrgPaths", "service-source", "principal", "String", True, GLOBAL, None),
    ("aws:SourceIp", "not-vpc", "request", "IP", False, GLOBAL, None),
    ("aws:SourceVpc", "vpc", "request", "String", False, GLOBAL, None),
    ("aws:SourceVpce", "vpc", "request", "String", False, GLOBAL, None),
    ("aws:SourceVpcArn", "vpc", "request", "ARN", False, GLOBAL, None),
    ("aws:VpcSourceIp", "vpc", "request", "IP", False, GLOBAL, None),
    ("aws:VpceAccount", "vpc", "request", "String", False, GLOBAL, None),
    ("aws:VpceOrgID", "vpc", "request", "String", False, GLOBAL, None),
    ("aws:VpceOrgPaths", "vpc", "request", "String", True, GLOBAL, None),
    ("aws:Ec2InstanceSourceVpc", "ec2", "request", "String", False, GLOBAL, None),
    ("aws:Ec2InstanceSourcePrivateIPv4", "ec2", "request", "IP", False, GLOBAL, None),
    ("aws:ResourceAccount", "key", "resource", "String", False, GLOBAL, None),
    ("aws:ResourceOrgID", "resource-org", "resource", "String", False, GLOBAL, None),
    ("aws:ResourceOrgPaths", "resource-org", "resource", "String", True, GLOBAL, None),
    ("aws:ResourceTag/", "resource-tagged", "resource", "String", False, GLOBAL, None),
    # Tags in the request: only operations that attach tags (none of SPEC §2.3's cross-account ones).
    ("aws:RequestTag/", "operation", "request", "String", False, GLOBAL, "CreateKey TagResource ReplicateKey"),
    ("aws:TagKeys", "operation", "request", "String", True, GLOBAL, "CreateKey TagResource UntagResource ReplicateKey"),
    ("kms:BypassPolicyLockoutSafetyCheck", "operation", "request", "Bool", False, KMS, "CreateKey PutKeyPolicy"),
    # In requests for "KMS key resource operations, Custom key store operations" (KMS guide).
    ("kms:CallerAccount", "always", "principal", "String", False, KMS, None),
    ("kms:CustomerMasterKeySpec", "key", "resource", "String", False, KMS, None),
    ("kms:CustomerMasterKeyUsage", "key", "resource", "String", False, KMS, None),
    (
        "kms:DataKeyPairSpec",
        "operation",
        "request",
        "String",
        False,
        KMS,
        "GenerateDataKeyPair GenerateDataKeyPairWithoutPlaintext",
    ),
    ("kms:EncryptionAlgorithm", "operation", "request", "String", False, KMS, _CRYPTO + " GetPublicKey"),
    ("kms:EncryptionContext:", "operation", "request", "String", False, KMS, _CRYPTO + " CreateGrant RetireGrant"),
    ("kms:EncryptionContextKeys", "operation", "request", "String", True, KMS, _CRYPTO + " CreateGrant RetireGrant"),
    ("kms:ExpirationModel", "operation", "request", "String", False, KMS, "ImportKeyMaterial"),
    ("kms:GrantConstraintType", "operation", "request", "String", False, KMS, "CreateGrant"),
    ("kms:GrantIsForAWSResource", "operation", "request", "Bool", False, KMS, "CreateGrant ListGrants RevokeGrant"),
    ("kms:GrantOperations", "operation", "request", "String", True, KMS, "CreateGrant"),
    ("kms:GranteePrincipal", "operation", "request", "String", False, KMS, "CreateGrant"),
    ("kms:RetiringPrincipal", "operation", "request", "String", False, KMS, "CreateGrant"),
    ("kms:KeyAgreementAlgorithm", "operation", "request", "String", False, KMS, "DeriveSharedSecret"),
    ("kms:KeyOrigin", "key", "resource", "String", False, KMS, None),
    ("kms:KeySpec", "key", "resource", "String", False, KMS, None),
    ("kms:KeyUsage", "key", "resource", "String", False, KMS, None),
    ("kms:MultiRegion", "key", "resource", "Bool", False, KMS, None),
    ("kms:MultiRegionKeyType", "key", "resource", "String", False, KMS, None),
    ("kms:MacAlgorithm", "operation", "request", "String", False, KMS, "GenerateMac VerifyMac"),
    ("kms:MessageType", "operation", "request", "String", False, KMS, "Sign Verify"),
    ("kms:SigningAlgorithm", "operation", "request", "String", False, KMS, "Sign Verify"),
    ("kms:PrimaryRegion", "operation", "request", "String", False, KMS, "UpdatePrimaryRegion"),
    ("kms:ReEncryptOnSameKey", "operation", "request", "Bool", False, KMS, "ReEncryptFrom ReEncryptTo"),
    (
        "kms:RequestAlias",
        "operation",
        "request",
        "String",
        False,
        KMS,
        _CRYPTO + " DescribeKey GetPublicKey Sign Verify GenerateMac VerifyMac DeriveSharedSecret",
    ),
    ("kms:ResourceAliases", "aliased", "resource", "String", True, KMS, None),
    ("kms:ReplicaRegion", "operation", "request", "String", False, KMS, "ReplicateKey"),
    ("kms:RotationPeriodInDays", "operation", "request", "Numeric", False, KMS, "EnableKeyRotation"),
    (
        "kms:ScheduleKeyDeletionPendingWindowInDays",
        "operation",
        "request",
        "Numeric",
        False,
        KMS,
        "ScheduleKeyDeletion",
    ),
    ("kms:ValidTo", "operation", "request", "Date", False, KMS, "ImportKeyMaterial"),
    ("kms:ViaService", "via-service", "request", "String", False, KMS, None),
    ("kms:WrappingAlgorithm", "operation", "request", "String", False, KMS, "GetParametersForImport"),
    ("kms:WrappingKeySpec", "operation", "request", "String", False, KMS, "GetParametersForImport"),
    (
        "kms:RecipientAttestation:",
        "operation",
        "request",
        "String",
        False,
        KMS,
        "Decrypt DeriveSharedSecret GenerateDataKey GenerateDataKeyPair",
    ),
)


def _info(row: tuple[str, str, str, str, bool, str, str | None]) -> KeyInfo:
    name, presence, decided, kind, multi, doc, ops = row
    operations = _ops(ops) if ops is not None else None
    return KeyInfo(name, presence, decided, kind, multi, doc, operations)


TABLE: Final[dict[str, KeyInfo]] = {row[0].lower(): _info(row) for row in _ROWS}
_FAMILIES: Final = tuple(name for name in TABLE if name.endswith(("/", ":")))


def key_info(key_lc: str) -> KeyInfo | None:
    """The row for a lower-case condition key, or None: a key the table does not know."""
    found = TABLE.get(key_lc)
    if found is not None:
        return found
    for family in _FAMILIES:
        if key_lc.startswith(family) and len(key_lc) > len(family):
            return TABLE[family]
    return None


# What a subject's context says when the key is not in it (conditions.Context.lookup).
ABSENT: Final = "absent"
PRESENT: Final = "present"  # in the request, its value not known at audit time
MAYBE: Final = "maybe"  # in some requests and not others: undecided


def presence(info: KeyInfo, caller: str, tags_known: bool) -> str:
    """Whether a key the subject's context does not give is absent, present or undecided.

    `caller`: user, role (a role session), root, federated, service, or any (some principal of an
    account); `tags_known`: the context gives every tag the principal has (from its
    authorization details), so a tag it does not give is absent."""
    p = info.presence
    service = caller == "service"
    if p in ("always", "key"):
        return PRESENT
    if p == "iam":
        return ABSENT if service else PRESENT
    if p == "signed":
        return MAYBE if service else PRESENT
    if p == "service":
        return PRESENT if service else ABSENT
    if p == "service-source":
        return MAYBE if service else ABSENT
    if p == "org":  # an account's organization, when known, is in the context (scope.org_context)
        return ABSENT if service else MAYBE
    if p == "tagged":
        return ABSENT if service or tags_known else MAYBE
    if p == "user":
        return PRESENT if caller == "user" else (MAYBE if caller == "any" else ABSENT)
    if p == "temporary":
        return PRESENT if caller in ("role", "federated") else MAYBE
    if p in ("resource-tagged", "aliased"):
        return ABSENT  # the key's tags and aliases are collected whole
    return MAYBE


__all__ = ["ABSENT", "MAYBE", "PRESENT", "TABLE", "KeyInfo", "key_info", "presence"]
