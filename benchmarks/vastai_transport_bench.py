"""How much one vast.ai API call costs the controller with each way of sending it.

The inventory plugin pages through ``/api/v1/instances/`` (25 per page, 40 pages for 1,000
instances), so the per-call overhead of the HTTP stack is paid many times per ``ansible-inventory``
run. Compared, over plain HTTP and over HTTPS (a self-signed certificate appended to a copy of the
system CA bundle, so every TLS context loads the full store, as on a real controller):

* ``stdlib-shared``: ``urllib`` opener with one ``ssl.SSLContext`` for every call (the client
  before the move to Ansible's helpers);
* ``open_url``: ``ansible.module_utils.urls.open_url`` per call (builds a new TLS context each
  time, also for ``http://`` URLs);
* ``Request-shared``: one ``ansible.module_utils.urls.Request`` with one context made by
  ``make_context`` (what ``vastai_api.ansible_transport`` does).

    .venv/bin/python benchmarks/vastai_transport_bench.py --calls 200

Everything runs on 127.0.0.1 with the in-process vast.ai lab double; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible.module_utils.urls import Request, make_context, open_url  # noqa: E402

from vastllm_lab.vastai.fixtures import generate_instances  # noqa: E402
from vastllm_lab.vastai.server import LabServer  # noqa: E402
from vastllm_lab.vastai.state import LabState  # noqa: E402

Call = Callable[[str], bytes]
HEADERS = {"Authorization": "Bearer lab-key", "Accept": "application/json"}


def stdlib_shared() -> Call:
    context = ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def call(url: str) -> bytes:
        with opener.open(urllib.request.Request(url, headers=HEADERS), timeout=10) as r:
            return bytes(r.read())

    return call


def open_url_per_call() -> Call:
    def call(url: str) -> bytes:
        with open_url(url, headers=HEADERS, timeout=10) as r:
            return bytes(r.read())

    return call


def request_shared() -> Call:
    session = Request(headers=HEADERS, timeout=10, context=make_context())

    def call(url: str) -> bytes:
        with session.open("GET", url) as r:
            return bytes(r.read())

    return call


def measure(make: Callable[[], Call], url: str, calls: int) -> tuple[float, float]:
    call = make()
    call(url)  # warm-up: imports, first connection
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call(url)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def tls_bundle(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed cert for 127.0.0.1 and a CA bundle = system store + that cert."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    bundle = directory / "bundle.pem"
    shutil.copyfile(system, bundle)
    with bundle.open("a") as out:
        out.write(cert.read_text())
    return key, cert, bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    state = LabState(api_keys=["lab-key"], instances=generate_instances(25))
    server = LabServer(state).start()
    path = "/api/v1/instances/?limit=25"
    transports = [
        ("stdlib-shared", stdlib_shared),
        ("open_url", open_url_per_call),
        ("Request-shared", request_shared),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        key, cert, bundle = tls_bundle(Path(tmp))
        os.environ["SSL_CERT_FILE"] = str(bundle)  # every default context loads the whole store
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        state_tls = LabState(api_keys=["lab-key"], instances=generate_instances(25))
        server_tls = LabServer(state_tls)
        server_tls.httpd.socket = tls.wrap_socket(server_tls.httpd.socket, server_side=True)
        server_tls.start()
        https_url = f"https://127.0.0.1:{server_tls.port}{path}"
        print(f"{'transport':16} {'scheme':6} {'p50 ms':>8} {'p90 ms':>8}  ({args.calls} calls)")
        for scheme, url in (("http", server.url + path), ("https", https_url)):
            for name, make in transports:
                p50, p90 = measure(make, url, args.calls)
                print(f"{name:16} {scheme:6} {p50:8.2f} {p90:8.2f}")
        server_tls.stop()
    server.stop()


if __name__ == "__main__":
    main()
