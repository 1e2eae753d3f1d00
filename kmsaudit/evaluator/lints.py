"""Things wrong or risky in a key policy that are not access (issue #2, SPEC §2.3–§2.5)."""

from __future__ import annotations

from kmsaudit.evaluator.statements import Policy
from kmsaudit.model import KeyRecord, Lint

MAX_KEY_POLICY_BYTES = 32768  # 000_…txt: "cannot exceed 32 KB (32,768 bytes)"


def key_policy_lints(key: KeyRecord, policy: Policy) -> list[Lint]:
    lints = [Lint("statement-skipped", problem, key_arn=key.arn, account=key.account) for problem in policy.problems]
    if isinstance(key.policy, str) and len(key.policy) > MAX_KEY_POLICY_BYTES // 4:
        size = len(key.policy.encode())
        if size > MAX_KEY_POLICY_BYTES:
            lints.append(
                Lint(
                    "key-policy-too-large",
                    f"key policy is {size} bytes; AWS allows 32,768",
                    key_arn=key.arn,
                    account=key.account,
                )
            )
    own = frozenset((key.account,))
    for stmt in policy.statements:
        if stmt.principals is not None:
            if not stmt.notes:
                continue
            pset = stmt.principals
            # Local-only actions are fine for the key's own account (most statements: admins).
            local_fine = not stmt.allow or (not (pset.any or stmt.not_principal) and pset.mentioned <= own)
            if local_fine and stmt.local_notes_only:
                continue
        if stmt.principals is None:
            lints.append(
                Lint(
                    "statement-without-principal",
                    "a key policy statement has no Principal: it applies to nobody",
                    key_arn=key.arn,
                    account=key.account,
                    sid=stmt.sid,
                )
            )
            continue
        for kind, text in stmt.notes:
            if kind == "nothing":
                # 002_…txt: `"Action": "kms:"` is accepted by the CLI example and grants nothing.
                lints.append(
                    Lint(
                        "action-matches-nothing",
                        f"action pattern {text!r} matches no KMS action",
                        key_arn=key.arn,
                        account=key.account,
                        sid=stmt.sid,
                    )
                )
            elif kind == "unique-id":
                lints.append(
                    Lint(
                        "stale-principal",
                        f"principal {text} is a unique id: the user or role it named was deleted, "
                        "and it grants nothing",
                        key_arn=key.arn,
                        account=key.account,
                        principal=text,
                        sid=stmt.sid,
                    )
                )
            elif kind == "invalid":
                lints.append(
                    Lint(
                        "invalid-principal",
                        f"principal {text!r} is not a valid principal (IAM groups and wildcard ARNs are not)",
                        key_arn=key.arn,
                        account=key.account,
                        principal=text,
                        sid=stmt.sid,
                    )
                )
            elif kind == "local-only" and not local_fine:
                external = sorted(
                    r.value for r in pset.refs if r.kind in ("account", "iam", "session") and r.account != key.account
                )
                if not (external or pset.any or stmt.not_principal):
                    continue
                who = ", ".join(external) or "*"
                lints.append(
                    Lint(
                        "ineffective-cross-account-action",
                        f"{text} is allowed to {who}, but it never works across accounts (only cryptographic "
                        "operations, DescribeKey, GetPublicKey, GetKeyRotationStatus and the grant operations do)",
                        key_arn=key.arn,
                        account=key.account,
                        principal=who,
                        sid=stmt.sid,
                    )
                )
    return lints
