"""Sidecar wiring: config -> built stacks (with telemetry) -> outbound/inbound listeners + admin.

One `Sidecar` per process. The listeners read the active handler through a single reference that
`ConfigControl` swaps on every applied config version; SIGTERM or POST /drain drains and stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from sidecar._native import mode as native_mode
from sidecar.admin import AdminServer
from sidecar.build import BuiltStack, build_inbound, build_outbound, static_endpoints
from sidecar.capture import EndpointIndex, original_dst_layer, restore_authority
from sidecar.codec import HttpServer, ServerConfig
from sidecar.config import ConfigError, SidecarConfig, load_config, parse_config
from sidecar.control import ActiveStacks, ApplyResult, ConfigControl, ConfigUpdate
from sidecar.cpclient import (
    TLS_MODE_LABEL,
    TLS_MODE_MESH,
    ControlPlaneClient,
    ControlPlaneSync,
    Registration,
    WatchUpdate,
    wait_synced,
)
from sidecar.discovery import DynamicEndpoints, LayeredEndpoints
from sidecar.http import Endpoint, Request, Response
from sidecar.identity import (
    CpClientCertificates,
    IdentityManager,
    load_credentials_files,
    signer_for,
    spiffe_id,
)
from sidecar.jwks import pool_fetch
from sidecar.layers.authz import Authorizer, AuthzConfig
from sidecar.layers.grpc import grpc_attempt_layer, grpc_layer
from sidecar.layers.jwt import Authenticator, JwtConfig, jwt_layer
from sidecar.loops import OutgoingConnections
from sidecar.paths import MODES as PATH_MODES
from sidecar.peers import LocalAddresses, reaches_own_listener
from sidecar.protocols import LazyH2Pool, OwnListeners, guarded_terminal, protocol_terminal
from sidecar.stack import Handler, Layer
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.transport import COMPRESSIONS
from sidecar.tls import (
    MODES,
    Credentials,
    MtlsMode,
    ProtocolFactory,
    TlsContexts,
    TlsListener,
)
from sidecar.upstream import UpstreamConfig, UpstreamPool

__all__ = ["Sidecar", "SidecarAddresses", "SidecarOptions"]

logger = logging.getLogger(__name__)


def _process_stats() -> dict[str, int | None]:
    """Open descriptors and the soft limit on them (None where the platform does not say)."""
    try:
        open_fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = None
    try:
        import resource

        fd_limit: int | None = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:
        fd_limit = None
    return {"open_fds": open_fds, "fd_limit": fd_limit}


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    """Everything the `meshlens sidecar` command line decides."""

    service: str
    app_port: int
    app_host: str = "127.0.0.1"
    config_path: str | None = None
    collector_url: str | None = None
    otlp_compression: str = "none"  # of the OTLP export bodies: none | gzip
    control_plane_url: str | None = None
    listen_host: str = "127.0.0.1"
    admin_port: int = 15000
    outbound_port: int = 15001
    inbound_port: int = 15006
    drain_timeout_s: float = 10.0
    reload_interval_s: float = 1.0
    instance: str = ""
    access_log: str | None = None
    telemetry_export_interval_s: float = 1.0
    # control plane (--control-plane): endpoints and policies come from it instead of --config
    bootstrap_token: str | None = field(default=None, repr=False)
    namespace: str = "default"
    state_dir: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    initial_sync_s: float = 5.0
    cp_watch_timeout_s: float = 30.0
    cp_heartbeat_s: float = 2.0
    cp_backoff_max_s: float = 5.0
    # mesh identity / mTLS (--mtls, --trust-domain, --cert/--key/--ca)
    mtls: str = "off"
    trust_domain: str = "cluster.local"
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    # transparent capture (--capture): route by SO_ORIGINAL_DST of redirected connections
    capture: bool = False
    path_normalization: str = "merge_slashes"  # (--path-normalization; sidecar/paths.py)

    def __post_init__(self) -> None:
        if not self.service:
            raise ValueError("service must not be empty")
        if not 0 < self.app_port < 65536:
            raise ValueError(f"app_port must be in 1..65535, got {self.app_port}")
        for name in ("admin_port", "outbound_port", "inbound_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ValueError(f"{name} must be in 0..65535")
        if reaches_own_listener(self.app_host, self.listen_host):
            for name in ("inbound_port", "outbound_port", "admin_port"):
                if self.app_port == getattr(self, name):
                    # (the inbound listener forwarding to itself went round ~64 times per
                    # request, until x-forwarded-for passed the header limit)
                    raise ValueError(
                        f"app_port {self.app_port} is this sidecar's {name.split('_')[0]} port:"
                        " the app would be the sidecar itself (a request loop)"
                    )
        if self.drain_timeout_s <= 0 or self.reload_interval_s <= 0:
            raise ValueError("drain_timeout_s and reload_interval_s must be > 0")
        if self.control_plane_url and self.config_path:
            raise ValueError("use either a control plane or a config file, not both")
        if self.otlp_compression not in COMPRESSIONS:
            raise ValueError(
                f"otlp_compression must be none or gzip, got {self.otlp_compression!r}"
            )
        if self.path_normalization not in PATH_MODES:
            raise ValueError(f"path_normalization must be one of {', '.join(PATH_MODES)}")
        if self.mtls not in MODES:
            raise ValueError(f"mtls must be one of {', '.join(MODES)}, got {self.mtls!r}")
        files = (self.cert_file, self.key_file, self.ca_file)
        if any(files) and not all(files):
            raise ValueError("--cert, --key and --ca go together")
        if self.mtls != "off" and not all(files) and not self.control_plane_url:
            raise ValueError(f"mtls {self.mtls} needs --cert/--key/--ca or a control plane")
        if self.control_plane_url and not self.control_plane_url.startswith("http://"):
            raise ValueError(
                f"control plane URL must be http://host:port: {self.control_plane_url}"
            )


@dataclass(frozen=True, slots=True)
class SidecarAddresses:
    admin: tuple[str, int]
    outbound: tuple[str, int]
    inbound: tuple[str, int]

    def describe(self) -> str:
        return " ".join(
            f"{name}=http://{host}:{port}"
            for name, (host, port) in (
                ("admin", self.admin),
                ("outbound", self.outbound),
                ("inbound", self.inbound),
            )
        )


class Sidecar:
    """The running sidecar: listeners, admin server, config control, telemetry, upstream pool."""

    def __init__(self, options: SidecarOptions) -> None:
        self.options = options
        self.instance = options.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.tls = TlsContexts(cast(MtlsMode, options.mtls))
        # the connections this sidecar dials: one that comes back into its outbound listener
        # is a request loop, refused there whatever name the request used (sidecar/loops.py)
        self.outgoing = OutgoingConnections()
        self.upstream = UpstreamPool(UpstreamConfig(), tls=self.tls.client, outgoing=self.outgoing)
        self.h2_upstream = LazyH2Pool(tls=self.tls.client, outgoing=self.outgoing)
        self._protocols: dict[str, str] = {}  # upstream name -> its configured protocol
        # (compiled, no coroutine of its own: the pool's own call is the only await level)
        self._terminal = protocol_terminal(self.upstream, self.h2_upstream, self._protocols)
        self.identity: IdentityManager | None = None
        self.authz = Authorizer(AuthzConfig())
        self.jwt = Authenticator(JwtConfig())
        self.tls_listener: TlsListener | None = None
        self.telemetry = Telemetry(
            TelemetryConfig(
                service=options.service,
                instance=self.instance,
                collector_url=options.collector_url,
                otlp_compression=options.otlp_compression,
                access_log=options.access_log,
                export_interval_s=options.telemetry_export_interval_s,
                namespace=options.namespace,
                principal=_principal(options),
            )
        )
        self._app_endpoint = Endpoint(
            options.app_host, options.app_port, service=options.service, instance=self.instance
        )
        self.endpoints: DynamicEndpoints | None = None
        self.cp: ControlPlaneSync | None = None
        if options.control_plane_url:
            self.endpoints = DynamicEndpoints()
            self.cp = ControlPlaneSync(
                ControlPlaneClient(
                    options.control_plane_url,
                    pool=self.upstream,
                    bootstrap_token=options.bootstrap_token,
                    mtls=options.mtls != "off",
                ),
                Registration(options.service, self.instance, "", options.namespace),
                apply=self._cp_apply,
                running_version=self._running_version,
                upstreams=self._document_upstreams,
                watch_timeout_s=options.cp_watch_timeout_s,
                heartbeat_interval_s=options.cp_heartbeat_s,
                backoff_max_s=options.cp_backoff_max_s,
            )
        self.control: ConfigControl[SidecarConfig] = ConfigControl(
            path=options.config_path,
            load=load_config,
            build=self._build,
            parse=parse_config,
            interval_s=options.reload_interval_s,
            on_applied=self._applied,
            on_endpoints=self.endpoints.update if self.endpoints is not None else None,
            state_dir=Path(options.state_dir) if options.state_dir else None,
        )
        self._outbound_handler: Handler = _not_ready
        self._inbound_handler: Handler = _not_ready
        # this host's addresses (sidecar/peers.py): the outbound listener and the admin's
        # state-changing endpoints serve only them; one cache for both
        local = LocalAddresses()
        self.outbound = HttpServer(
            ServerConfig(
                direction="outbound",
                original_dst=options.capture,
                path_normalization=options.path_normalization,
                own_connections=self.outgoing,
                local_peers=local,
            ),
            partial(getattr, self, "_outbound_handler"),  # (C calls: no interpreted frame)
        )
        self.inbound = HttpServer(
            ServerConfig(direction="inbound", path_normalization=options.path_normalization),
            partial(getattr, self, "_inbound_handler"),
        )
        self.admin = AdminServer(self, local)
        self.addresses: SidecarAddresses | None = None
        self._ready = False
        self._stopped = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._own = OwnListeners(
            frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", options.listen_host})
        )
        # the pool, refusing requests that would come straight back into this sidecar
        self._outbound_terminal = guarded_terminal(self._terminal, self._own, restore_authority)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> SidecarAddresses:
        """Load the config (raising if invalid), start telemetry, listeners and admin.

        With a control plane: start from the persisted last good config if there is one (else
        defaults), register once the listeners are bound, and wait up to `initial_sync_s` for
        the first push when nothing was persisted.
        """
        persisted = self.cp is not None and self.control.load_persisted()
        if not persisted:
            self.control.load_initial()
        await self.telemetry.start()
        await self.control.start()
        host, opts = self.options.listen_host, self.options
        await self._start_identity()
        listen = self._listen_tls if opts.mtls != "off" else None
        inbound = await self.inbound.start(host, opts.inbound_port, listen=listen)
        outbound = await self.outbound.start(host, opts.outbound_port)
        admin = await self.admin.start(host, opts.admin_port)
        self.addresses = SidecarAddresses(admin=admin, outbound=outbound, inbound=inbound)
        self._own.ports = frozenset((admin[1], outbound[1]))
        if self.cp is not None:
            self.cp.registration = Registration(
                self.options.service,
                self.instance,
                _advertised(host),
                self.options.namespace,
                ports={"inbound": inbound[1], "outbound": outbound[1], "admin": admin[1]},
                labels=_registered_labels(self.options),
            )
            self.cp.start()
            if not persisted and not await wait_synced(self.cp, self.options.initial_sync_s):
                logger.warning(
                    "no config from the control plane yet; serving defaults",
                    extra={"url": self.options.control_plane_url},
                )
        self._ready = True
        logger.info(
            "sidecar ready",
            extra={"addresses": self.addresses.describe(), "native": native_mode()},
        )
        return self.addresses

    def request_drain(self) -> bool:
        """Begin a graceful drain in the background (SIGTERM, POST /drain)."""
        if self._drain_task is not None:
            return False
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_and_stop())
        return True

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _drain_and_stop(self) -> None:
        await self.drain()
        await self.stop()

    async def drain(self) -> bool:
        """Stop accepting, finish in-flight requests (bounded), close idle connections."""
        self._ready = False
        if self.cp is not None:
            await self.cp.stop(deregister=True)  # leave callers' endpoint sets at once
        timeout = self.options.drain_timeout_s
        results = await asyncio.gather(self.outbound.drain(timeout), self.inbound.drain(timeout))
        logger.info("sidecar drained", extra={"clean": all(results)})
        return all(results)

    async def stop(self) -> None:
        """Close everything; export what telemetry still holds. Safe to call twice."""
        self._ready = False
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        if self.cp is not None:
            await self.cp.stop(deregister=False)
        await self.outbound.close()
        await self.inbound.close()
        await self.control.close()
        if self.identity is not None:
            await self.identity.close()
        await self.upstream.close()
        await self.h2_upstream.close()
        await self.telemetry.shutdown()
        await self.admin.close()
        self._stopped.set()

    # -- config -> stacks -----------------------------------------------------------------

    def _build(
        self, config: SidecarConfig | None, source: str, previous: ActiveStacks | None
    ) -> ActiveStacks:
        telemetry = self.telemetry
        if config is not None:
            self._check_no_loop(config)
        endpoints = None
        if self.endpoints is not None:
            config = config if config is not None else parse_config({})
            endpoints = LayeredEndpoints(self.endpoints, static_endpoints(config))
        if config is not None:
            protocols = {name: u.protocol for name, u in config.upstreams.items()}
            self._protocols.clear()  # in place: the terminal reads this dict
            self._protocols.update(protocols)
        old_out = previous.outbound if previous is not None else None
        old_in = previous.inbound if previous is not None else None
        outbound: BuiltStack = build_outbound(
            config,
            terminal=self._outbound_terminal,
            endpoints=endpoints,
            outer=[telemetry.outbound_layer(), *self._capture_layers(config), grpc_layer()],
            per_attempt=[telemetry.attempt_layer(), grpc_attempt_layer()],
            previous=old_out if isinstance(old_out, BuiltStack) else None,
        )
        authz = config.authz if config is not None else AuthzConfig()
        if config is not None and config.mtls_mode is not None:
            self._set_mtls_mode(config.mtls_mode)
        self.authz = Authorizer(authz)
        jwt = config.jwt if config is not None else JwtConfig()
        self.jwt = Authenticator(jwt, fetch=pool_fetch(self.upstream), previous=self.jwt)
        inbound: BuiltStack = build_inbound(
            config,
            terminal=protocol_terminal(
                self.upstream, self.h2_upstream, config.inbound.app_protocol if config else "auto"
            ),
            # jwt answers its own 401 and goes first: authz (inside build_inbound, after the
            # rate limit) matches the claims it verified
            outer=[telemetry.inbound_layer(), grpc_layer(), jwt_layer(jwt, authenticator=self.jwt)],
            app=self._app_endpoint,
            previous=old_in if isinstance(old_in, BuiltStack) else None,
            authorizer=self.authz,
        )
        return ActiveStacks(outbound, inbound, outbound.version, source)

    def _capture_layers(self, config: SidecarConfig | None) -> list[Layer]:
        """With --capture: route redirected connections by their original destination."""
        if not self.options.capture:
            return []
        static = {name: spec.endpoints for name, spec in config.upstreams.items()} if config else {}
        return [original_dst_layer(EndpointIndex(static, self.endpoints))]

    async def _listen_tls(self, factory: ProtocolFactory, host: str, port: int) -> TlsListener:
        listen = TlsListener.listen(self.tls, trust_domain=self.options.trust_domain)
        self.tls_listener = await listen(factory, host, port)
        return self.tls_listener

    def _set_mtls_mode(self, mode: str) -> None:
        if mode != "off" and self.options.mtls == "off":
            raise ConfigError(
                [f"mtls.mode: {mode} needs a sidecar started with --mtls and credentials"]
            )
        if self.options.mtls != "off":
            self.tls.set_mode(cast(MtlsMode, mode))

    async def _start_identity(self) -> None:
        """Credentials from --cert/--key/--ca, or a certificate from the control plane's CA."""
        opts = self.options
        if opts.cert_file and opts.key_file and opts.ca_file:
            files = (Path(opts.cert_file), Path(opts.key_file), Path(opts.ca_file))
            self.tls.update(load_credentials_files(*files))
        elif self.cp is not None:
            client = self.cp.client

            def apply(credentials: Credentials) -> None:
                self.tls.update(credentials)
                client.signer = signer_for(credentials)

            identity = spiffe_id(opts.trust_domain, opts.namespace, opts.service)
            self.identity = IdentityManager(identity, CpClientCertificates(client), apply)
            await self.identity.start()

    def _check_no_loop(self, config: SidecarConfig) -> None:
        """A pushed endpoint may not be one of this sidecar's own listeners (a request loop);
        only the sidecar knows its ports, so this is checked here and NACKed."""
        errors = [
            f"upstreams.{name}.endpoints: {e.address} is this sidecar's own listener"
            for name, spec in config.upstreams.items()
            for e in spec.endpoints
            if self._own.includes(e.host, e.port)
        ]
        if errors:
            raise ConfigError(errors)

    def _cp_apply(self, update: WatchUpdate, new_version: bool) -> ApplyResult:
        if self.identity is not None and update.trust_bundle:
            self.identity.update_trust_bundle(update.trust_bundle)
        return self.control.apply_update(
            ConfigUpdate(update.version, update.document, update.endpoints, "control-plane"),
            policy=new_version,
        )

    def _running_version(self) -> int | None:
        return self.control.good_version

    def _document_upstreams(self) -> list[str]:
        document = self.control.good_document
        upstreams = document.get("upstreams") if document is not None else None
        return sorted(str(name) for name in upstreams) if isinstance(upstreams, dict) else []

    def _applied(self, stacks: ActiveStacks) -> None:
        self._outbound_handler = stacks.outbound.handler
        self._inbound_handler = stacks.inbound.handler
        self.telemetry.set_config_version(stacks.version)

    # -- admin source ---------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self._ready

    def metrics_text(self) -> str:
        return self.telemetry.prometheus_text() + _core_metrics(self)

    def config_doc(self) -> dict[str, object]:
        active = self.control.active
        return {
            "service": self.options.service,
            "instance": self.instance,
            "version": active.version,
            "source": active.source,
            "applied": self.control.applied,
            "rejected": self.control.rejected,
            "last_errors": list(self.control.last_errors),
            "control_plane": self.cp.status() if self.cp is not None else None,
            "outbound": active.outbound.describe(),
            "inbound": active.inbound.describe(),
        }

    def stats_doc(self) -> dict[str, object]:
        active = self.control.active
        listeners: dict[str, Any] = {
            name: {
                "connections": len(server.connections),
                "in_flight": server.in_flight,
                "requests": server.requests_total,
                "draining": server.draining,
                "refused": dict(server.refused),
            }
            for name, server in (("outbound", self.outbound), ("inbound", self.inbound))
        }
        return {
            "version": active.version,
            "outbound": active.outbound.stats(),
            "inbound": active.inbound.stats(),
            "listeners": listeners,
            "upstream_pool": self.upstream.stats(),
            "h2_pool": self.h2_upstream.stats(),
            "telemetry": self.telemetry.stats(),
            "mtls": self._mtls_stats(),
            "authz": self.authz.stats(),
            "jwt": self.jwt.stats(),
            "process": _process_stats(),
        }

    def _mtls_stats(self) -> dict[str, object]:
        creds = self.tls.credentials
        listener = self.tls_listener
        return {
            "mode": self.tls.mode,
            "spiffe_id": creds.spiffe_id if creds is not None else None,
            "not_after": creds.not_after if creds is not None else None,
            "updates": self.tls.updates,
            "refusals": dict(listener.refusals) if listener is not None else {},
        }


def _registered_labels(options: SidecarOptions) -> dict[str, str]:
    """The labels registered with the control plane; an mTLS listener is announced (callers
    holding credentials then use mTLS to it, sidecar/cpclient.py)."""
    labels = dict(options.labels)
    if options.mtls != "off":
        labels[TLS_MODE_LABEL] = TLS_MODE_MESH
    return labels


def _principal(options: SidecarOptions) -> str:
    """Our SPIFFE id for telemetry labels when we hold mesh credentials, else ""."""
    if not (options.cert_file or options.control_plane_url):
        return ""
    return spiffe_id(options.trust_domain, options.namespace, options.service)


def _advertised(host: str) -> str:
    """The address other sidecars reach this one at (a wildcard bind advertises the host's)."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


async def _not_ready(request: Request) -> Response:
    return Response(503, (("x-meshlens-error", "not_ready"),), b"sidecar not ready\n")


def _core_metrics(sidecar: Sidecar) -> str:
    lines = [
        "# HELP meshlens_sidecar_connections Open downstream connections per listener.",
        "# TYPE meshlens_sidecar_connections gauge",
        f'meshlens_sidecar_connections{{listener="outbound"}} {len(sidecar.outbound.connections)}',
        f'meshlens_sidecar_connections{{listener="inbound"}} {len(sidecar.inbound.connections)}',
        "# HELP meshlens_sidecar_config_updates_total Config versions applied or rejected.",
        "# TYPE meshlens_sidecar_config_updates_total counter",
        f'meshlens_sidecar_config_updates_total{{result="applied"}} {sidecar.control.applied}',
        f'meshlens_sidecar_config_updates_total{{result="rejected"}} {sidecar.control.rejected}',
        "# HELP meshlens_sidecar_upstream_connections_opened_total Upstream connections opened.",
        "# TYPE meshlens_sidecar_upstream_connections_opened_total counter",
        f"meshlens_sidecar_upstream_connections_opened_total {sidecar.upstream.opened}",
        *_fallback_metrics(sidecar),
    ]
    return "\n".join(lines) + "\n"


def _fallback_metrics(sidecar: Sidecar) -> list[str]:
    """Per-route fallbacks taken (layers/fallback.py), labelled by route and trigger reason."""
    lines = [
        "# HELP meshlens_sidecar_fallbacks_total Requests answered by a route's fallback.",
        "# TYPE meshlens_sidecar_fallbacks_total counter",
    ]
    routes: Any = sidecar.control.active.outbound.stats().get("routes") or {}
    for route, entry in sorted(routes.items()):
        taken = entry.get("fallback", {}).get("taken", {}) if isinstance(entry, dict) else {}
        for reason, count in sorted(taken.items()):
            lines.append(
                f'meshlens_sidecar_fallbacks_total{{route="{route}",reason="{reason}"}} {count}'
            )
    return lines
