"""The TOML configuration (SPEC §7), validated with pydantic; every mistake is one clear line."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kmsaudit.config.accept import AcceptanceSettings, AcceptFile, AcceptSettings
from kmsaudit.config.base import AccountId, Strict
from kmsaudit.config.file import config_error, read_toml, validated

ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")
DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
DEFAULT_CONFIG_PATH = "kmsaudit.toml"

# SPEC §9: default requests per second, per account and region.
DEFAULT_QUOTAS: dict[str, float] = {
    "ListKeys": 500,
    "ListAliases": 500,
    "DescribeKey": 2000,
    "GetKeyPolicy": 1000,
    "ListGrants": 100,
    "GetKeyRotationStatus": 1000,
    "ListResourceTags": 2000,
    "BatchImportFindings": 10,  # Security Hub (README "Integrations"): 10 per second, bursts of 30
}


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region botocore knows for KMS, in every partition: read from botocore's endpoints
    file when it is there (what get_available_regions reads, without importing the SDK: a config
    mistake is told in a fraction of a second, issue #25), else asked of a botocore session."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("botocore")
    for folder in spec.submodule_search_locations or [] if spec else []:
        endpoints = Path(folder) / "data" / "endpoints.json"
        if endpoints.is_file():
            found: set[str] = set()
            for partition in json.loads(endpoints.read_text(encoding="utf-8"))["partitions"]:
                pattern = re.compile(partition["regionRegex"])
                for name, endpoint in partition["services"].get("kms", {}).get("endpoints", {}).items():
                    if pattern.match(name) and not endpoint.get("deprecated"):
                        found.add(name)
            if found:
                return frozenset(found)
    import botocore.session

    session = botocore.session.get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("kms", partition))
    return frozenset(regions)


def is_cron(text: str) -> bool:
    from croniter import croniter

    return len(text.split()) >= 5 and bool(croniter.is_valid(text))


def parse_duration(text: str) -> float:
    match = DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as '90s', '15m', '6h' or '1d'")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _check_role_arn(value: str | None) -> str | None:
    if value is not None and not ROLE_ARN_RE.match(value):
        raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return value


def _check_regions(regions: list[str]) -> list[str]:
    known = known_regions()
    for region in regions:
        if region not in known:
            raise ValueError(f"unknown region {region!r}")
    if len(set(regions)) != len(regions):
        raise ValueError("a region is listed twice")
    return regions


class ScanSettings(Strict):
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"], min_length=1)
    interval: str = "15m"
    concurrency: int = Field(64, ge=1, le=1024, description="AWS requests in flight at most")
    scopes_at_once: int = Field(16, ge=1, le=1024, description="account × region scopes read at the same time")
    processes: int | None = Field(None, ge=1, le=256, description="worker processes reading scopes")
    # A worker reading one scope longer is killed, its scopes failed (README "Reliability and security guarantees")
    scope_deadline: str = Field("30m", pattern=r"^[1-9]\d*[smhd]$", description="longest a worker may read a scope")
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(10, ge=1, le=30)
    quota_margin: float = Field(0.8, gt=0, le=1, description="fraction of each quota kmsaudit uses")
    connect_timeout: float = Field(10, gt=0, le=300, description="seconds to open a connection to AWS")
    read_timeout: float = Field(60, gt=0, le=900, description="seconds to wait for an AWS answer, per attempt")
    quotas: dict[str, float] = Field(default_factory=dict, description="requests/s overrides, by operation")
    session_name: str = Field("kmsaudit", min_length=2, max_length=64, pattern=r"^[\w+=,.@-]+$")

    _regions = field_validator("regions")(_check_regions)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        """A duration ("15m") or a cron expression ("*/15 * * * *", UTC)."""
        if is_cron(value):
            return value
        if parse_duration(value) < 1:
            raise ValueError("the interval must be at least 1s")
        return value

    @field_validator("quotas")
    @classmethod
    def _quotas(cls, value: dict[str, float]) -> dict[str, float]:
        for op, rate in value.items():
            if op not in DEFAULT_QUOTAS:
                raise ValueError(f"no quota is known for operation {op!r} (known: {', '.join(DEFAULT_QUOTAS)})")
            if rate <= 0:
                raise ValueError(f"the quota of {op} must be positive")
        return value

    def rate(self, operation: str) -> float:
        """Requests per second kmsaudit allows itself for one operation in one scope."""
        return self.quotas.get(operation, DEFAULT_QUOTAS.get(operation, 100)) * self.quota_margin


class AccountSettings(Strict):
    id: AccountId
    role_arn: str | None = None
    external_id: str | None = Field(None, min_length=2, max_length=1224)
    regions: list[str] | None = None

    _regions = field_validator("regions")(_check_regions)

    _role_arn = field_validator("role_arn")(_check_role_arn)

    @model_validator(mode="after")
    def _role_in_account(self) -> AccountSettings:
        if self.role_arn is not None:
            match = ROLE_ARN_RE.match(self.role_arn)
            assert match is not None
            if match.group(1) != self.id:
                raise ValueError(f"role_arn is in account {match.group(1)}, not in {self.id}")
        return self


class OrganizationSettings(Strict):
    role_name: str = Field(pattern=r"^[\w+=,.@-]{1,64}$")
    management_role_arn: str | None = None
    external_id: str | None = None
    audit_policies: bool = True  # collect SCPs and RCPs

    _arn = field_validator("management_role_arn")(_check_role_arn)


class TrustSettings(Strict):
    accounts: list[AccountId] = Field(default_factory=list)


class StoreSettings(Strict):
    path: str = "kmsaudit.db"
    retention_days: int = Field(90, ge=1)


class AlertSinkSettings(Strict):
    """One alert destination. Secrets (URLs, tokens) come from environment variables named here."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    type: Literal["webhook", "slack", "alertmanager"]
    url_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$", description="environment variable holding the URL")
    min_severity: Literal["low", "medium", "high", "critical"] = "high"
    hmac_secret_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    # Also alert on a scope's first scan (its findings at or above min_severity, as `added`
    # events marked `baseline`): for teams that want the first day's public keys paged.
    on_baseline: bool = False


class ExportSettings(Strict):
    """Findings sent where security teams triage (README "Integrations"): AWS Security Hub, as
    ASFF through BatchImportFindings, into the Security Hub of the account whose credentials
    send them (`role_arn` assumed, else the ambient credentials)."""

    type: Literal["securityhub"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")  # default: securityhub-REGION
    role_arn: str | None = None
    external_id: str | None = Field(None, min_length=2, max_length=1224)

    _role_arn = field_validator("role_arn")(_check_role_arn)

    @property
    def sink_name(self) -> str:
        return f"export:{self.name or f'{self.type}-{self.region}'}"


class EventsSettings(Strict):
    """CloudTrail events through EventBridge into SQS (README "Real-time detection")."""

    queues: list[str] = Field(min_length=1, max_length=20)
    role_arn: str | None = None  # the role that reads the queues; none: ambient credentials
    external_id: str | None = Field(None, min_length=2, max_length=1224)
    region: str = Field(  # for queue URLs that carry none (an emulator's)
        default_factory=lambda: os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    wait_seconds: int = Field(20, ge=0, le=20)  # SQS long polling
    delete_malformed: bool = True  # false: leave them to the queue's dead-letter policy

    @field_validator("queues")
    @classmethod
    def _queues(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^\s/]+(/[^\s]*)?/\d{12}/[\w-]{1,80}$", url):
                raise ValueError(
                    f"{url[:100]!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
                )
        return value

    _role_arn = field_validator("role_arn")(_check_role_arn)


class DaemonSettings(Strict):
    listen: str = Field("127.0.0.1:9465", pattern=r"^(\[[0-9a-fA-F:]+\]|[\w.-]+):\d{1,5}$")


class Config(Strict):
    scan: ScanSettings = Field(default_factory=ScanSettings)
    accounts: list[AccountSettings] = Field(default_factory=list)
    organization: OrganizationSettings | None = None
    trust: TrustSettings = Field(default_factory=TrustSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    alerts: list[AlertSinkSettings] = Field(default_factory=list)
    acceptance: AcceptanceSettings = Field(default_factory=AcceptanceSettings)
    accept: list[AcceptSettings] = Field(default_factory=list, max_length=100_000)
    export: list[ExportSettings] = Field(default_factory=list, max_length=20)
    events: EventsSettings | None = None
    # Account id -> display name, shown beside the id in the report (README "Configuration").
    names: dict[str, str] = Field(default_factory=dict, max_length=100_000)

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for account, name in value.items():
            if not re.fullmatch(r"\d{12}", account):
                raise ValueError(f"{account[:40]!r} is not a 12-digit account id")
            if not name.strip():
                raise ValueError(f"the name of {account} is empty")
            if len(name) > 100:
                raise ValueError(f"the name of {account} is longer than 100 characters")
        return value

    @model_validator(mode="after")
    def _accounts(self) -> Config:
        seen: set[str] = set()
        for account in self.accounts:
            if account.id in seen:
                raise ValueError(f"account {account.id} is listed twice")
            seen.add(account.id)
        names = [sink.name for sink in self.alerts]
        if len(set(names)) != len(names):
            raise ValueError("two [[alerts]] have the same name")
        exports = [e.sink_name for e in self.export]
        if len(set(exports)) != len(exports):
            raise ValueError("two [[export]] have the same name (give each a `name`)")
        if not self.accounts and self.organization is None:
            raise ValueError("no [[accounts]] and no [organization]: nothing to audit")
        return self

    def relative_to(self, folder: Path) -> Config:
        """Paths in the config are relative to the config file's folder (SPEC §7)."""

        def resolved(path: str) -> str:
            p = Path(path).expanduser()
            return str(p if p.is_absolute() else folder / p)

        store = self.store.model_copy(update={"path": resolved(self.store.path)})
        acceptance = self.acceptance.model_copy(update={"files": [resolved(f) for f in self.acceptance.files]})
        return self.model_copy(update={"store": store, "acceptance": acceptance})

    def regions_of(self, account: AccountSettings) -> list[str]:
        return account.regions or self.scan.regions

    @property
    def interval_seconds(self) -> float:
        """The schedule's period (for a cron expression: the gap between its next two runs)."""
        if is_cron(self.scan.interval):
            from croniter import croniter

            runs = croniter(self.scan.interval, time.time())
            first = runs.get_next(float)
            return float(runs.get_next(float) - first)
        return parse_duration(self.scan.interval)

    def seconds_to_next_scan(self, now: float) -> float:
        """Interval schedules wait one interval; cron schedules wait for the next match (UTC)."""
        if is_cron(self.scan.interval):
            from croniter import croniter

            return max(0.0, float(croniter(self.scan.interval, now).get_next(float)) - now)
        return parse_duration(self.scan.interval)


def load_config(path: str | Path, today: date | None = None) -> Config:
    """Read and validate a config file and the acceptance files it names; ConfigError (exit 2)
    names the file and the key, in one line. `today` (default: the UTC date) bounds `expires`."""
    path = Path(path)
    config = validated(Config, read_toml(path), path).relative_to(path.absolute().parent)
    entries = [(path, entry) for entry in config.accept]
    for name in config.acceptance.files:
        file = Path(name)
        if not file.exists():
            continue  # not written yet (`kmsaudit accept --write` creates it): it accepts nothing
        data = read_toml(file, "acceptance file ([acceptance] files)")
        entries += [(file, entry) for entry in validated(AcceptFile, data, file).accept]
    today = today or datetime.now(UTC).date()
    latest = today + timedelta(days=config.acceptance.max_days)
    seen: dict[str, Path] = {}
    for source, entry in entries:
        if entry.id in seen:
            raise config_error(source, f"accept: id {entry.id!r} is used twice (also in {seen[entry.id]})")
        seen[entry.id] = source
        if entry.expires > latest:
            raise config_error(
                source,
                f"accept {entry.id!r}: expires {entry.expires} is more than [acceptance] max_days "
                f"({config.acceptance.max_days}) ahead",
            )
    return config.model_copy(update={"accept": [entry for _, entry in entries]})
