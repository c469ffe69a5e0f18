"""`meshlens inject FILE`: add the sidecar to Kubernetes workloads, like `istioctl kube-inject`.

Reads multi-document YAML (Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod, or a List of
them), adds to each pod template an init container that sets up iptables capture (outbound TCP
to 15001, inbound to 15006, traffic of the sidecar's uid/gid 1337 exempt, like istio-init) and
the `meshlens-sidecar` container (transparent mode: the app gets no HTTP_PROXY; routing by the
captured request's Host header), and writes the documents back. Injecting twice equals injecting
once; pods annotated `meshlens.io/inject: "false"` and hostNetwork pods are left alone.
Per-pod annotations: `meshlens.io/service` (default: label app.kubernetes.io/name, app, or the
workload name), `meshlens.io/app-port` (default: the first containerPort),
`meshlens.io/exclude-outbound-ports` / `meshlens.io/exclude-inbound-ports` (comma-separated).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidecar.http import parse_digits

__all__ = ["InjectError", "InjectOptions", "capture_script", "inject_documents", "register"]

SIDECAR_NAME = "meshlens-sidecar"
INIT_NAME = "meshlens-init"
SIDECAR_UID = 1337
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
STATUS_ANNOTATION = "meshlens.io/status"
INJECT_ANNOTATION = "meshlens.io/inject"
_VOLUME = "meshlens-state"
_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})


class InjectError(ValueError):
    """A workload cannot be injected; the message names the document and the reason."""


@dataclass(frozen=True, slots=True)
class InjectOptions:
    """Images, endpoints and resources of the injected containers."""

    image: str = "ghcr.io/meshlens/meshlens:0.1.0"
    init_image: str = ""  # default: `image` (the Dockerfile installs iptables)
    control_plane: str = "http://meshlens-analytics.meshlens.svc:8686"
    collector: str = "http://meshlens-collector.meshlens.svc:4318"
    bootstrap_secret: str = "meshlens-bootstrap"
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"

    def __post_init__(self) -> None:
        for name in ("image", "control_plane", "collector", "bootstrap_secret"):
            if not getattr(self, name):
                raise ValueError(f"inject option {name} must not be empty")


def _ports(text: str, where: str) -> list[int]:
    ports = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        port = parse_digits(item, 5)
        if port is None or not 0 < port < 65536:
            raise InjectError(f"{where}: port {item!r} is not 1..65535")
        ports.append(port)
    return ports


def capture_script(exclude_outbound: list[int], exclude_inbound: list[int]) -> str:
    """The iptables (nat) rules of the init container, one command per line."""
    nat = "iptables -t nat"
    lines = [
        "set -e",
        f"{nat} -N MESHLENS_INBOUND",
        f"{nat} -N MESHLENS_IN_REDIRECT",
        f"{nat} -A MESHLENS_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}",
        f"{nat} -A PREROUTING -p tcp -j MESHLENS_INBOUND",
    ]
    for port in [ADMIN_PORT, INBOUND_PORT, *exclude_inbound]:
        lines.append(f"{nat} -A MESHLENS_INBOUND -p tcp --dport {port} -j RETURN")
    lines += [
        f"{nat} -A MESHLENS_INBOUND -p tcp -j MESHLENS_IN_REDIRECT",
        f"{nat} -N MESHLENS_OUTPUT",
        f"{nat} -N MESHLENS_REDIRECT",
        f"{nat} -A MESHLENS_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        f"{nat} -A OUTPUT -p tcp -j MESHLENS_OUTPUT",
        # The sidecar's own connections (to upstreams, collector, control plane) go out as is.
        f"{nat} -A MESHLENS_OUTPUT -m owner --uid-owner {SIDECAR_UID} -j RETURN",
        f"{nat} -A MESHLENS_OUTPUT -m owner --gid-owner {SIDECAR_UID} -j RETURN",
        f"{nat} -A MESHLENS_OUTPUT -d 127.0.0.1/32 -j RETURN",
    ]
    for port in exclude_outbound:
        lines.append(f"{nat} -A MESHLENS_OUTPUT -p tcp --dport {port} -j RETURN")
    lines.append(f"{nat} -A MESHLENS_OUTPUT -j MESHLENS_REDIRECT")
    return "\n".join(lines) + "\n"


def _pod_templates(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(pod metadata, workload name, pod spec) of every pod `doc` describes."""
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    if kind == "List":
        for item in doc.get("items") or []:
            if isinstance(item, dict):
                yield from _pod_templates(item)
    elif kind == "Pod" and isinstance(doc.get("spec"), dict):
        doc["metadata"] = meta
        yield meta, str(meta.get("name", "")), doc["spec"]
    elif kind in _WORKLOADS:
        template = (doc.get("spec") or {}).get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            template["metadata"] = template.get("metadata") or {}
            yield template["metadata"], str(meta.get("name", "")), template["spec"]


def _uninject(spec: dict[str, Any]) -> None:
    """Remove what an earlier injection added (so that injecting again changes nothing)."""
    ours = (("containers", SIDECAR_NAME), ("initContainers", INIT_NAME), ("volumes", _VOLUME))
    for key, name in ours:
        kept = [c for c in spec.get(key) or [] if c.get("name") != name]
        if kept or key == "containers":
            spec[key] = kept
        else:
            spec.pop(key, None)


def _service(meta: dict[str, Any], workload: str) -> str:
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return str(
        annotations.get("meshlens.io/service")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload
    )


def _app_port(meta: dict[str, Any], spec: dict[str, Any]) -> int:
    annotated = (meta.get("annotations") or {}).get("meshlens.io/app-port")
    if annotated is not None:
        ports = _ports(str(annotated), "meshlens.io/app-port")
        if len(ports) != 1:
            raise InjectError(f"meshlens.io/app-port must be one port, got {annotated!r}")
        return ports[0]
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("protocol", "TCP") == "TCP" and "containerPort" in port:
                return int(port["containerPort"])
    raise InjectError(
        "no TCP containerPort to forward inbound traffic to; "
        "set the annotation meshlens.io/app-port"
    )


def _sidecar(options: InjectOptions, service: str, app_port: int) -> dict[str, Any]:
    flags = {
        "--service": service,
        "--app-port": str(app_port),
        "--listen": "0.0.0.0",
        "--admin-port": str(ADMIN_PORT),
        "--outbound-port": str(OUTBOUND_PORT),
        "--inbound-port": str(INBOUND_PORT),
        "--control-plane": options.control_plane,
        "--collector": options.collector,
        "--namespace": "$(POD_NAMESPACE)",  # Kubernetes expands $(VAR) from the env below
        "--instance-id": "$(POD_NAME)",
        "--state-dir": "/var/run/meshlens",
    }
    return {
        "name": SIDECAR_NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["sidecar", *(part for flag in flags.items() for part in flag)],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {
                "name": "MESH_SIDECAR_BOOTSTRAP_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": options.bootstrap_secret, "key": "token"}},
            },
        ],
        "ports": [
            {"name": "mesh-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            {"name": "mesh-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": ADMIN_PORT},
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        "securityContext": {
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": _VOLUME, "mountPath": "/var/run/meshlens"}],
    }


def _init(options: InjectOptions, script: str) -> dict[str, Any]:
    return {
        "name": INIT_NAME,
        "image": options.init_image or options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def _inject_pod(
    meta: dict[str, Any], workload: str, spec: dict[str, Any], opts: InjectOptions
) -> bool:
    """Inject one pod spec in place; False when the pod opts out or uses the host network."""
    annotations = meta.get("annotations") or {}
    if str(annotations.get(INJECT_ANNOTATION, "true")).lower() == "false" or spec.get(
        "hostNetwork"
    ):
        return False
    _uninject(spec)
    service = _service(meta, workload)
    port = _app_port(meta, spec)
    script = capture_script(
        _ports(str(annotations.get("meshlens.io/exclude-outbound-ports", "")), "exclude-outbound"),
        _ports(str(annotations.get("meshlens.io/exclude-inbound-ports", "")), "exclude-inbound"),
    )
    spec["initContainers"] = [_init(opts, script), *(spec.get("initContainers") or [])]
    spec["containers"].append(_sidecar(opts, service, port))
    spec["volumes"] = [*(spec.get("volumes") or []), {"name": _VOLUME, "emptyDir": {}}]
    meta["annotations"] = {**annotations, STATUS_ANNOTATION: "injected"}
    return True


def inject_documents(text: str, options: InjectOptions | None = None) -> tuple[str, int]:
    """`text` (multi-document YAML) with every injectable pod injected; and how many were."""
    opts = options or InjectOptions()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InjectError(f"not valid YAML: {exc}") from exc
    out, injected = [], 0
    for index, doc in enumerate(docs, start=1):
        if not isinstance(doc, dict):
            raise InjectError(f"document {index} is not a mapping")
        doc = copy.deepcopy(doc)
        for meta, workload, spec in _pod_templates(doc):
            where = f"document {index} ({doc.get('kind')} {workload})"
            if not isinstance(spec.get("containers"), list) or not spec["containers"]:
                raise InjectError(f"{where}: pod spec has no containers")
            try:
                injected += _inject_pod(meta, workload, spec, opts)
            except InjectError as exc:
                raise InjectError(f"{where}: {exc}") from exc
        out.append(doc)
    return yaml.safe_dump_all(out, sort_keys=False, default_flow_style=False), injected


def register(subparsers: Any) -> None:
    """Add the `inject` subcommand."""
    parser = subparsers.add_parser("inject", help="add the sidecar to Kubernetes manifests")
    parser.add_argument("file", help="multi-document YAML file, or - for stdin")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    defaults = InjectOptions()
    parser.add_argument("--image", default=defaults.image)
    parser.add_argument("--init-image", default="", help="image with iptables (default: --image)")
    parser.add_argument("--control-plane", default=defaults.control_plane)
    parser.add_argument("--collector", default=defaults.collector, help="OTLP/HTTP URL")
    parser.add_argument("--bootstrap-secret", default=defaults.bootstrap_secret)
    parser.add_argument("--cpu-request", default=defaults.cpu_request)
    parser.add_argument("--memory-request", default=defaults.memory_request)
    parser.add_argument("--cpu-limit", default=defaults.cpu_limit)
    parser.add_argument("--memory-limit", default=defaults.memory_limit)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        options = InjectOptions(
            image=args.image,
            init_image=args.init_image,
            control_plane=args.control_plane,
            collector=args.collector,
            bootstrap_secret=args.bootstrap_secret,
            cpu_request=args.cpu_request,
            memory_request=args.memory_request,
            cpu_limit=args.cpu_limit,
            memory_limit=args.memory_limit,
        )
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        result, count = inject_documents(text, options)
    except (OSError, ValueError) as exc:
        print(f"meshlens inject: {exc}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(result)
    else:
        Path(args.output).write_text(result)
    print(f"meshlens inject: {count} pod template(s) injected", file=sys.stderr)
    return 0
