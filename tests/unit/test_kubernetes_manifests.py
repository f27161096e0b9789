"""deploy/kubernetes/: valid Kubernetes resources, right about every field eos relies on."""

from __future__ import annotations

import copy
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from eos.config import Config, redacted
from eos.engine import _CLOSE_FLOOR_S
from eos.health import HEALTHZ_PATH, READY_PATH
from eos.properties import parse_properties, read_properties

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests support (kubernetes-validate's oldest schemas)
# and the newest schemas the installed kubernetes-validate ships.
VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())

Manifest = dict[str, Any]


def manifests() -> dict[str, Manifest]:
    """Every resource of the manifests, by kind (one of each)."""
    found: dict[str, Manifest] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] != "Kustomization":
                assert doc["kind"] not in found, f"two {doc['kind']}s"
                found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def resources() -> dict[str, Manifest]:
    return manifests()


@pytest.fixture(scope="module")
def pod(resources: dict[str, Manifest]) -> Manifest:
    spec: Manifest = resources["StatefulSet"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Manifest) -> Manifest:
    (only,) = pod["containers"]
    result: Manifest = only
    return result


@pytest.fixture(scope="module")
def properties(resources: dict[str, Manifest]) -> dict[str, str]:
    return parse_properties(resources["ConfigMap"]["data"]["app.properties"])


def mount_of(pod: Manifest, container: Manifest, **source: str) -> str:
    """The mount path of the volume whose source matches, e.g. configMap=name."""
    ((kind, name),) = source.items()
    key = "secretName" if kind == "secret" else "name"
    (volume,) = [v["name"] for v in pod["volumes"] if v.get(kind, {}).get(key) == name]
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    """Each resource validates, strictly (no unknown field), against the offline schemas."""
    found = manifests()
    assert set(found) == {"ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget"}
    for resource in found.values():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_strict_validation_rejects_an_unknown_field(resources: dict[str, Manifest]) -> None:
    """The schema check is not vacuous: a misspelt probe field fails it."""
    broken = copy.deepcopy(resources["StatefulSet"])
    probe = broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/kubernetes/` applies every manifest file of the directory."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_properties_are_a_valid_eos_config_without_secrets(properties: dict[str, str]) -> None:
    """The ConfigMap's file is one eos accepts (with the Secret's keys added), holds no secret,
    and leaves instance.id to the command line."""
    assert redacted(properties) == properties, "a secret in the ConfigMap"
    assert "instance.id" not in properties
    config = Config.from_mapping({**properties, "sasl.password": "x"}, instance_id="4")
    assert config.processing_guarantee == "exactly_once_v2"
    assert config.transactional_id == f"{properties['application.id']}-4"


def test_probes_use_the_health_endpoints_on_the_metrics_port(
    resources: dict[str, Manifest], container: Manifest, properties: dict[str, str]
) -> None:
    """Liveness and startup probe /healthz, readiness /ready, on the named port that is eos's
    metrics.port, which binds every address so that the kubelet reaches it."""
    port = int(properties["metrics.port"])
    assert properties["metrics.bind.address"] in ("0.0.0.0", "::")
    (named,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    for probe, path in (
        ("startupProbe", HEALTHZ_PATH),
        ("livenessProbe", HEALTHZ_PATH),
        ("readinessProbe", READY_PATH),
    ):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "metrics"), probe
    annotations = resources["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_the_service_exposes_metrics_of_every_pod(resources: dict[str, Manifest]) -> None:
    """The headless governing Service selects the pods, targets the metrics port and also
    publishes pods that are not ready (they are scraped while restoring)."""
    service = resources["Service"]
    statefulset = resources["StatefulSet"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"


def test_grace_period_outlasts_the_shutdown_timeout(
    pod: Manifest, properties: dict[str, str]
) -> None:
    """The kubelet's SIGKILL comes after shutdown.timeout.ms plus the two client closes that may
    each take their floor after it, so SIGTERM always ends in a clean stop."""
    shutdown_s = int(properties["shutdown.timeout.ms"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > shutdown_s + 2 * _CLOSE_FLOOR_S


def test_state_dir_is_on_the_pods_own_volume(
    resources: dict[str, Manifest], container: Manifest, properties: dict[str, str]
) -> None:
    """state.dir lies on the volumeClaimTemplates volume (one ReadWriteOnce volume per pod)."""
    (template,) = resources["StatefulSet"]["spec"]["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    name = template["metadata"]["name"]
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == name]
    state_dir = Path(properties["state.dir"])
    assert state_dir == Path(mount) or Path(mount) in state_dir.parents


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_the_container_runs_eos_with_the_ordinal_and_the_merged_properties(
    tmp_path: Path,
    resources: dict[str, Manifest],
    pod: Manifest,
    container: Manifest,
    properties: dict[str, str],
) -> None:
    """The container's script, run as the pod runs it: pod order-enrichment-12 starts
    `eos run ... --instance-id 12` on the ConfigMap's properties plus the Secret's, kept in a
    file only its user can read."""
    config_dir = mount_of(pod, container, configMap=resources["ConfigMap"]["metadata"]["name"])
    secret = resources["Secret"]
    secret_dir = mount_of(pod, container, secret=secret["metadata"]["name"])
    (env,) = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    (run_volume,) = [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium")]
    (run_dir,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == run_volume]

    # The mounts, under tmp_path.
    places = {config_dir: tmp_path / "config", secret_dir: tmp_path / "secret"}
    places[run_dir] = tmp_path / "run"
    for real, fake in places.items():
        fake.mkdir()
        script = script.replace(real, str(fake))
    (places[config_dir] / "app.properties").write_text(
        resources["ConfigMap"]["data"]["app.properties"]
    )
    (places[secret_dir] / "secret.properties").write_text(secret["stringData"]["secret.properties"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_eos = bin_dir / "eos"
    fake_eos.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake_eos.chmod(0o755)
    args_out = tmp_path / "args"
    subprocess.run(
        ["sh", "-c", script],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "POD_NAME": "order-enrichment-12",
            "ARGS_OUT": str(args_out),
        },
        check=True,
        timeout=10,
    )

    argv = args_out.read_text().splitlines()
    assert argv[0] == "run"
    assert argv[argv.index("--instance-id") + 1] == "12"
    merged = Path(argv[argv.index("--config") + 1])
    assert merged.parent == places[run_dir]
    assert stat.S_IMODE(merged.stat().st_mode) == 0o600
    props = read_properties(merged)
    assert props == {**properties, "sasl.password": "change-me"}
    config = Config.from_mapping(props, instance_id=argv[argv.index("--instance-id") + 1])
    assert config.transactional_id == f"{properties['application.id']}-12"
