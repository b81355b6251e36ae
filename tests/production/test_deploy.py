"""The deployment files: Kubernetes manifests valid against the Kubernetes API schemas
(kubernetes-validate ships them, no cluster or network needed), and the invariants a
rollout depends on, for the manifests, docker-compose.yml and the nginx config."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import yaml

from rawproxy.core.settings import Settings

from ..conftest import ROOT

DEPLOY = Path(ROOT) / "deploy"
KUBE = DEPLOY / "kubernetes"
SECRETISH = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|AUTH", re.I)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[dict]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += documents(path)
    return docs


def by_kind(kind: str, name: str) -> dict:
    found = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "StatefulSet"}
    version = kubernetes_validate.latest_version()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on an unknown or mistyped field
    listed = documents(KUBE / "kustomization.yaml")[0]["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def test_a_schema_violation_is_caught():
    broken = by_kind("Deployment", "rawproxy")
    broken["spec"]["replicas"] = "three"
    try:
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("a string replica count passed validation")


def test_the_deployment_drains_and_probes_as_a_rollout_needs():
    deployment = by_kind("Deployment", "rawproxy")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (proxy,) = pod["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert proxy[probe]["httpGet"]["path"] == "/health", probe
        assert proxy[probe]["httpGet"]["port"] in ("http", 8000)
    assert proxy["resources"]["requests"]["cpu"] and proxy["resources"]["requests"]["memory"]

    env = env_of(proxy)
    graceful = float(env["PROXY_GRACEFUL_TIMEOUT"]["value"]) if "PROXY_GRACEFUL_TIMEOUT" in env \
        else Settings().graceful_timeout
    pre_stop = proxy["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and float(pre_stop[1]) >= 5  # the load balancer stops sending first
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + graceful

    service = by_kind("Service", "rawproxy")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert env["PROXY_STORE"]["value"].startswith("redis://") and "rawproxy-redis:6379" in env["PROXY_STORE"]["value"]
    assert by_kind("Service", "rawproxy-redis")


def test_no_secret_value_is_written_in_the_manifests():
    assert not [d for d in manifests() if d["kind"] == "Secret"], "the Secret is created by the operator"
    for doc in manifests():
        spec = doc["spec"].get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            for name, var in env_of(container).items():
                if SECRETISH.search(name):
                    assert "secretKeyRef" in var.get("valueFrom", {}), name
                elif "value" in var and "@" in var["value"]:  # a URL with credentials
                    userinfo = var["value"].split("//", 1)[1].split("@", 1)[0]
                    assert re.fullmatch(r":?\$\([A-Z_]+\)", userinfo), (name, var["value"])
    deployment = env_of(by_kind("Deployment", "rawproxy")["spec"]["template"]["spec"]["containers"][0])
    assert {"ZENMUX_API_KEY", "PROXY_API_KEYS"} <= deployment.keys()


def test_the_compose_file_runs_three_replicas_on_redis_behind_nginx():
    compose = documents(Path(ROOT) / "docker-compose.yml")[0]
    services = compose["services"]
    assert set(services) == {"redis", "rawproxy", "nginx"}
    proxy = services["rawproxy"]
    assert proxy["deploy"]["replicas"] == 3
    assert proxy["build"]["args"]["EXTRAS"] == "redis"  # the image has the Redis client
    assert 'ARG EXTRAS=""' in (Path(ROOT) / "Dockerfile").read_text()
    assert proxy["environment"]["PROXY_STORE"] == "redis://redis:6379/0"
    graceful = float(proxy["environment"].get("PROXY_GRACEFUL_TIMEOUT", Settings().graceful_timeout))
    assert float(proxy["stop_grace_period"].rstrip("s")) > graceful
    for name, value in proxy["environment"].items():
        if SECRETISH.search(name):
            assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", value), name  # from the operator's .env only
    assert "volatile-lru" in services["redis"]["command"] and "--maxmemory" in services["redis"]["command"]
    (mount,) = services["nginx"]["volumes"]
    source = mount.split(":")[0]
    assert (Path(ROOT) / source).is_file(), source


def test_the_nginx_config_streams_and_spreads_over_the_replicas():
    conf = (DEPLOY / "nginx" / "rawproxy.conf").read_text()
    directives = {line.split()[0]: line.split(None, 1)[1].rstrip(";") for line in conf.splitlines()
                  if line.strip() and not line.strip().startswith("#") and line.strip().endswith(";")
                  for line in [line.strip()]}
    assert directives["proxy_buffering"] == "off" and directives["proxy_request_buffering"] == "off"
    assert directives["proxy_http_version"] == "1.1" and directives["proxy_pass"] == "http://rawproxy"
    assert int(directives["proxy_read_timeout"].rstrip("s")) >= Settings().read_timeout
    assert directives["server"].startswith("rawproxy:8000")
    assert "non_idempotent" not in directives["proxy_next_upstream"]  # a POST is never sent twice
