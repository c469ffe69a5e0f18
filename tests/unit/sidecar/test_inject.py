"""`meshlens inject`: sidecar + capture init container added to sample manifests, idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshlens_cli import main
from sidecar.inject import (
    INIT_NAME,
    SIDECAR_NAME,
    InjectError,
    InjectOptions,
    capture_script,
    inject_documents,
)

MANIFESTS = Path(__file__).parent / "manifests"


def _inject(name: str, options: InjectOptions | None = None) -> tuple[list[dict[str, Any]], int]:
    text, count = inject_documents((MANIFESTS / name).read_text(), options)
    return list(yaml.safe_load_all(text)), count


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def _container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    [container] = [c for c in spec["containers"] if c["name"] == name]
    found: dict[str, Any] = container
    return found


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_deployment_gets_sidecar_and_init_container() -> None:
    docs, count = _inject("shop.yaml")

    assert count == 1
    service, deployment = docs
    assert service == yaml.safe_load_all((MANIFESTS / "shop.yaml").read_text()).__next__()
    spec = _pod_spec(deployment)
    assert [c["name"] for c in spec["containers"]] == ["cart", SIDECAR_NAME]
    assert [c["name"] for c in spec["initContainers"]] == [INIT_NAME]
    sidecar = _container(spec, SIDECAR_NAME)
    args = sidecar["args"]
    assert args[0] == "sidecar"
    assert _flag(args, "--service") == "cart-svc"  # app.kubernetes.io/name wins over app
    assert _flag(args, "--app-port") == "8080"
    assert _flag(args, "--listen") == "0.0.0.0"
    assert (_flag(args, "--outbound-port"), _flag(args, "--inbound-port")) == ("15001", "15006")
    assert _flag(args, "--control-plane").startswith("http://meshlens-analytics")
    assert _flag(args, "--collector").endswith(":4318")
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MESH_SIDECAR_BOOTSTRAP_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == (
        "meshlens-bootstrap"
    )
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15000}
    assert sidecar["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert sidecar["securityContext"]["runAsUser"] == 1337
    assert deployment["spec"]["template"]["metadata"]["annotations"]["meshlens.io/status"] == (
        "injected"
    )


def test_app_container_gets_no_http_proxy_transparent_mode() -> None:
    docs, _ = _inject("shop.yaml")
    app = _container(_pod_spec(docs[1]), "cart")
    assert [e["name"] for e in app["env"]] == ["LOG_LEVEL"]


def test_init_container_captures_outbound_and_inbound_and_exempts_uid_1337() -> None:
    docs, _ = _inject("shop.yaml")
    [init] = _pod_spec(docs[1])["initContainers"]
    script = init["command"][-1]
    assert "-j REDIRECT --to-ports 15001" in script
    assert "-j REDIRECT --to-ports 15006" in script
    assert "-m owner --uid-owner 1337 -j RETURN" in script
    assert set(init["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    lines = script.splitlines()
    # the exemption must come before the catch-all redirect of the OUTPUT chain
    exempt = lines.index("iptables -t nat -A MESHLENS_OUTPUT -m owner --uid-owner 1337 -j RETURN")
    redirect = lines.index("iptables -t nat -A MESHLENS_OUTPUT -j MESHLENS_REDIRECT")
    assert exempt < redirect


def test_injecting_twice_equals_injecting_once() -> None:
    for name in ("shop.yaml", "stateful.yaml", "pods.yaml"):
        once, _ = inject_documents((MANIFESTS / name).read_text())
        twice, _ = inject_documents(once)
        assert twice == once, name


def test_statefulset_annotations_choose_port_and_exclusions_and_keep_init_order() -> None:
    docs, count = _inject("stateful.yaml")

    assert count == 2  # inventory + node-agent; host-agent uses the host network
    spec = _pod_spec(docs[0])
    assert [c["name"] for c in spec["initContainers"]] == [INIT_NAME, "migrate"]
    assert _flag(_container(spec, SIDECAR_NAME)["args"], "--app-port") == "9090"
    script = spec["initContainers"][0]["command"][-1]
    assert "--dport 5432 -j RETURN" in script and "--dport 6379 -j RETURN" in script
    assert _flag(_container(_pod_spec(docs[1]), SIDECAR_NAME)["args"], "--app-port") == "7000"
    host = _pod_spec(docs[2])
    assert [c["name"] for c in host["containers"]] == ["agent"] and "initContainers" not in host


def test_pods_opt_out_and_other_kinds_pass_through() -> None:
    original = list(yaml.safe_load_all((MANIFESTS / "pods.yaml").read_text()))
    docs, count = _inject("pods.yaml")

    assert count == 1
    debug, legacy, config = docs
    assert _flag(_container(debug["spec"], SIDECAR_NAME)["args"], "--service") == "toolbox"
    assert legacy == original[1]
    assert config == original[2]


def test_list_kind_items_are_injected() -> None:
    pod = next(yaml.safe_load_all((MANIFESTS / "pods.yaml").read_text()))
    text, count = inject_documents(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [pod]})
    )
    assert count == 1
    [item] = yaml.safe_load(text)["items"]
    assert SIDECAR_NAME in [c["name"] for c in item["spec"]["containers"]]


def test_workload_without_a_port_is_an_error_naming_it() -> None:
    with pytest.raises(
        InjectError, match=r"document 1 \(Deployment worker\).*meshlens.io/app-port"
    ):
        _inject("no-port.yaml")


def test_bad_yaml_and_bad_annotations_are_errors() -> None:
    with pytest.raises(InjectError, match="not valid YAML"):
        inject_documents("a: [1,")
    bad = (MANIFESTS / "stateful.yaml").read_text().replace('"9090"', '"http"')
    with pytest.raises(InjectError, match="app-port"):
        inject_documents(bad)


def test_options_set_images_and_resources() -> None:
    options = InjectOptions(image="reg/meshlens:9", init_image="reg/init:9", cpu_limit="2")
    docs, _ = _inject("shop.yaml", options)
    spec = _pod_spec(docs[1])
    assert _container(spec, SIDECAR_NAME)["image"] == "reg/meshlens:9"
    assert spec["initContainers"][0]["image"] == "reg/init:9"
    assert _container(spec, SIDECAR_NAME)["resources"]["limits"]["cpu"] == "2"


def test_capture_script_returns_early_for_admin_and_inbound_ports() -> None:
    script = capture_script([], [8443])
    assert "MESHLENS_INBOUND -p tcp --dport 15000 -j RETURN" in script
    assert "MESHLENS_INBOUND -p tcp --dport 8443 -j RETURN" in script


def test_cli_writes_the_injected_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.yaml"
    assert main(["inject", str(MANIFESTS / "shop.yaml"), "-o", str(out)]) == 0
    assert out.read_text() == inject_documents((MANIFESTS / "shop.yaml").read_text())[0]
    assert "1 pod template(s) injected" in capsys.readouterr().err


def test_cli_reports_errors_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inject", str(MANIFESTS / "no-port.yaml")]) == 1
    assert "meshlens inject: document 1" in capsys.readouterr().err
