"""The pure core: policies, grants and IAM details in, findings and lints out.

Nothing here does I/O, logging or asyncio (DESIGN.md): it is reused offline by
`kmsaudit evaluate` and must stay fast enough for thousands of keys a second.
"""

from kmsaudit.evaluator.decide import AuditScope, evaluate_keys
from kmsaudit.evaluator.iamdetails import principals_from_authorization_details
from kmsaudit.evaluator.policy import clear_caches

__all__ = ["AuditScope", "clear_caches", "evaluate_keys", "principals_from_authorization_details"]
