"""Proxy overhead benchmark: direct vs nginx proxy_pass vs one sidecar vs a client+server pair.

Not a test. Starts an nginx upstream returning a 12-byte body, an nginx `proxy_pass` (1 worker,
keep-alive upstream), the sidecar(s) with full telemetry exporting OTLP to a local sink, and
drives each with wrk (32 connections). "core only" is the codec + upstream pool with no policy or
telemetry layers, to show what the layers cost. The sidecars run the mypyc build of their hot
path when `make native` has built it for the current sources (see the "sidecar modules" line);
the "pure Python" row is the same sidecar with MESHLENS_PURE_PYTHON=1, for comparison. Prints
req/s, p50/p99, added latency vs direct, CPU microseconds per request and RSS of the proxy
processes, with ratios vs nginx from this run, and the load average (the machine is shared).

Fixed-rate latency (Istio's method: 1000 requests/s over 16 connections, the load its published
"added p90/p99" figures use; needs h2load from nghttp2-client): h2load --h1 --rps sends at a
fixed rate below saturation, so latency is per-request work and not queueing. Under wrk's
saturating closed loop, p50 is mostly connections / throughput (Little's law) and repeats the
req/s gap; both are reported, with p50/p90/p99 added vs direct and the proxy's CPU per 1000
requests/s (vCPU, Istio's unit). Two things keep the fixed-rate figures about the proxies and
not about the machine: (1) arrivals are evenly spaced: the 16 connections start 1/rate apart
(h2load -r1 --rate-period), each sending every 16/rate s; started together (h2load's default)
all 16 fire in the same instant, and the burst's own queueing (~0.25 ms, in direct too) buries
what the proxies add; (2) the scenarios take turns in 1 s slices (direct, nginx, sidecar, pair,
direct, ...; `--duration` x 2 slices each per round) and each one's percentiles come from all
its slices' requests, so a slow drift of this shared VM's wake-up latency reaches every
scenario alike (one 10 s run after another, direct's p50 moved 0.1-0.2 ms between runs, more
than nginx adds).

HTTP/2 rows (when h2load from nghttp2-client is installed): h2load, 8 connections x 4 streams,
against nginx serving h2c directly and through the sidecar(s) speaking h2 end to end; req/s and
the mean request time added vs direct h2 (h2load reports no percentiles).

Rounds (`--rounds N`, default 3): one noisy moment on this shared machine must not decide a goal.
Each round runs every saturated wrk scenario once in a fixed order (direct, nginx, core, sidecar,
pure Python, pair) and then the fixed-rate scenarios (direct, nginx, sidecar, pair, in turns), so
each sidecar figure has an nginx baseline from the same round. Per round the ratios are computed
(req/s x nginx, added p50 vs nginx's added p50, saturated and fixed rate); the tables show each
scenario's median over rounds (RSS: median and max; non-2xx/failed: summed), and each goal line
shows every round's value, the median the goal is judged on, and how many rounds met it (the
"added p50" goals also print both terms of each round's ratio: when nginx's added p50 is within
the noise of direct's, the ratio swings widely and says little). The
processes are started once for all rounds (later rounds' RSS is measured after more load). The
HTTP/2 rows run once (no goal). `--rounds 1` is a single pass as before. Before each scenario
the benchmark waits (at most 20 s) until its own processes are idle, so the after-work of the one
before (sidecars exporting a saturated run's spans, the sink decoding them) is not measured.

    python bench/sidecar_proxy.py [--rounds 3] [--duration 5] [--connections 32] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body-{name};
  proxy_temp_path {dir}/proxy-{name};
  fastcgi_temp_path {dir}/fcgi-{name};
  uwsgi_temp_path {dir}/uwsgi-{name};
  scgi_temp_path {dir}/scgi-{name};
  keepalive_requests 1000000;
  {body}
}}
"""
UPSTREAM_BODY = """
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello world\\n"; }} }}
"""
UPSTREAM_H2_BODY = """
  server {{ listen 127.0.0.1:{port} http2; location / {{ return 200 "hello world\\n"; }} }}
"""
PROXY_BODY = """
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""
CORE = """
import asyncio, sys, uvloop
from sidecar.codec import HttpServer, ServerConfig
from sidecar.http import Endpoint
from sidecar.layers.proxy_errors import proxy_errors_layer
from sidecar.stack import compose
from sidecar.upstream import UpstreamPool
app = Endpoint("127.0.0.1", int(sys.argv[2]))
def to_app(inner):
    async def handle(request):
        request.context.endpoint = app
        return await inner(request)
    return handle
async def main():
    handler = compose([proxy_errors_layer(), to_app], UpstreamPool())
    await HttpServer(ServerConfig(), lambda: handler).start("127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""
SINK = """
import asyncio, sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")
app = web.Application(client_max_size=64 << 20)
app.router.add_post("/v1/traces", ok)
app.router.add_post("/v1/metrics", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float | None = None
    rss_mb: float | None = None


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, duration: int, connections: int, host: str | None) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result("", rps, p50, p99, requests, int(errors.group(1)) if errors else 0)


class Procs:
    """Child processes of the benchmark, all stopped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def stop_all(self) -> None:
        for proc in reversed(self.procs):  # sidecars before the sink they export to
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_nginx(procs: Procs, workdir: Path, name: str, body: str, port: int) -> int:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = workdir / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, name=name, body=body))
    proc = procs.start([nginx, "-p", str(workdir), "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc.pid


def start_sidecar(
    procs: Procs,
    workdir: Path,
    service: str,
    app_port: int,
    config: dict[str, Any],
    collector: str,
    env: dict[str, str] | None = None,
) -> tuple[int, int, int]:
    """Start `meshlens sidecar`; return (pid, outbound port, inbound port)."""
    path = workdir / f"{service}.json"
    path.write_text(json.dumps(config))
    outbound, inbound = free_port(), free_port()
    args = [
        sys.executable, "-m", "meshlens_cli", "--log-level=WARNING", "sidecar",
        "--service", service, "--app-port", str(app_port), "--config", str(path),
        "--collector", collector, "--admin-port", "0",
        "--outbound-port", str(outbound), "--inbound-port", str(inbound),
    ]  # fmt: skip
    proc_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = procs.start(args, cwd=str(REPO), env=proc_env, stdout=subprocess.DEVNULL)
    wait_port(outbound)
    wait_port(inbound)
    return proc.pid, outbound, inbound


def settle(pids: Sequence[int], idle_cpu: float = 0.05, timeout_s: float = 20.0) -> float:
    """Wait until the benchmark's own processes are idle (together under `idle_cpu` of a core
    over 0.25 s; bounded by `timeout_s`) so one scenario's after-work (sidecars exporting the
    spans of a saturated run, the sink decoding them) does not land in the next one's figures.
    Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(0.25)
        if sum(cpu_seconds(p) for p in pids) - before < idle_cpu * 0.25:
            break
    return time.monotonic() - started


def measure(
    name: str, url: str, args: argparse.Namespace, host: str | None, pids: list[int]
) -> Result:
    run_wrk(url, 1, args.connections, host)  # warm-up: pools, JIT-free but caches, imports
    before = [cpu_seconds(p) for p in pids]
    result = run_wrk(url, args.duration, args.connections, host)
    result.name = name
    if pids:
        used = sum(cpu_seconds(p) - b for p, b in zip(pids, before, strict=True))
        result.cpu_us = used / max(result.requests, 1) * 1e6
        result.rss_mb = max(rss_mb(p) for p in pids)
    return result


def native_mode() -> str:
    """Whether the sidecars run the mypyc build (sidecar/_native.py), as they report it."""
    code = "import sidecar._native as n; print(n.mode())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MESHLENS_PURE_PYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return out.stdout.strip() or "unknown"


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return _median(present) if present else None


def _check_rounds(rounds: Sequence[Sequence[Any]]) -> list[str]:
    """The scenario names, which every round must run in the same order."""
    if not rounds or not rounds[0]:
        raise ValueError("no rounds to aggregate")
    names = [r.name for r in rounds[0]]
    for number, round_ in enumerate(rounds[1:], start=2):
        if [r.name for r in round_] != names:
            raise ValueError(f"round {number} ran other scenarios than round 1")
    return names


def _baselines(round_: Sequence[Any]) -> tuple[Any, Any]:
    """(direct, nginx) of one round: the first row and the first nginx row."""
    nginx = next((r for r in round_ if r.name.startswith("nginx")), None)
    if nginx is None:
        raise ValueError("a round has no nginx row to compare with")
    return round_[0], nginx


def _sidecar(round_: Sequence[Any]) -> Any:
    """The first one-sidecar row of a round, or None."""
    return next((r for r in round_ if r.name.startswith("sidecar (")), None)


@dataclass(frozen=True)
class GoalLine:
    """One goal judged on the median over rounds; `values` holds every round's figure."""

    goal: str
    values: tuple[float, ...]
    limit: float
    higher_is_better: bool
    fmt: str  # e.g. "{:.2f}x"

    @property
    def median(self) -> float:
        return _median(self.values)

    def meets(self, value: float) -> bool:
        return value >= self.limit if self.higher_is_better else value <= self.limit

    @property
    def met(self) -> bool:
        return self.meets(self.median)

    @property
    def met_rounds(self) -> int:
        return sum(self.meets(v) for v in self.values)

    def _show(self, value: float) -> str:
        return "n/a" if math.isinf(value) else self.fmt.format(value)

    def text(self) -> str:
        verdict = "met" if self.met else "NOT met"
        if len(self.values) == 1:
            return f"  {self.goal:<36}{self._show(self.values[0]):>10}  {verdict}"
        each = " / ".join(self._show(v) for v in self.values)
        return (
            f"  {self.goal:<39} {each} -> median {self._show(self.median)}  {verdict}"
            f" ({self.met_rounds}/{len(self.values)} rounds met it)"
        )


@dataclass(frozen=True)
class Row:
    """One saturated scenario over all rounds: medians (RSS also max, non-2xx summed)."""

    name: str
    rps: float
    x_nginx: float
    p50_ms: float
    p99_ms: float
    added_p50_ms: float
    cpu_us: float | None
    rss_mb: float | None
    rss_max_mb: float | None
    errors: int


def median_rows(rounds: Sequence[Sequence[Result]]) -> list[Row]:
    """Per scenario, the median over rounds; ratios and added latency are per round first."""
    names = _check_rounds(rounds)
    bases = [_baselines(r) for r in rounds]
    rows = []
    for i, name in enumerate(names):
        runs = [r[i] for r in rounds]
        rss = [r.rss_mb for r in runs if r.rss_mb is not None]
        rows.append(
            Row(
                name,
                _median([r.rps for r in runs]),
                _median([r.rps / n.rps for r, (_, n) in zip(runs, bases, strict=True)]),
                _median([r.p50_ms for r in runs]),
                _median([r.p99_ms for r in runs]),
                _median([r.p50_ms - d.p50_ms for r, (d, _) in zip(runs, bases, strict=True)]),
                _median_or_none([r.cpu_us for r in runs]),
                _median(rss) if rss else None,
                max(rss) if rss else None,
                sum(r.errors for r in runs),
            )
        )
    return rows


def _added_ratio(one: Any, direct: Any, nginx: Any) -> float:
    """The sidecar's added p50 over nginx's added p50; infinite (undecided, so not met) when
    nginx's added p50 is not above 1 us: the round could not resolve the baseline, and a ratio
    against a zero or negative difference of two noisy p50s would say nothing (or, negative,
    pass by accident)."""
    baseline = nginx.p50_ms - direct.p50_ms
    if baseline <= 1e-3:
        return math.inf
    return float((one.p50_ms - direct.p50_ms) / baseline)


def added_p50_detail(rounds: Sequence[Sequence[Any]]) -> str:
    """Every round's added p50 (ms) of the sidecar and of nginx: the ratio's two terms, which
    show when nginx's added p50 is within the noise of direct's and the ratio means little."""
    terms = []
    for round_ in rounds:
        direct, nginx = _baselines(round_)
        terms.append((_sidecar(round_).p50_ms - direct.p50_ms, nginx.p50_ms - direct.p50_ms))
    return (
        "    added p50 ms per round: sidecar "
        + " / ".join(f"{one:.3f}" for one, _ in terms)
        + ", nginx "
        + " / ".join(f"{ngx:.3f}" for _, ngx in terms)
    )


def saturated_goals(rounds: Sequence[Sequence[Result]]) -> list[GoalLine]:
    """The one-sidecar goals, one figure per round (empty without a sidecar row)."""
    _check_rounds(rounds)
    if _sidecar(rounds[0]) is None:
        return []
    ones: list[Result] = [_sidecar(r) for r in rounds]
    bases = [_baselines(r) for r in rounds]
    pairs = list(zip(ones, bases, strict=True))
    return [
        GoalLine(
            "one hop >= 0.50x nginx req/s",
            tuple(o.rps / n.rps for o, (_, n) in pairs),
            0.5,
            True,
            "{:.2f}x",
        ),
        GoalLine(
            "added p50 <= 2x nginx's (saturated)",
            tuple(_added_ratio(o, d, n) for o, (d, n) in pairs),
            2.0,
            False,
            "{:.1f}x",
        ),
        GoalLine(
            "<= 100 us CPU/request", tuple(o.cpu_us or 0.0 for o in ones), 100, False, "{:.0f} us"
        ),
        GoalLine(
            "RSS <= 40 MB under load", tuple(o.rss_mb or 0.0 for o in ones), 40, False, "{:.0f} MB"
        ),
    ]


def report(rounds: Sequence[Sequence[Result]]) -> str:
    """The results table (also returned as text for bench/results/sidecar_proxy.md)."""
    rows = median_rows(rounds)
    many = len(rounds) > 1
    width = 8 if many else 0  # the RSS max column, with more than one round
    lines = [
        f"{'scenario':<31}{'req/s':>9}{'x nginx':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'+p50 ms':>9}{'CPU us/req':>12}{'RSS MB':>8}"
        f"{'RSS max' if many else '':>{width}}{'non-2xx':>9}"
    ]
    for r in rows:
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "-"
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else "-"
        rss_max = (f"{r.rss_max_mb:.0f}" if r.rss_max_mb is not None else "-") if many else ""
        lines.append(
            f"{r.name:<31}{r.rps:>9.0f}{r.x_nginx:>9.2f}{r.p50_ms:>9.2f}"
            f"{r.p99_ms:>9.2f}{r.added_p50_ms:>9.2f}{cpu:>12}{rss:>8}{rss_max:>{width}}{r.errors:>9}"
        )
    goals = saturated_goals(rounds)
    if goals:
        judged = f", median of {len(rounds)} rounds" if many else ""
        lines.append(f"goals (one sidecar, full telemetry exported{judged}):")
        lines.extend(g.text() for g in goals)
        if many:
            lines.insert(-2, added_p50_detail(rounds))
    lines.append(
        "CPU and RSS are the proxy processes only (the pair sums CPU of both sidecars); "
        "ratios are against nginx from the same run" + (" and round" if many else "")
    )
    if many:
        lines.append(
            f"each figure is the median over {len(rounds)} rounds (non-2xx: summed); every round "
            "runs all scenarios in the same order with the same processes, started once, so "
            "later rounds' RSS is measured after more load (RSS max: the largest over rounds)"
        )
    lines.append(f"sidecar modules: {native_mode()} (pure Python row: MESHLENS_PURE_PYTHON=1)")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lines.append(f"load average after the run: {load} (other work on these {os.cpu_count()} CPUs)")
    text = "\n".join(lines)
    print(text)
    return text


@dataclass
class RateResult:
    name: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failed: int
    vcpu_per_krps: float | None = None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


RATE_CONNECTIONS = 16


def fixed_rate_command(
    url: str, seconds: float, rate: int, host: str | None, log: Path
) -> list[str]:
    """h2load over HTTP/1.1: `rate` requests/s in all for `seconds`, arrivals evenly spaced (the
    16 connections start 1/rate apart, each sends every 16/rate s), one log line per request."""
    requests = max(RATE_CONNECTIONS, int(rate * seconds))
    cmd = [
        "h2load", "--h1", f"-c{RATE_CONNECTIONS}", "-t1", f"--rps={rate / RATE_CONNECTIONS:g}",
        "-r1", f"--rate-period={1000.0 / rate:g}ms", f"-n{requests}", f"--log-file={log}", url,
    ]  # fmt: skip
    if host:  # (`-H "Host: x"` would add a second Host to h2load's own, which gets a 400)
        cmd[1:1] = ["-H", f":authority: {host}"]
    return cmd


def run_fixed_rate(
    url: str, seconds: float, rate: int, host: str | None, log: Path
) -> tuple[float, int, int]:
    """One h2load run (fixed_rate_command): (req/s, requests done, failed)."""
    cmd = fixed_rate_command(url, seconds, rate, host, log)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in \S+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None
    return rps, int(done.group(1)), int(done.group(1)) - int(done.group(2))


def request_times_ms(logs: Sequence[Path]) -> list[float]:
    """The sorted times of the 200 responses in h2load per-request logs (start, status, us)."""
    return sorted(
        int(fields[2]) / 1000.0
        for log in logs
        for fields in (line.split("\t") for line in log.read_text().splitlines())
        if len(fields) == 3 and fields[1] == "200"
    )


def measure_fixed_rates(
    targets: Sequence[tuple[str, str, str | None, list[int]]],
    args: argparse.Namespace,
    workdir: Path,
    number: int,
) -> list[RateResult]:
    """One round of the fixed-rate scenarios, taking turns in 1 s slices (module docstring)."""
    for _name, url, host, _pids in targets:  # warm-up: connections, pools
        run_fixed_rate(url, 1, args.rate, host, workdir / "h2load-warm.log")
    slices = args.duration * 2
    logs: list[list[Path]] = [[] for _ in targets]
    cpu = [0.0] * len(targets)
    elapsed = [0.0] * len(targets)
    done = [0] * len(targets)
    failed = [0] * len(targets)
    for n in range(slices):
        for i, (_name, url, host, pids) in enumerate(targets):
            log = workdir / f"h2load-r{number}-{i}-{n}.log"
            before = [cpu_seconds(p) for p in pids]
            started = time.monotonic()
            _rps, requests, bad = run_fixed_rate(url, 1, args.rate, host, log)
            elapsed[i] += time.monotonic() - started
            cpu[i] += sum(cpu_seconds(p) - b for p, b in zip(pids, before, strict=True))
            done[i] += requests
            failed[i] += bad
            logs[i].append(log)
    results = []
    for i, (name, _url, _host, pids) in enumerate(targets):
        times = request_times_ms(logs[i])
        rps = done[i] / elapsed[i] if elapsed[i] > 0 else 0.0
        result = RateResult(
            name,
            rps,
            _percentile(times, 0.50),
            _percentile(times, 0.90),
            _percentile(times, 0.99),
            failed[i],
        )
        if pids:
            result.vcpu_per_krps = cpu[i] / elapsed[i] / max(rps / 1000.0, 1e-9)
        results.append(result)
    return results


@dataclass(frozen=True)
class RateRow:
    """One fixed-rate scenario over all rounds: medians (added vs direct per round first)."""

    name: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    added_p50_ms: float
    added_p90_ms: float
    added_p99_ms: float
    vcpu_per_krps: float | None
    failed: int


def _added(
    runs: Sequence[tuple[RateResult, RateResult]], pick: Callable[[RateResult], float]
) -> float:
    """Median over rounds of (scenario - direct) for one percentile."""
    return _median([pick(r) - pick(d) for r, d in runs])


def median_rate_rows(rounds: Sequence[Sequence[RateResult]]) -> list[RateRow]:
    names = _check_rounds(rounds)
    directs = [r[0] for r in rounds]
    rows = []
    for i, name in enumerate(names):
        runs = list(zip([r[i] for r in rounds], directs, strict=True))

        rows.append(
            RateRow(
                name,
                _median([r.rps for r, _ in runs]),
                _median([r.p50_ms for r, _ in runs]),
                _median([r.p90_ms for r, _ in runs]),
                _median([r.p99_ms for r, _ in runs]),
                _added(runs, lambda r: r.p50_ms),
                _added(runs, lambda r: r.p90_ms),
                _added(runs, lambda r: r.p99_ms),
                _median_or_none([r.vcpu_per_krps for r, _ in runs]),
                sum(r.failed for r, _ in runs),
            )
        )
    return rows


def fixed_rate_goal(rounds: Sequence[Sequence[RateResult]], rate: int) -> GoalLine | None:
    """Added p50 vs nginx's added p50 at the fixed rate, one figure per round."""
    _check_rounds(rounds)
    if _sidecar(rounds[0]) is None:
        return None
    ratios = []
    for round_ in rounds:
        direct, nginx = _baselines(round_)
        ratios.append(_added_ratio(_sidecar(round_), direct, nginx))
    return GoalLine(
        f"added p50 <= 2x nginx's at {rate} req/s", tuple(ratios), 2.0, False, "{:.1f}x"
    )


def report_fixed_rate(rounds: Sequence[Sequence[RateResult]], rate: int) -> str:
    """Latency at a fixed rate below saturation, added vs direct from the same round."""
    many = len(rounds) > 1
    lines = [
        f"fixed rate (Istio's method): h2load --h1, {rate} req/s over {RATE_CONNECTIONS} "
        "connections, arrivals evenly spaced, scenarios taking turns in 1 s slices"
        + (f", median of {len(rounds)} rounds:" if many else ":"),
        f"{'scenario':<31}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
        f"{'+p50':>7}{'+p90':>7}{'+p99':>7}{'vCPU/1k rps':>13}{'failed':>8}",
    ]
    for r in median_rate_rows(rounds):
        vcpu = f"{r.vcpu_per_krps:.3f}" if r.vcpu_per_krps is not None else "-"
        lines.append(
            f"{r.name:<31}{r.rps:>8.0f}{r.p50_ms:>8.3f}{r.p90_ms:>8.3f}{r.p99_ms:>8.3f}"
            f"{r.added_p50_ms:>7.3f}{r.added_p90_ms:>7.3f}"
            f"{r.added_p99_ms:>7.3f}{vcpu:>13}{r.failed:>8}"
        )
    goal = fixed_rate_goal(rounds, rate)
    if goal is not None:
        lines.append(goal.text())
        if many:
            lines.append(added_p50_detail(rounds))
    text = "\n".join(lines)
    print(text)
    return text


@dataclass
class H2Result:
    name: str
    rps: float
    mean_ms: float
    failed: int
    cpu_us: float | None = None


def run_h2load(url: str, duration: int, authority: str | None) -> H2Result:
    cmd = ["h2load", "-c8", "-m4", "-t1", f"-D{duration}", url]
    if authority:
        cmd[1:1] = ["-H", f":authority: {authority}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in \S+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    mean = _ms(re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None
    return H2Result("", rps, mean, int(done.group(1)) - int(done.group(2)))


def measure_h2(
    name: str, url: str, args: argparse.Namespace, authority: str | None, pids: list[int]
) -> H2Result:
    run_h2load(url, 1, authority)  # warm-up
    before = [cpu_seconds(p) for p in pids]
    result = run_h2load(url, args.duration, authority)
    result.name = name
    if pids:
        used = sum(cpu_seconds(p) - b for p, b in zip(pids, before, strict=True))
        result.cpu_us = used / max(result.rps * args.duration, 1) * 1e6
    return result


def report_h2(results: list[H2Result]) -> str:
    """HTTP/2 table: req/s and mean time added vs direct h2 (nginx h2c) from this run."""
    direct = results[0]
    lines = [
        "HTTP/2 (h2load, 8 connections x 4 streams, h2c prior knowledge):",
        f"{'scenario':<31}{'req/s':>9}{'x direct':>9}{'mean ms':>9}{'+mean ms':>9}"
        f"{'CPU us/req':>12}{'failed':>8}",
    ]
    for r in results:
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "-"
        lines.append(
            f"{r.name:<31}{r.rps:>9.0f}{r.rps / direct.rps:>9.2f}{r.mean_ms:>9.2f}"
            f"{r.mean_ms - direct.mean_ms:>9.2f}{cpu:>12}{r.failed:>8}"
        )
    text = "\n".join(lines)
    print(text)
    return text


def h2_rows(
    procs: Procs, workdir: Path, args: argparse.Namespace, collector: str
) -> list[H2Result]:
    """nginx h2c app; one sidecar and a pair, both speaking h2 upstream."""
    up = free_port()
    start_nginx(procs, workdir, "upstream-h2", UPSTREAM_H2_BODY.format(port=up), up)
    app = {"upstreams": {"app": {"endpoints": [f"127.0.0.1:{up}"], "protocol": "h2"}}}
    server = {"inbound": {"app_protocol": "h2"}}
    server_pid, _, server_in = start_sidecar(procs, workdir, "apph2", up, server, collector)
    pair = {"upstreams": {"app": {"endpoints": [f"127.0.0.1:{server_in}"], "protocol": "h2"}}}
    one_pid, one_out, _ = start_sidecar(procs, workdir, "webh2", up, app, collector)
    client_pid, client_out, _ = start_sidecar(procs, workdir, "web2h2", up, pair, collector)
    return [
        measure_h2("direct h2 (nginx h2c)", f"http://127.0.0.1:{up}/", args, None, []),
        measure_h2("sidecar h2 (outbound)", f"http://127.0.0.1:{one_out}/", args, "app", [one_pid]),
        measure_h2(
            "sidecar pair h2 (out+in)",
            f"http://127.0.0.1:{client_out}/",
            args,
            "app",
            [client_pid, server_pid],
        ),
    ]


def round_summary(round_: Sequence[Result], fixed: Sequence[Sequence[RateResult]]) -> str:
    """One round's goal ratios, printed as the rounds go."""
    direct, nginx = _baselines(round_)
    one = _sidecar(round_)
    if one is None:
        return "done"

    def ratio(value: float) -> str:
        return "n/a" if math.isinf(value) else f"{value:.1f}x"

    text = (
        f"one hop {one.rps / nginx.rps:.2f}x nginx req/s, "
        f"added p50 {ratio(_added_ratio(one, direct, nginx))} nginx's (saturated)"
    )
    if fixed:
        f_direct, f_nginx = _baselines(fixed[-1])
        text += f", {ratio(_added_ratio(_sidecar(fixed[-1]), f_direct, f_nginx))} (fixed rate)"
    return text


def write_results(text: str, args: argparse.Namespace) -> Path:
    """Keep the table of this run in bench/results/sidecar_proxy.md (gitignored)."""
    path = REPO / "bench" / "results" / "sidecar_proxy.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    path.write_text(
        f"# bench/sidecar_proxy.py ({when})\n\n"
        f"wrk, {args.connections} connections, {args.duration} s per scenario, "
        f"{args.rounds} round{'s' if args.rounds > 1 else ''} (medians; HTTP/2 once), "
        f"{os.cpu_count()} CPUs\n\n```\n{text}\n```\n"
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all scenarios (>= 1)")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=1000, help="fixed-rate rows' req/s (0: skip)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if shutil.which("wrk") is None:
        print("wrk is not installed (bash scripts/system-deps.sh)", file=sys.stderr)
        return 1
    procs = Procs()
    results: list[list[Result]] = []
    fixed: list[list[RateResult]] = []
    with tempfile.TemporaryDirectory(prefix="meshlens-bench-") as tmp:
        workdir = Path(tmp)
        try:
            up, px, sink = free_port(), free_port(), free_port()
            start_nginx(procs, workdir, "upstream", UPSTREAM_BODY.format(port=up), up)
            nginx_pid = start_nginx(
                procs, workdir, "proxy", PROXY_BODY.format(port=px, upstream=up), px
            )
            procs.start([sys.executable, "-c", SINK, str(sink)])
            wait_port(sink)
            collector = f"http://127.0.0.1:{sink}"
            app = {"upstreams": {"app": {"endpoints": [f"127.0.0.1:{up}"]}}}
            server_pid, _, server_in = start_sidecar(procs, workdir, "app", up, {}, collector)
            pair = {"upstreams": {"app": {"endpoints": [f"127.0.0.1:{server_in}"]}}}
            one_pid, one_out, _ = start_sidecar(procs, workdir, "web", up, app, collector)
            client_pid, client_out, _ = start_sidecar(procs, workdir, "web2", up, pair, collector)
            pure = {"MESHLENS_PURE_PYTHON": "1"}  # the same sidecar without the mypyc build
            pure_pid, pure_out, _ = start_sidecar(procs, workdir, "web3", up, app, collector, pure)
            core_port = free_port()
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            core = procs.start([sys.executable, "-c", CORE, str(core_port), str(up)], env=env)
            wait_port(core_port)
            saturated: list[tuple[str, str, str | None, list[int]]] = [
                ("direct", f"http://127.0.0.1:{up}/", None, []),
                ("nginx proxy_pass", f"http://127.0.0.1:{px}/", None, [nginx_pid]),
                ("core only (codec+pool)", f"http://127.0.0.1:{core_port}/", None, [core.pid]),
                ("sidecar (outbound)", f"http://127.0.0.1:{one_out}/", "app", [one_pid]),
                (
                    "sidecar (outbound, pure Python)",
                    f"http://127.0.0.1:{pure_out}/",
                    "app",
                    [pure_pid],
                ),
                (
                    "sidecar pair HTTP/1.1 (out+in)",
                    f"http://127.0.0.1:{client_out}/",
                    "app",
                    [client_pid, server_pid],
                ),
            ]
            targets: list[tuple[str, str, str | None, list[int]]] = []
            if shutil.which("h2load") and args.rate > 0:
                targets = [saturated[0], saturated[1], saturated[3], saturated[5]]
            everyone = [proc.pid for proc in procs.procs]
            for number in range(1, args.rounds + 1):
                round_ = []
                for name, url, host, pids in saturated:
                    settle(everyone)
                    round_.append(measure(name, url, args, host, pids))
                results.append(round_)
                if targets:
                    settle(everyone)
                    fixed.append(measure_fixed_rates(targets, args, workdir, number))
                print(f"round {number}/{args.rounds}: {round_summary(round_, fixed)}", flush=True)
            h2 = h2_rows(procs, workdir, args, collector) if shutil.which("h2load") else []
        finally:
            procs.stop_all()
    text = report(results)
    if fixed:
        text += "\n\n" + report_fixed_rate(fixed, args.rate)
    if h2:
        text += "\n\n" + report_h2(h2)
    else:
        print("no h2load (nghttp2-client): HTTP/2 rows skipped (bash scripts/system-deps.sh)")
    print(f"written to {write_results(text, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
