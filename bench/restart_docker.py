"""Docker's side of ``berth-bench restarts``: ``docker run --restart always``, die -> start.

:func:`docker_daemon` finds a Docker daemon: ``--docker auto`` (the
default) takes the one the ``docker`` CLI reaches (``DOCKER_HOST`` or its
default socket) if it answers, else starts a private ``dockerd`` (if the
binary is installed) with its own data root, exec root and socket in a
fresh directory under the work directory, no bridge and no iptables
(the containers run with ``--network none``), and stops it (SIGTERM) and
removes its directories at the end. ``--docker off`` skips Docker;
``--docker unix:///path`` names a daemon.

:func:`docker_crash_loop` imports the bench's busybox directory as an
image (``docker import`` of a tar of it), then runs ``--docker-rounds``
rounds: ``--containers`` ``docker run -d --restart always --network none
IMAGE sh -c 'sleep 0.5; exit 1'``, until each container has been
restarted ``--docker-restarts`` times (Docker's backoff is fixed: 100 ms
before the first restart, doubling, reset after 10 s of running, so only
a container's first restart is at the minimum step, and rounds of fresh
containers give many of them), then ``docker rm -f``. Each restart is
timed from its ``die`` event to the next ``start`` event of the same
container, by the events' ``timeNano`` (``docker events --format '{{json
.}}'``, filtered on the run's label). dockerd's and its containerd's CPU
is read over each round while only restarts happen (after the runs,
before the removal).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.resources import listener_pid
from bench.restart_berth import CRASH_ARGS, CrashLoop
from bench.restart_cpu import CpuGroup, CpuWindow
from bench.restart_watch import Restarts

__all__ = ["Docker", "docker_crash_loop", "docker_daemon"]

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_CALL_TIMEOUT_S = 120.0
_ROUND_TIMEOUT_S = 60.0


@dataclass
class Docker:
    """A Docker daemon the bench can drive through the ``docker`` CLI."""

    host: str | None  # None: the CLI's own default
    version: str
    spawned: bool
    pid: int | None

    def argv(self, *args: str) -> list[str]:
        return ["docker", *(["-H", self.host] if self.host else []), *args]

    def run(self, *args: str, stdin: bytes | None = None) -> str:
        """A docker command's stdout; RuntimeError with its stderr if it fails."""
        done = subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            timeout=_CALL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker {args[0]}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace").strip()


def _server_version(host: str | None) -> str | None:
    argv = ["docker", *(["-H", host] if host else []), "version", "--format", "{{.Server.Version}}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _host_pid(host: str | None) -> int | None:
    path = (host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix(
        "unix://"
    )
    return listener_pid(f"ipc://{path}")


@contextlib.contextmanager
def docker_daemon(choice: str, workdir: str | None) -> Iterator[tuple[Docker | None, str]]:
    """``(docker, how)``: the daemon to use (None, and why not) for ``--docker CHOICE``."""
    if choice == "off":
        yield None, "skipped (--docker off)"
        return
    if shutil.which("docker") is None:
        yield None, "no docker CLI on PATH"
        return
    if choice != "auto":
        version = _server_version(choice)
        if version is None:
            yield None, f"no Docker daemon answers at {choice}"
        else:
            yield Docker(choice, version, False, _host_pid(choice)), f"Docker {version} at {choice}"
        return
    if (version := _server_version(None)) is not None:
        yield Docker(None, version, False, _host_pid(None)), f"Docker {version}, the CLI's default"
        return
    if shutil.which("dockerd") is None:
        yield (
            None,
            "no Docker daemon answers and no dockerd is installed (apt-get install docker.io)",
        )
        return
    with _private_dockerd(workdir) as found:
        yield found


@contextlib.contextmanager
def _private_dockerd(workdir: str | None) -> Iterator[tuple[Docker | None, str]]:
    where = Path(tempfile.mkdtemp(prefix="bench-docker-", dir=workdir or "/tmp"))
    host = f"unix://{where}/docker.sock"
    log = open(where / "dockerd.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [
            "dockerd",
            "-H",
            host,
            "--data-root",
            str(where / "data"),
            "--exec-root",
            str(where / "exec"),
            "--pidfile",
            str(where / "dockerd.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        version = None
        while version is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            version = _server_version(host)
        if version is None:
            tail = (where / "dockerd.log").read_text(errors="replace").splitlines()[-5:]
            yield None, f"a private dockerd did not come up: {tail}"
        else:
            yield Docker(host, version, True, proc.pid), f"Docker {version}, private dockerd"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(where, ignore_errors=True)


def _image_tar(rootfs: Path) -> bytes:
    """The busybox directory as a tar stream (what ``docker import`` reads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    return buf.getvalue()


class _DockerEvents:
    """``docker events`` of the run's containers: each die paired with the next start."""

    def __init__(self, docker: Docker, label: str) -> None:
        self.restarts = Restarts()
        self.seen: dict[str, int] = {}  # container name -> restarts so far
        argv = docker.argv(
            "events", "--format", "{{json .}}", "--filter", "type=container", "--filter", label
        )
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bench-docker-events", daemon=True)

    def start(self) -> _DockerEvents:
        self._thread.start()
        time.sleep(1.0)  # no ready signal: let the CLI subscribe
        return self

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            received = time.time_ns()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            action = event.get("Action") or event.get("status")
            name = str((event.get("Actor") or {}).get("Attributes", {}).get("name", ""))
            stamp = int(event.get("timeNano") or 0)
            if action == "die":
                self.restarts.exited(name, stamp, stamp)
                with self._lock:
                    self.restarts.step(name, attempt=self.seen.get(name, 0))
            elif action == "start" and self.restarts.started(name, stamp, received, last=True):
                with self._lock:
                    self.seen[name] = self.seen.get(name, 0) + 1

    def restarted(self, name: str) -> int:
        with self._lock:
            return self.seen.get(name, 0)

    def close(self) -> None:
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)
        self._thread.join(5)


def _children(pid: int | None, comm: str) -> list[int]:
    if pid is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        if name == comm and int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def docker_crash_loop(
    docker: Docker,
    rootfs: Path,
    *,
    containers: int,
    rounds: int,
    restarts_each: int,
    prefix: str,
) -> CrashLoop:
    """Rounds of fresh ``--restart always`` containers, each restarted ``restarts_each`` times."""
    image = f"berth-bench-busybox:{prefix.strip('-')}"
    label = f"label=berth-bench={prefix}"
    docker.run("import", "-", image, stdin=_image_tar(rootfs))
    pid = docker.pid
    groups = [
        CpuGroup("dockerd", lambda: [pid] if pid else []),
        CpuGroup("containerd", lambda: _children(pid, "containerd")),
    ]
    windows: list[CpuWindow] = []
    counted = 0
    events = _DockerEvents(docker, label).start()
    names: list[str] = []
    try:
        for r in range(rounds):
            names = [f"{prefix}d{r}-{i}" for i in range(containers)]
            for name in names:
                docker.run(
                    "run", "-d", "--name", name, "--network", "none", "--restart", "always",
                    "--label", f"berth-bench={prefix}", image, *CRASH_ARGS,
                )  # fmt: skip
            window = CpuWindow(groups).begin()
            begin_ns = time.time_ns()
            deadline = time.monotonic() + _ROUND_TIMEOUT_S
            while time.monotonic() < deadline and any(
                events.restarted(n) < restarts_each for n in names
            ):
                time.sleep(0.05)
            end_ns = time.time_ns()
            window.end()
            counted += events.restarts.restarted_between(begin_ns, end_ns)
            windows.append(window)
            docker.run("rm", "-f", *names)
            names = []
    finally:
        if names:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                docker.run("rm", "-f", *names)
        events.close()
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            docker.run("rmi", "-f", image)
    timings = events.restarts.within(0, time.time_ns())
    return CrashLoop(
        "docker",
        containers,
        timings,
        counted,
        CpuWindow.summed(groups, windows),
        exits=events.restarts.exits,
        extra={"version": docker.version, "rounds": rounds, "restarts_each": restarts_each},
    )
