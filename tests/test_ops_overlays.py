"""The optional kustomize overlays under ops/overlays: persistence, oauth-proxy, monitoring."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import hud_server

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "ops" / "overlays"
KUBE_KINDS = {"Namespace", "Service", "Deployment", "PersistentVolumeClaim", "ServiceAccount"}


def render(name: str) -> dict[str, dict]:
    """`kubectl kustomize ops/overlays/NAME` (what `oc apply -k` runs), by kind."""
    kubectl = shutil.which("kubectl") or shutil.which("oc")
    if kubectl is None:
        pytest.skip("neither kubectl nor oc is installed: the overlays cannot be rendered here")
    result = subprocess.run([kubectl, "kustomize", str(OVERLAYS / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def containers(objects: dict) -> dict[str, dict]:
    """The Deployment's containers by name."""
    return {c["name"]: c for c in objects["Deployment"]["spec"]["template"]["spec"]["containers"]}


@pytest.mark.parametrize("name", ["persistent", "oauth-proxy", "monitoring"])
def test_overlay_renders_valid_kubernetes_objects(name):
    """Each overlay renders, and its Kubernetes objects validate strictly against the schemas."""
    import kubernetes_validate

    objects = render(name)
    for kind, doc in objects.items():
        if kind in KUBE_KINDS:
            kubernetes_validate.validate(doc, "1.29.0", strict=True)
    assert {"Deployment", "Service", "Route"} <= set(objects)


def test_persistent_overlay_mounts_a_volume_at_hud_data_dir():
    """The persistence overlay claims a volume and points HUD_DATA_DIR at its mount."""
    objects = render("persistent")
    hud = containers(objects)["hud-server"]
    env = {item["name"]: item.get("value") for item in hud["env"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in hud["volumeMounts"]}
    assert env["HUD_DATA_DIR"] in mounts
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts[env["HUD_DATA_DIR"]]]["persistentVolumeClaim"]["claimName"]
    assert objects["PersistentVolumeClaim"]["metadata"]["name"] == claim
    assert objects["Deployment"]["spec"]["strategy"]["type"] == "Recreate"  # one writer of the volume
    hud_server.load_settings(environ={k: v for k, v in env.items() if v is not None})


def test_oauth_proxy_overlay_puts_the_proxy_in_front_of_viewers():
    """With oauth-proxy, the Route reaches the proxy over re-encrypted TLS and the proxy reaches the HUD."""
    objects = render("oauth-proxy")
    proxy = containers(objects)["oauth-proxy"]
    hud = containers(objects)["hud-server"]
    port = int({item["name"]: item.get("value") for item in hud["env"]}["HUD_PORT"])
    assert f"--upstream=http://localhost:{port}" in proxy["args"]
    assert "--provider=openshift" in proxy["args"]
    route = objects["Route"]["spec"]
    assert route["port"]["targetPort"] == "https" and route["tls"]["termination"] == "reencrypt"
    service_ports = {p["name"]: p for p in objects["Service"]["spec"]["ports"]}
    assert service_ports["https"]["targetPort"] == "https" and "http" in service_ports  # writes stay in-cluster
    assert any(p["name"] == "https" for p in proxy["ports"])
    account = objects["ServiceAccount"]
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert (
        "zelda-hud-route"
        in account["metadata"]["annotations"]["serviceaccounts.openshift.io/oauth-redirectreference.primary"]
    )
    security = proxy["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True


def test_service_monitor_scrapes_the_metrics_endpoint():
    """The ServiceMonitor scrapes the Service's http port at a path the server serves."""
    objects = render("monitoring")
    monitor = objects["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= objects["Service"]["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in objects["Service"]["spec"]["ports"]}
    rules = {rule.rule for rule in hud_server.create_app({}).url_map.iter_rules()}
    assert endpoint["path"] in rules
