"""The sidecar process never imports pydantic (issue 3: RSS): its policy document is validated by
sidecar/schema.py. Checked in a fresh interpreter: `import sidecar.cli`, then a Sidecar built from a
config using every section, started on 127.0.0.1 (ports 0), one request proxied to a local app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, sys

import sidecar.cli  # what `meshlens sidecar` imports
from sidecar.app import Sidecar, SidecarOptions

APP = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def app(reader, writer):
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.write(APP)
    await writer.drain()
    writer.close()


async def main(config_path):
    server = await asyncio.start_server(app, "127.0.0.1", 0)
    app_port = server.sockets[0].getsockname()[1]
    config = json.load(open(config_path))
    config["upstreams"]["app"]["endpoints"] = [f"127.0.0.1:{app_port}"]
    json.dump(config, open(config_path, "w"))
    options = SidecarOptions(
        service="web", app_port=app_port, config_path=config_path,
        admin_port=0, outbound_port=0, inbound_port=0,
    )
    sidecar = Sidecar(options)
    addresses = await asyncio.wait_for(sidecar.start(), 10)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*addresses.outbound), 5)
        writer.write(b"GET /x HTTP/1.1\r\nhost: app\r\n\r\n")
        status = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        writer.close()
    finally:
        await asyncio.wait_for(sidecar.stop(), 10)
        server.close()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))
    print(json.dumps({"status": status, "pydantic": loaded}))


asyncio.run(main(sys.argv[1]))
"""

CONFIG = {
    "service": "web",
    "upstreams": {
        "app": {"endpoints": [], "outlier": {"latency": {}}, "limits": {"max_pending": 10}},
        "spare": {"endpoints": ["127.0.0.1:9"]},
    },
    "routes": [
        {
            "name": "main",
            "match": {"headers": {"x-a": {"regex": ".*"}}, "methods": ["get"]},
            "destinations": [{"upstream": "app"}],
            "timeout": {"request_s": 5, "per_try_s": 2},
            "retry": {"on": ["5xx", 503]},
            "ratelimit": {"rps": 1000},
            "fault": {"delay": {"ms": 0, "percent": 0}},
            "fallback": {"upstream": "spare"},
        },
        {"name": "any", "destinations": [{"upstream": "app"}]},
    ],
    "inbound": {"ratelimit": {"rps": 100}, "retry": {}},
    "authz": {"rules": [{"name": "all", "action": "allow"}]},
    "jwt": {
        "providers": [{"name": "p", "issuer": "i", "jwks": {"file": "/nonexistent.json"}}],
        "rules": [{"path_prefix": "/private", "providers": ["p"]}],
        "default_requires": "none",
    },
}


def test_a_sidecar_built_and_run_from_a_config_never_imports_pydantic(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(CONFIG))

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "HTTP/1.1 200 OK"
    assert result["pydantic"] == []
