"""`meshlens sidecar`: run one sidecar beside a service instance until SIGTERM drains it."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
from typing import Any

from sidecar.app import Sidecar, SidecarOptions
from sidecar.capture import CaptureConfig, CaptureError, CaptureSession
from sidecar.config import ConfigError
from sidecar.identity import IdentityError
from sidecar.paths import MODES as PATH_MODES
from sidecar.telemetry.transport import COMPRESSIONS

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `sidecar` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sidecar", help="run the sidecar proxy beside one service instance"
    )
    parser.add_argument("--service", required=True, help="name of the service this sidecar fronts")
    parser.add_argument("--app-port", type=int, required=True, help="port of the local app")
    parser.add_argument("--app-host", default="127.0.0.1", help="host of the local app")
    parser.add_argument("--config", default=None, help="policy file (YAML or JSON), hot-reloaded")
    parser.add_argument("--collector", default=None, help="OTLP/HTTP URL, e.g. http://host:4318")
    parser.add_argument(
        "--otlp-compression",
        choices=COMPRESSIONS,
        default=None,
        help="compression of OTLP export bodies (default: env OTEL_EXPORTER_OTLP_COMPRESSION, "
        "else none, as in the OpenTelemetry SDKs)",
    )
    parser.add_argument(
        "--control-plane",
        default=None,
        help="control plane URL, e.g. http://127.0.0.1:8686 (instead of --config)",
    )
    parser.add_argument(
        "--bootstrap-token",
        default=None,
        help="control-plane bootstrap token (default: env MESH_SIDECAR_BOOTSTRAP_TOKEN)",
    )
    parser.add_argument(
        "--bootstrap-token-file", default=None, help="read the bootstrap token from this file"
    )
    parser.add_argument("--instance-id", default="", help="default: <hostname>-<pid>")
    parser.add_argument("--namespace", default="default", help="namespace of this service")
    parser.add_argument(
        "--state-dir", default=None, help="where the last good control-plane config is kept"
    )
    parser.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="K=V[,K=V]",
        help="instance labels registered with the control plane (e.g. version=v2); repeatable",
    )
    parser.add_argument(
        "--mtls",
        choices=("strict", "permissive", "off"),
        default="off",
        help="inbound mTLS: strict (TLS + client cert), permissive (also plaintext), off",
    )
    parser.add_argument("--trust-domain", default="cluster.local", help="SPIFFE trust domain")
    parser.add_argument("--cert", default=None, help="PEM certificate chain (file mode)")
    parser.add_argument("--key", default=None, help="PEM private key (file mode)")
    parser.add_argument("--ca", default=None, help="PEM trust bundle (file mode)")
    parser.add_argument("--listen", default="127.0.0.1", help="address the listeners bind")
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--outbound-port", type=int, default=15001)
    parser.add_argument("--inbound-port", type=int, default=15006)
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="seconds (SIGTERM)")
    parser.add_argument("--access-log", default=None, help='"-" for stdout or a file path')
    parser.add_argument(
        "--path-normalization",
        choices=PATH_MODES,
        default="merge_slashes",
        help="rewrite request paths before routes and authz see them: RFC 3986 dot segments "
        "and unreserved escapes (base), also merging slashes (merge_slashes, default), or none",
    )
    parser.add_argument(
        "--capture",
        action="store_true",
        help="transparent capture (root, Linux): iptables nat rules steer the app's outbound TCP "
        "to --outbound-port and traffic for --app-port to --inbound-port; removed on exit",
    )
    parser.add_argument(
        "--capture-exclude-ports",
        default="",
        metavar="P[,P]",
        help="destination ports never captured (e.g. 22,4317)",
    )
    parser.add_argument(
        "--capture-uid",
        type=int,
        default=1337,
        help="traffic of sockets owned by this uid is not captured (a sidecar run as it)",
    )
    parser.add_argument(
        "--capture-gid",
        type=int,
        default=1337,
        help="nor of this gid; a root sidecar switches its effective gid to it after install",
    )
    parser.set_defaults(run=run)


def _labels(entries: list[str]) -> tuple[tuple[str, str], ...]:
    labels: dict[str, str] = {}
    for entry in (e.strip() for text in entries for e in text.split(",")):
        if not entry:
            continue
        key, eq, value = entry.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--labels entry {entry!r} must be key=value")
        labels[key.strip()] = value.strip()
    return tuple(sorted(labels.items()))


def _bootstrap_token(args: argparse.Namespace) -> str | None:
    if args.bootstrap_token_file:
        try:
            with open(args.bootstrap_token_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as exc:
            raise ValueError(f"cannot read --bootstrap-token-file: {exc}") from exc
    token = args.bootstrap_token or os.environ.get("MESH_SIDECAR_BOOTSTRAP_TOKEN")
    return token or None


def _otlp_compression(args: argparse.Namespace) -> str:
    """--otlp-compression, else OTEL_EXPORTER_OTLP_COMPRESSION (the OTel SDKs' variable), else
    none."""
    chosen: str | None = getattr(args, "otlp_compression", None)
    if chosen is not None:
        return chosen
    value = os.environ.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").strip().lower()
    if not value:
        return "none"
    if value not in COMPRESSIONS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_COMPRESSION must be none or gzip, got {value!r}")
    return value


def _capture_config(args: argparse.Namespace) -> CaptureConfig | None:
    if not getattr(args, "capture", False):
        return None
    if args.outbound_port == 0 or args.inbound_port == 0:
        raise ValueError("--capture needs fixed --outbound-port and --inbound-port (not 0)")
    if args.listen.startswith("127.") or args.listen in ("localhost", "::1"):
        # PREROUTING's REDIRECT sends inbound traffic to the receiving interface's address
        raise ValueError("--capture needs --listen 0.0.0.0 (or this host's address)")
    try:
        excluded = tuple(int(p) for p in args.capture_exclude_ports.split(",") if p.strip())
    except ValueError as exc:
        raise ValueError(f"--capture-exclude-ports must be port numbers: {exc}") from exc
    return CaptureConfig(
        inbound_ports=(args.app_port,),
        outbound_port=args.outbound_port,
        inbound_port=args.inbound_port,
        exclude_ports=excluded,
        uid=args.capture_uid,
        gid=args.capture_gid,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `meshlens sidecar`; returns the exit code."""
    try:
        token = _bootstrap_token(args)
        if args.control_plane and token is None:
            raise ValueError(
                "--control-plane needs a bootstrap token (--bootstrap-token, "
                "--bootstrap-token-file or MESH_SIDECAR_BOOTSTRAP_TOKEN)"
            )
        options = SidecarOptions(
            service=args.service,
            app_port=args.app_port,
            app_host=args.app_host,
            config_path=args.config,
            collector_url=args.collector,
            otlp_compression=_otlp_compression(args),
            control_plane_url=args.control_plane,
            listen_host=args.listen,
            admin_port=args.admin_port,
            outbound_port=args.outbound_port,
            inbound_port=args.inbound_port,
            drain_timeout_s=args.drain_timeout,
            access_log=args.access_log,
            instance=args.instance_id,
            bootstrap_token=token,
            namespace=args.namespace,
            state_dir=args.state_dir,
            labels=_labels(args.labels),
            mtls=args.mtls,
            trust_domain=args.trust_domain,
            cert_file=args.cert,
            key_file=args.key,
            ca_file=args.ca,
            capture=bool(getattr(args, "capture", False)),
            path_normalization=args.path_normalization,
        )
        capture = _capture_config(args)
    except ValueError as exc:
        print(f"meshlens sidecar: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's loop works, just slower
        return asyncio.run(serve(options, capture))
    return int(uvloop.run(serve(options, capture)))


async def serve(options: SidecarOptions, capture: CaptureConfig | None = None) -> int:
    """Start, print the addresses, run until drained by SIGTERM/SIGINT or POST /drain.

    With `capture`, the iptables rules go in first and the process continues with the capture
    gid (so its own connections are not captured); the rules are removed however it ends.
    """
    if capture is None:
        return await _serve(options)
    session = CaptureSession(capture)
    try:
        session.install()
        session.exempt_self()
    except (CaptureError, OSError, subprocess.SubprocessError) as exc:
        session.remove()
        print(f"meshlens sidecar: --capture: {exc}", file=sys.stderr)
        return 1
    try:
        return await _serve(options)
    finally:
        session.remove()


async def _serve(options: SidecarOptions) -> int:
    sidecar = Sidecar(options)
    try:
        addresses = await sidecar.start()
    except ConfigError as exc:
        print(f"meshlens sidecar: invalid config {options.config_path}:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        await sidecar.stop()
        return 2
    except IdentityError as exc:
        print(f"meshlens sidecar: mesh identity: {exc}", file=sys.stderr)
        await sidecar.stop()
        return 2
    except OSError as exc:
        print(f"meshlens sidecar: cannot listen: {exc}", file=sys.stderr)
        await sidecar.stop()
        return 1
    _tune_gc()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sidecar.request_drain)
    loop.add_signal_handler(signal.SIGHUP, sidecar.control.reload)
    print(f"meshlens sidecar {options.service} ready: {addresses.describe()}", flush=True)
    await sidecar.wait_stopped()
    return 0


def _tune_gc() -> None:
    """Move start-up objects out of the collector's reach and collect young objects less often.

    The request path allocates many short-lived objects; with the default gen-0 threshold (700)
    collections run every few requests and each gen-2 pass walks every imported module's objects.
    Measured with bench/sidecar_proxy.py: about 10% less CPU per request. It also keeps RSS
    lower: with the default thresholds (700, 10, 10) the sidecar grew to 37.9-38.9 MB under
    wrk -c32 instead of 35.3-35.4 MB (issue 3; MALLOC_ARENA_MAX=1 or 2 made no difference).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
