"""berth-bench catches a daemon that loses an acknowledged write.

The target is a fake daemon (a ZeroMQ ROUTER on a thread of the test)
that serves the Containers service from a dict, except that it answers
one Create in the load namespace as a success and never stores it. The
``containers`` scenario must report that as a correctness breach (the
acknowledged container is not listable) and exit non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from wire.codec import pack, unpack

REPO = Path(__file__).resolve().parents[2]
DROPPED_NS = "bench-c1"  # the load namespace at one client
DROP_NTH_CREATE = 5


class LosingDaemon:
    """A fake berthd: Containers/Create, Get, List, Update, Delete, losing one create."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.store: dict[str, dict[str, dict[str, Any]]] = {}
        self.creates: dict[str, int] = {}
        self.dropped: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> LosingDaemon:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _serve(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.bind(self.address)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                *route, payload = sock.recv_multipart()
                request = unpack(payload)
                reply = {"v": 1, "id": request.get("id")}
                try:
                    reply["body"] = self._handle(request)
                except KeyError as exc:
                    reply["error"] = {"code": "NOT_FOUND", "message": f"container {exc}: not found"}
                sock.send_multipart([*route, pack(reply)])
        finally:
            sock.close(0)
            ctx.term()

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        ns = request.get("ns") or "default"
        body = request.get("body") or {}
        containers = self.store.setdefault(ns, {})
        method = request["method"].rpartition("/")[2]
        if method == "Create":
            container = dict(body["container"])
            self.creates[ns] = self.creates.get(ns, 0) + 1
            if ns == DROPPED_NS and self.creates[ns] == DROP_NTH_CREATE:
                self.dropped.append(container["id"])  # acknowledged, never stored
            else:
                containers[container["id"]] = container
            return {"container": container}
        if method == "Get":
            return {"container": containers[body["id"]]}
        if method == "List":
            return {"containers": list(containers.values())}
        if method == "Update":
            update = body["container"]
            stored = containers[update["id"]]
            stored.setdefault("labels", {}).update(update.get("labels") or {})
            return {"container": stored}
        if method == "Delete":
            del containers[body["id"]]
            return {}
        raise KeyError(method)


@pytest.fixture
def losing_daemon() -> Iterator[LosingDaemon]:
    address = f"ipc:///tmp/bb-fake-{os.getpid()}-{time.monotonic_ns()}.sock"
    daemon = LosingDaemon(address).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        Path(address.removeprefix("ipc://")).unlink(missing_ok=True)


def test_a_create_acknowledged_but_never_stored_is_reported_and_fails_the_run(
    losing_daemon: LosingDaemon, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    argv = ["containers", "--address", losing_daemon.address, "--clients", "1"]
    argv += ["--ops", "20", "--warmup", "0", "--scale", "0", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "CORRECTNESS" in run.stdout
    report = json.loads(out.read_text())
    assert report["aborted"] is None
    assert losing_daemon.dropped == ["w0-4"]
    breaches = report["correctness"]["breaches"]
    assert any("acknowledged containers not listed" in b and "w0-4" in b for b in breaches)
    after_create = next(c for c in report["correctness"]["checks"] if c["when"] == "after create")
    assert after_create["missing"] == 1 and after_create["missing_sample"] == ["w0-4"]
