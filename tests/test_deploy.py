"""deploy/ stays consistent with the product: manifests reference each other, dashboards and alert
rules query only metrics the daemon exports, the StackSet role is the read-only policy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kmsaudit.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        kind = family.type
        if kind == "counter":
            names.add(family.name + "_total")
        if kind == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names


def queried(expr: str) -> set[str]:
    return set(re.findall(r"\bkmsaudit_[a-z_]+", expr))


def test_kubernetes_manifests_reference_what_exists() -> None:
    docs = [d for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert set(by_kind) >= {
        "Deployment",
        "Service",
        "ServiceMonitor",
        "ConfigMap",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "CronJob",
        "Secret",
    }
    for workload in [*by_kind["Deployment"].values(), *by_kind["CronJob"].values()]:
        spec = workload["spec"]
        pod = spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]
        assert pod["spec"]["serviceAccountName"] in by_kind["ServiceAccount"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for volume in pod["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in by_kind["ConfigMap"]
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Both pods get a writable /tmp (the root filesystem is read-only) and the sinks' secrets.
    for workload in [*by_kind["Deployment"].values(), *by_kind["CronJob"].values()]:
        spec = workload["spec"]
        pod = spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]
        mounts = {m["mountPath"]: m["name"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], workload["metadata"]["name"]
        secrets = {e["secretRef"]["name"] for c in pod["spec"]["containers"] for e in c.get("envFrom", [])}
        assert secrets and secrets <= set(by_kind["Secret"]), workload["metadata"]["name"]
    deployment = by_kind["Deployment"]["kmsaudit"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = by_kind["Service"]["kmsaudit"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = by_kind["ServiceMonitor"]["kmsaudit"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # The ConfigMap's config is valid, and listens where the container port is.
    import tomllib

    from kmsaudit.config.settings import Config

    config = Config.model_validate(tomllib.loads(by_kind["ConfigMap"]["kmsaudit-config"]["data"]["kmsaudit.toml"]))
    assert config.daemon.listen.endswith(":9465")


def test_the_configmap_config_and_acceptance_file_load_as_mounted(tmp_path: Path) -> None:
    """Issue #15: every key of the ConfigMap lands in one folder (/etc/kmsaudit); the config names
    the acceptance file relative to it, and its entries are valid (an example that fails to load
    is a deploy that fails)."""
    from datetime import date

    from kmsaudit.config.settings import load_config

    configmaps = [
        d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "kmsaudit.yaml").read_text()) if d["kind"] == "ConfigMap"
    ]
    for name, text in configmaps[0]["data"].items():
        (tmp_path / name).write_text(text)
    config = load_config(tmp_path / "kmsaudit.toml", today=date(2026, 11, 27))
    assert config.acceptance.files == [str(tmp_path / "accepted.toml")]
    assert [e.id for e in config.accept] == ["log-archive-reads-every-key"]


def test_dashboard_and_alert_rules_query_only_exported_metrics() -> None:
    exported = exported_names()
    dashboard = json.loads((DEPLOY / "grafana" / "kmsaudit-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "kmsaudit-rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(queried(e) for e in exprs))
    assert used and used <= exported, used - exported
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == {
        "KmsAuditScanStale",
        "KmsAuditPublicKey",
        "KmsAuditExternalAccessAdded",
        "KmsAuditScopesFailing",
        "KmsAuditThrottled",
        "KmsAuditEventsQuiet",
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_accepts_the_alert_rules() -> None:
    proc = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "kmsaudit-rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stackset_role_is_the_read_only_policy() -> None:
    template = json.loads((DEPLOY / "cloudformation" / "kmsaudit-audit-role-stackset.json").read_text())
    role = template["Resources"]["KmsAuditReadOnlyRole"]["Properties"]
    granted = {a for p in role["Policies"] for s in p["PolicyDocument"]["Statement"] for a in s["Action"]}
    policy = json.loads((DEPLOY / "iam" / "kmsaudit-readonly.json").read_text())
    allowed = {a for s in policy["Statement"] for a in s["Action"]}
    assert (
        granted <= allowed and {"kms:GetKeyPolicy", "kms:ListGrants", "iam:GetAccountAuthorizationDetails"} <= granted
    )
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Condition"]["StringEquals"]["sts:ExternalId"] == {"Ref": "ExternalId"}


def test_dockerfile_runs_as_non_root_without_build_tools() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    final = text.split("FROM python:3.11-slim\n", 1)[1]  # the runtime stage
    assert "USER 10001" in final and "pip install" not in final and "gcc" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    import sys

    installed = Path(sys.executable).with_name("kmsaudit")
    assert installed.exists()
    for unit in [*(DEPLOY / "systemd").glob("*.service"), *(DEPLOY / "systemd").glob("*.timer")]:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/kmsaudit", str(installed)))
    units = sorted(str(p) for p in tmp_path.iterdir())
    proc = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cron_and_systemd_scans_leave_a_textfile_node_exporter_can_read_and_rotate_their_logs() -> None:
    """Issue #13/#19: the scan unit may run where node_exporter is absent (`-` makes the path
    optional) and names the textfile's mode; the crontab's log files are rotated."""
    unit = (DEPLOY / "systemd" / "kmsaudit-scan.service").read_text()
    assert "ReadWritePaths=-/var/lib/node_exporter/textfile_collector" in unit
    assert "--metrics-textfile-mode 0644" in unit
    crontab = (DEPLOY / "cron" / "kmsaudit.crontab").read_text()
    logs = set(re.findall(r">>\s*(/var/log/\S+)", crontab))
    rotate = (DEPLOY / "cron" / "kmsaudit.logrotate").read_text()
    assert logs and all(log in rotate or "/var/log/kmsaudit/*" in rotate for log in logs)
    assert "cron.d" in crontab  # the format (with its user field) is stated


def test_the_stale_scan_alert_names_the_interval_it_assumes() -> None:
    text = (DEPLOY / "prometheus" / "kmsaudit-rules.yml").read_text()
    rules = yaml.safe_load(text)
    stale = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "KmsAuditScanStale")
    threshold = int(re.search(r"> (\d+)", stale["expr"]).group(1))  # type: ignore[union-attr]
    assert f"{threshold // 60} minutes" in text and "interval" in text  # stated beside it, for editing


def test_the_events_template_forwards_exactly_what_kmsaudit_reads_and_only_to_its_queue() -> None:
    """Issue #17: the forwarder rule's event names are the ones kmsaudit/run/events.py re-reads for
    (a name missing there is a change nobody is paged for); the queue takes messages from the
    central rule only; the bus from the organization only."""
    from kmsaudit.run.events import IAM_EVENTS, KMS_ALIAS_EVENTS, KMS_KEY_EVENTS, ORG_EVENTS

    template = json.loads((DEPLOY / "cloudformation" / "kmsaudit-events.json").read_text())
    resources = template["Resources"]
    pattern = resources["Forward"]["Properties"]["EventPattern"]
    assert set(pattern["detail"]["eventName"]) == KMS_KEY_EVENTS | KMS_ALIAS_EVENTS | IAM_EVENTS | ORG_EVENTS
    assert pattern["detail-type"] == ["AWS API Call via CloudTrail"]
    [statement] = resources["QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["ToQueue", "Arn"]}
    bus = resources["BusPolicy"]["Properties"]["Statement"]
    assert bus["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == {"Ref": "OrganizationId"}
    assert resources["Queue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["DeadLetters", "Arn"]
    }
    # Every resource belongs to one mode or the other.
    assert {r["Condition"] for r in resources.values()} == {"Central", "Forwarder"}


QUIET = "kmsaudit has read no CloudTrail event for over 6 hours: check the forwarding rules and the queue"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_the_quiet_events_alert_fires_on_a_silent_queue_and_never_without_events(tmp_path: Path) -> None:
    """Issue #17: the queue's last message 7 hours old pages; 5 hours old, or a daemon without
    [events] (no series), does not."""
    tests = {
        "rule_files": [str(DEPLOY / "prometheus" / "kmsaudit-rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                # the queue was last read at t=0
                "input_series": [
                    {"series": 'kmsaudit_events_last_received_timestamp_seconds{queue="silent"}', "values": "0x450"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "7h",
                        "alertname": "KmsAuditEventsQuiet",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {"summary": QUIET},
                            }
                        ],
                    },
                    {"eval_time": "5h", "alertname": "KmsAuditEventsQuiet", "exp_alerts": []},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'kmsaudit_keys{account="111122223333",region="us-east-1"}', "values": "1x450"}
                ],
                "alert_rule_test": [{"eval_time": "7h", "alertname": "KmsAuditEventsQuiet", "exp_alerts": []}],
            },
        ],
    }
    path = tmp_path / "quiet.yml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["kmsaudit.service", "kmsaudit-scan.service"])
def test_the_units_are_hardened_below_4_exposure(unit: str) -> None:
    """Issue #25: `systemd-analyze security` rated the scan unit 8.5 EXPOSED and the daemon 6.5."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(DEPLOY / "systemd" / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    (level,) = re.findall(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout + proc.stderr)
    assert float(level) < 4.0, proc.stdout


def test_every_kubernetes_container_has_resources_and_no_real_secret_host() -> None:
    """Issue #25: the CronJob had no `resources`; the example Secret's webhook was a resolvable host."""
    docs = [d for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    containers = []
    for d in docs:
        spec = d.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        containers += [(d["metadata"]["name"], c) for c in pod.get("containers", [])]
    assert len(containers) >= 2
    for name, container in containers:
        resources = container.get("resources", {})
        assert resources.get("requests", {}).get("memory") and resources.get("limits", {}).get("memory"), name
    for d in docs:
        if d["kind"] == "Secret":
            for value in d.get("stringData", {}).values():
                host = re.sub(r"^https?://([^/:]+).*$", r"\1", value)
                assert host.endswith(".invalid"), value
