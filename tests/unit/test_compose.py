"""docker-compose.yml and deploy/Dockerfile: services, images, ports, mounts and valid commands.

No Docker engine here: every meshlens command in the compose file is parsed by the real CLI
parser (so a renamed flag fails this test), every bind-mounted path must exist in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.topology import SHOP
from meshlens_cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
INSTANCES = [f"{s.name}-{i}" for s in SHOP.services for i in range(1, s.instances + 1)]


def _meshlens_services() -> list[str]:
    return [name for name, svc in SERVICES.items() if svc.get("image") == "meshlens:dev"]


def test_platform_services_are_all_there() -> None:
    assert {"clickhouse", "grafana", "collector", "analytics", "loadgen"} <= set(SERVICES)
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    preinstall = SERVICES["grafana"]["environment"]["GF_PLUGINS_PREINSTALL"]
    assert preinstall.startswith("grafana-clickhouse-datasource")


def test_every_demo_instance_has_an_app_and_a_sidecar_in_its_network_namespace() -> None:
    for instance in INSTANCES:
        app, sidecar = SERVICES[instance], SERVICES[f"{instance}-sidecar"]
        env = app["environment"]
        # (curl and libcurl read only the lower-case names; most other clients either)
        assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.0.1:15001"
        assert env["NO_PROXY"] == env["no_proxy"] == "collector"
        assert sidecar["network_mode"] == f"service:{instance}"
        args = sidecar["command"]
        assert args[args.index("--service") + 1] == instance.rsplit("-", 1)[0]
        assert (
            args[args.index("--app-port") + 1] == app["command"][app["command"].index("--port") + 1]
        )


def test_meshlens_images_are_built_from_the_dockerfile() -> None:
    built = [n for n, s in SERVICES.items() if "build" in s]
    assert {"collector", "analytics", *INSTANCES} <= set(built)
    for name in built:
        build = SERVICES[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


@pytest.mark.parametrize(
    "name", [n for n in SERVICES if "sidecar" in n or n in ("collector", "analytics")]
)
def test_meshlens_commands_parse_with_the_real_cli(name: str) -> None:
    argv = [str(a) for a in SERVICES[name]["command"]]
    args = build_parser(argv).parse_args(argv)
    assert callable(args.run)
    if name in ("collector", "analytics"):
        assert args.store.startswith("http://") and "@clickhouse:8123/" in args.store
        assert args.host == "0.0.0.0"


def test_demo_app_commands_name_real_services() -> None:
    names = {s.name for s in SHOP.services}
    for instance in INSTANCES:
        svc = SERVICES[instance]
        assert svc["entrypoint"] == ["python", "-m", "demo.services"]
        args = svc["command"]
        assert args[args.index("--service") + 1] in names
        assert args[args.index("--topology") + 1] == SHOP.name


def test_bind_mounts_exist_in_the_repository() -> None:
    mounts = [
        volume.split(":")
        for svc in SERVICES.values()
        for volume in svc.get("volumes", [])
        if volume.startswith("./")
    ]
    assert mounts
    for host, container, *_ in mounts:
        assert (ROOT / host).exists(), host
        assert container.startswith("/")
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])}
    assert {n for n in named if not n.startswith("./")} <= set(COMPOSE["volumes"])


def test_grafana_mounts_match_the_provisioning_provider_path() -> None:
    volumes = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    provider = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/meshlens.yaml").read_text()
    )["providers"][0]
    assert volumes["./dashboards"] == provider["options"]["path"]
    assert volumes["./dashboards/provisioning/datasources"] == (
        "/etc/grafana/provisioning/datasources"
    )


def test_published_ports_are_the_documented_ones() -> None:
    published = {
        name: [p.split(":")[0] for p in svc.get("ports", [])] for name, svc in SERVICES.items()
    }
    assert published["grafana"] == ["3000"]
    assert published["analytics"] == ["8686"]
    assert set(published["clickhouse"]) == {"8123", "9000"}
    assert published["collector"] == []  # scaled out: replicas share the `collector` DNS name
    assert SERVICES["collector"]["expose"] == ["4317", "4318"]
    hosts = [p for ports in published.values() for p in ports]
    assert len(hosts) == len(set(hosts))


def test_bootstrap_tokens_cover_every_demo_service() -> None:
    tokens = SERVICES["analytics"]["environment"]["MESH_ANALYTICS_BOOTSTRAP_TOKENS"].split(",")
    scopes = {entry.split(":", 1)[0]: entry.split(":", 1)[1] for entry in tokens}
    for instance in INSTANCES:
        sidecar = SERVICES[f"{instance}-sidecar"]
        service = instance.rsplit("-", 1)[0]
        assert sidecar["environment"]["MESH_SIDECAR_BOOTSTRAP_TOKEN"] == scopes[f"demo/{service}"]


def test_dockerfile_is_python_slim_with_the_compiled_sidecar() -> None:
    text = (ROOT / "deploy/Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    heads = [s.split("\n", 1)[0] for s in stages]
    assert heads == ["python:3.11-slim AS source", "source AS native", "source"]
    source, build, runtime = stages
    assert "python scripts/build_native.py" in build and "gcc" in build
    # The runtime stage has no compiler: it takes the build and installs editable, so
    # sidecar/_native.py finds build/native next to the sources it was compiled from.
    assert "COPY --from=native /src/build/native ./build/native" in runtime
    assert re.search(r"pip install .*-c constraints\.txt -e \.", runtime)
    assert "gcc" not in runtime and 'ENTRYPOINT ["meshlens"]' in runtime
    # The sources are copied once, in the stage both others start from.
    assert not re.search(r"^COPY (sidecar|collector|analytics) ", build + runtime, re.M)
    for stage in (source, build):
        for path in re.findall(r"^COPY (?!--from)(\S+) ", stage, re.M):
            assert (ROOT / path).exists(), path


def test_collector_scales_out_on_a_cluster_with_the_cluster_flag() -> None:
    argv = ["collector", "--store", "http://u:p@ch:8123/otel", "--cluster", "mesh"]
    assert build_parser(argv).parse_args(argv).cluster == "mesh"
