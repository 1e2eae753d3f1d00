"""Every AWS request goes through here: rate limits, bounded concurrency, pagination, records."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from botocore.exceptions import ClientError

from kmsaudit.collect.errors import THROTTLE_CODES, convert, is_missing
from kmsaudit.collect.pacing import Pacer
from kmsaudit.collect.slots import FairSlots
from kmsaudit.config.settings import DEFAULT_QUOTAS, ScanSettings

# (service, operation, outcome) for every HTTP attempt, retries included.
RequestObserver = Callable[[str, str, str], None]

# Token names of the paginated operations kmsaudit calls: (marker in, marker out, more flag).
_KMS_PAGES = ("Marker", "NextMarker", "Truncated")
PAGINATION: dict[str, tuple[str, str, str | None]] = {
    "ListKeys": _KMS_PAGES,
    "ListAliases": _KMS_PAGES,
    "ListGrants": _KMS_PAGES,
    "ListResourceTags": _KMS_PAGES,
    "GetAccountAuthorizationDetails": ("Marker", "Marker", "IsTruncated"),
    "ListAccounts": ("NextToken", "NextToken", None),
    "ListParents": ("NextToken", "NextToken", None),
    "ListPoliciesForTarget": ("NextToken", "NextToken", None),
}
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _response_code(event: dict[str, Any]) -> str:
    """The AWS error code of one attempt, from botocore's response-received event ("" if none)."""
    parsed = event.get("parsed_response") or {}
    return str(parsed.get("Error", {}).get("Code", "")) if isinstance(parsed, dict) else ""


def snake(operation: str) -> str:
    return _SNAKE.sub("_", operation).lower()


class Api:
    """Shared by every scope of one scan."""

    def __init__(self, settings: ScanSettings, observer: RequestObserver | None = None) -> None:
        self.settings = settings
        # The slots, shared fairly (collect/slots.py): botocore's retries (backoff sleeps, up to
        # 20 s) happen inside a call, so throttled scopes could otherwise hold every slot (issues
        # #19 and #24).
        self._slots = FairSlots(settings.concurrency)
        self._pacers: dict[tuple[str, str, str], Pacer] = {}
        self._observer = observer
        self.attempts: Counter[tuple[str, str, str]] = Counter()  # (service, operation, outcome)

    def _pacer(self, account: str, region: str, operation: str) -> Pacer | None:
        """SPEC §9: requests paced per (account, region, operation) with a published quota."""
        if operation not in DEFAULT_QUOTAS:
            return None
        slot = (account, region, operation)
        pacer = self._pacers.get(slot)
        if pacer is None:
            pacer = self._pacers[slot] = Pacer(self.settings.rate(operation))
        return pacer

    def pacer_feedback(self, account: str, region: str) -> Callable[..., None]:
        """A response-received handler for one scope's client: AIMD on the pacers.

        A throttling answer means somebody else shares the quota (cross-account callers count
        against the caller) or the clocks disagree: slow that operation down by a tenth (to a
        sixteenth of the rate at most); each success wins back a little, never beyond the
        configured rate.
        """

        def feedback(event_name: str = "", **kwargs: Any) -> None:
            pacer = self._pacers.get((account, region, event_name.rsplit(".", 1)[-1]))
            if pacer is None:
                return
            code = _response_code(kwargs)
            if code in THROTTLE_CODES:
                pacer.slow_down()
            elif not code:
                pacer.recover()

        return feedback

    def observe(self, service: str, operation: str, outcome: str) -> None:
        """Called for every HTTP attempt (from botocore's response-received event)."""
        self.attempts[(service, operation, outcome)] += 1
        if self._observer is not None:
            self._observer(service, operation, outcome)

    def on_response(self, event_name: str = "", **kwargs: Any) -> None:
        _, service, operation = ([*event_name.split("."), "", "", ""])[:3]
        if kwargs.get("exception") is not None:
            outcome = "network-error"
        else:
            code = _response_code(kwargs)
            outcome = "throttled" if code in THROTTLE_CODES else ("error" if code else "ok")
        self.observe(service, operation, outcome)

    @property
    def throttled(self) -> int:
        return sum(n for (_, _, outcome), n in self.attempts.items() if outcome == "throttled")

    @property
    def requests(self) -> int:
        return sum(self.attempts.values())

    async def call(self, client: Any, account: str, region: str, operation: str, **params: Any) -> dict[str, Any]:
        """One request; botocore's own retries (with jitter) happen inside. Raises CollectError,
        or ClientError for codes the caller handles itself (a key deleted mid-scan)."""
        pacer = self._pacer(account, region, operation)
        if pacer is not None:
            await pacer.acquire()
        async with self._slots.hold((account, region)):
            try:
                response: dict[str, Any] = await getattr(client, snake(operation))(**params)
            except ClientError as exc:
                if is_missing(exc):
                    raise  # the caller decides: a key deleted mid-scan is skipped, not a failure
                raise convert(exc, operation) from None
            except Exception as exc:
                raise convert(exc, operation) from None
        return response

    async def responses(
        self, client: Any, account: str, region: str, operation: str, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a paginated operation, following its markers to the end."""
        marker_in, marker_out, more_flag = PAGINATION[operation]
        seen_markers: set[str] = set()
        while True:
            response = await self.call(client, account, region, operation, **params)
            yield response
            marker = response.get(marker_out)
            more = bool(marker) if more_flag is None else bool(response.get(more_flag)) and bool(marker)
            if not more:
                return
            if str(marker) in seen_markers:  # a backend that repeats a marker would loop forever
                raise convert(RuntimeError(f"pagination marker repeated: {str(marker)[:40]}"), operation)
            seen_markers.add(str(marker))
            params[marker_in] = marker

    async def pages(
        self, client: Any, account: str, region: str, operation: str, items: str, **params: Any
    ) -> list[Any]:
        """Every item of every page."""
        out: list[Any] = []
        async for response in self.responses(client, account, region, operation, **params):
            value = response.get(items)
            if isinstance(value, list):
                out.extend(value)
        return out
