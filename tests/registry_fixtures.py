"""Real OCI distribution registries for tests, and the images to fill them with.

A :class:`Registry` is Debian's ``docker-registry`` (the CNCF distribution
registry 2.8) started on 127.0.0.1 with a free port, its own config file and
its own storage under a test's tmp dir, never the package's service on
:5000. Optional htpasswd basic auth (:class:`Credentials`, bcrypt entries)
and TLS with a throwaway :class:`TestCA`::

    with Registry(tmp_path / "reg", users=[ALICE], tls=True) as reg:
        image = oci_layout(tmp_path / "img", busybox_layers(2), tag="1.0")
        digest = push_oci_layout(image.layout, reg, "test/busybox", "1.0", creds=ALICE)
        status, headers, body = reg.get(f"/v2/test/busybox/manifests/{digest}",
                                        accept=OCI_MANIFEST, creds=ALICE)

Images are OCI layout *directories* written here from the layers of
:mod:`tests.image_archives` (deterministic, so digests are stable), pushed
with ``skopeo copy``: as they are (OCI manifests and indexes, digests
preserved), or converted to docker schema 2 (``docker_format=True``).

    busybox_layers(n)                   busybox, then n-1 small layers
    oci_layout(dir, layers, tag=...)    one linux/amd64 image: LayoutImage
    multi_arch_layout(dir, tag=...)     an index: linux/amd64 (busybox) and
                                        linux/arm64 (a tiny fake layer)
    push_oci_layout(dir, reg, repo, tag, creds=, docker_format=, all_platforms=)

Skips: :func:`registry_skip_reason` (no docker-registry or skopeo),
:func:`auth_skip_reason` (no bcrypt nor htpasswd), :func:`tls_skip_reason`
(no openssl). ``scripts/bootstrap test`` installs all of them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import TracebackType

from tests.image_archives import Layer, busybox_layer, config_json, dir_entry, file_entry, layer

DOCKER_REGISTRY = "/usr/bin/docker-registry"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
#: What a client that understands every current manifest kind sends.
ACCEPT_ALL = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])


def _tool(name: str) -> str | None:
    return shutil.which(name)


def registry_skip_reason() -> str | None:
    """Why registry tests cannot run here, or None."""
    if not os.access(DOCKER_REGISTRY, os.X_OK):
        return f"registry tests need {DOCKER_REGISTRY} (Debian's docker-registry)"
    if _tool("skopeo") is None:
        return "registry tests need skopeo on PATH"
    return None


def auth_skip_reason() -> str | None:
    """Why htpasswd registries cannot be made here, or None."""
    try:
        import bcrypt  # noqa: F401
    except ImportError:
        if _tool("htpasswd") is None:
            return "basic-auth registries need Python's bcrypt or htpasswd (apache2-utils)"
    return None


def tls_skip_reason() -> str | None:
    """Why TLS registries cannot be made here, or None."""
    return None if _tool("openssl") else "TLS registries need the openssl command"


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


# -- credentials and htpasswd ---------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @property
    def basic(self) -> str:
        """The ``Authorization`` header value for basic auth."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @property
    def skopeo(self) -> str:
        return f"{self.username}:{self.password}"


ALICE = Credentials("alice", "wonderland")


def htpasswd_entry(creds: Credentials) -> str:
    """``user:$2b$...``: a bcrypt entry (the only kind docker-registry accepts)."""
    try:
        import bcrypt
    except ImportError:
        out = subprocess.run(
            ["htpasswd", "-nbB", "-C", "4", creds.username, creds.password],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()
    hashed = bcrypt.hashpw(creds.password.encode(), bcrypt.gensalt(rounds=4))
    return f"{creds.username}:{hashed.decode()}"


# -- a test CA --------------------------------------------------------------------


def _openssl(*args: str | Path, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA (P-256, valid two days) under ``dir``, issuing server and client certs."""

    __test__ = False  # not a pytest test class

    dir: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, dir: Path, name: str = "berth test CA") -> TestCA:
        dir.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=dir,
        )  # fmt: skip
        return cls(dir, dir / "ca.crt", dir / "ca.key")

    def issue(
        self, name: str, *, hosts: Iterable[str] = ("127.0.0.1", "localhost"), client: bool = False
    ) -> CertPair:
        """A certificate for ``hosts`` (IPs or DNS names) signed by this CA."""
        sans = ",".join(
            f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
        )
        ext = self.dir / f"{name}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n" + (f"subjectAltName={sans}\n" if sans else "")
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=self.dir,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", self.cert, "-CAkey", self.key,
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext,
            cwd=self.dir,
        )  # fmt: skip
        return CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.cert))


# -- the registry process -----------------------------------------------------------


class RegistryFailed(RuntimeError):
    """docker-registry did not come up (its log tail is in the message)."""


class Registry:
    """``docker-registry serve`` on 127.0.0.1:<free port>, storage under ``root``.

    A context manager: entering starts it and waits until ``/v2/`` answers,
    leaving kills it and reaps it. :meth:`stop` / :meth:`kill` then
    :meth:`start` restart it on the same port and storage (fault tests).
    ``users`` turn on htpasswd basic auth; ``tls`` serves HTTPS with a
    certificate from ``ca`` (a new :class:`TestCA` under ``root`` if None).
    """

    def __init__(
        self,
        root: Path,
        *,
        users: Iterable[Credentials] = (),
        tls: bool = False,
        ca: TestCA | None = None,
        client_ca: Path | None = None,
        config: Mapping[str, object] | None = None,
    ) -> None:
        self.root = root
        self.storage = root / "storage"
        self.users = list(users)
        self.tls = tls
        self.ca = ca
        self.client_ca = client_ca
        self.extra_config = dict(config or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path = root / "config.yml"
        self.log_path = root / "registry.log"

    # where it is
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def ref(self, repo: str, tag_or_digest: str) -> str:
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{tag_or_digest}"

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to tamper with it)."""
        algo, hexdigest = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    # lifecycle
    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Start it (again); the first start picks the port, a restart keeps it."""
        assert self.proc is None, "registry already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        tries = 1 if self.port else 3  # a fresh port may be taken between asking and binding
        for attempt in range(tries):
            if not self.port or attempt:
                self.port = free_port()
            self._write_config()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [DOCKER_REGISTRY, "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # a clean environment: no REGISTRY_* overrides of the config
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                    start_new_session=True,
                )
            try:
                self._wait_ready(timeout)
                return
            except RegistryFailed:
                self.kill()
                if attempt == tries - 1:
                    raise

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; reaped either way."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL (a registry dying mid-transfer); reaped."""
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: int, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _write_config(self) -> None:
        http: dict[str, object] = {
            "addr": self.host,
            "secret": "berth-tests",  # else a random one per start, and a warning
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            if self.ca is None:
                self.ca = TestCA.create(self.root / "ca")
            server = self.ca.issue("registry")
            tls: dict[str, object] = {"certificate": str(server.cert), "key": str(server.key)}
            if self.client_ca is not None:
                tls["clientcas"] = [str(self.client_ca)]
            http["tls"] = tls
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(htpasswd_entry(u) + "\n" for u in self.users))
            config["auth"] = {"htpasswd": {"realm": "berth-tests", "path": str(htpasswd)}}
        config.update(self.extra_config)
        # YAML is a superset of JSON: no YAML library needed.
        self.config_path.write_text(json.dumps(config, indent=2))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RegistryFailed(
                    f"docker-registry exited {self.proc.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _, _ = self.get("/v2/", timeout=1.0)
                if status in (200, 401):
                    return
            if time.monotonic() > deadline:
                raise RegistryFailed(f"/v2/ did not answer within {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # HTTP, for checking what the registry holds
    def get(
        self,
        path: str,
        *,
        accept: str | None = None,
        creds: Credentials | None = None,
        method: str = "GET",
        timeout: float = 10.0,
    ) -> tuple[int, Message, bytes]:
        """``(status, headers, body)`` of one request; HTTP errors are answers, not raised.

        ``headers`` look names up case-insensitively (Go writes ``Www-Authenticate``).
        """
        request = urllib.request.Request(self.url + path, method=method)
        if accept is not None:
            request.add_header("Accept", accept)
        if creds is not None:
            request.add_header("Authorization", creds.basic)
        context = self.ca.ssl_context() if self.tls and self.ca is not None else None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.headers, err.read()

    def manifest(
        self,
        repo: str,
        reference: str,
        *,
        accept: str = ACCEPT_ALL,
        creds: Credentials | None = None,
    ) -> tuple[str, str, bytes]:
        """``(media type, Docker-Content-Digest, body)`` of a manifest; asserts 200."""
        status, headers, body = self.get(
            f"/v2/{repo}/manifests/{reference}", accept=accept, creds=creds
        )
        assert status == 200, f"GET manifest {repo}:{reference}: {status} {body[:200]!r}"
        return headers["Content-Type"], headers["Docker-Content-Digest"], body


# -- OCI layouts --------------------------------------------------------------------


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def platform(arch: str, os_name: str = "linux") -> dict[str, str]:
    return {"architecture": arch, "os": os_name}


def busybox_layers(count: int = 2, *, gzip: bool = True) -> list[Layer]:
    """The busybox tree, then ``count - 1`` small layers adding ``etc/layer-<i>``.

    gzip by default: skopeo compresses plain tar layers when it pushes to a
    registry (changing their digests) but keeps gzip ones byte for byte.
    """
    layers = [busybox_layer(gzip)]
    for i in range(1, count):
        layers.append(
            layer([dir_entry("etc"), file_entry(f"etc/layer-{i}", f"{i}\n".encode())], gzip=gzip)
        )
    return layers


@dataclass
class LayoutImage:
    """One image manifest written into a layout: what a registry must hand back."""

    layers: list[Layer]
    config: bytes
    manifest: bytes
    arch: str = "amd64"

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)


@dataclass
class Layout:
    """An OCI image layout directory holding one tagged image or index."""

    path: Path
    tag: str
    media_type: str  # of what the tag points at
    top: bytes  # the manifest or index the tag points at
    images: list[LayoutImage] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.top)

    def image(self, arch: str) -> LayoutImage:
        return next(img for img in self.images if img.arch == arch)


def _image(layers: list[Layer], arch: str) -> tuple[LayoutImage, dict[str, bytes]]:
    config = config_json(layers, architecture=arch)
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(lay.oci_media_type, lay.blob) for lay in layers],
        }
    )
    blobs = {lay.digest: lay.blob for lay in layers}
    blobs[sha256(config)] = config
    blobs[sha256(manifest)] = manifest
    return LayoutImage(layers, config, manifest, arch), blobs


def _write_layout(
    path: Path, tag: str, media_type: str, top: bytes, blobs: dict[str, bytes]
) -> None:
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    for digest, data in blobs.items():
        (path / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    target = descriptor(media_type, top, annotations={"org.opencontainers.image.ref.name": tag})
    (path / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [target]}))


def oci_layout(
    path: Path, layers: Iterable[Layer] | None = None, *, tag: str = "1.0", arch: str = "amd64"
) -> Layout:
    """A layout dir at ``path``: ``tag`` names one linux/``arch`` image of ``layers``."""
    image, blobs = _image(list(layers) if layers is not None else busybox_layers(2), arch)
    _write_layout(path, tag, OCI_MANIFEST, image.manifest, blobs)
    return Layout(path, tag, OCI_MANIFEST, image.manifest, [image])


def fake_arch_layer(arch: str) -> Layer:
    """A tiny layer standing in for another architecture's root filesystem."""
    return layer([dir_entry("etc"), file_entry("etc/arch", f"{arch}\n".encode())], gzip=True)


def multi_arch_layout(
    path: Path, *, tag: str = "multi", amd64_layers: Iterable[Layer] | None = None
) -> Layout:
    """A layout dir whose ``tag`` is an OCI index: linux/amd64 busybox, linux/arm64 fake."""
    amd64, blobs = _image(list(amd64_layers or busybox_layers(2)), "amd64")
    arm64, arm_blobs = _image([fake_arch_layer("arm64")], "arm64")
    blobs.update(arm_blobs)
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, img.manifest, platform=platform(img.arch))
                for img in (amd64, arm64)
            ],
        }
    )
    blobs[sha256(index)] = index
    _write_layout(path, tag, OCI_INDEX, index, blobs)
    return Layout(path, tag, OCI_INDEX, index, [amd64, arm64])


# -- skopeo -------------------------------------------------------------------------


def push_oci_layout(
    layout_dir: Path,
    registry: Registry,
    repo: str,
    tag: str,
    *,
    creds: Credentials | None = None,
    docker_format: bool = False,
    all_platforms: bool | None = None,
    timeout: float = 60.0,
) -> str:
    """``skopeo copy oci:<dir>:<tag> docker://<registry>/<repo>:<tag>``; the pushed digest.

    ``docker_format`` converts to docker schema 2 (``--format v2s2``: manifest
    and config media types change, and so do their digests; gzip layers are
    kept). ``all_platforms`` (``--all``) pushes every image of an index;
    by default on when the tag names an index.
    """
    if all_platforms is None:
        index = json.loads((layout_dir / "index.json").read_bytes())
        all_platforms = any(
            d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
            and d["mediaType"] == OCI_INDEX
            for d in index["manifests"]
        )
    digestfile = layout_dir.parent / f".{layout_dir.name}.{tag}.digest"
    args = ["skopeo", "--insecure-policy", "copy", "--quiet", "--retry-times", "0"]
    args += ["--dest-tls-verify=false", "--digestfile", str(digestfile)]
    args += ["--dest-creds", creds.skopeo] if creds is not None else ["--dest-no-creds"]
    if docker_format:
        args += ["--format", "v2s2"]
    if all_platforms:
        args.append("--all")
    args += [f"oci:{layout_dir}:{tag}", f"docker://{registry.ref(repo, tag)}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SkopeoFailed(f"{' '.join(args)}: {proc.stderr.strip()}")
    try:
        return digestfile.read_text().strip()
    finally:
        digestfile.unlink(missing_ok=True)


class SkopeoFailed(RuntimeError):
    """skopeo exited non-zero; its stderr is in the message."""


def skopeo_inspect_raw(
    registry: Registry, repo: str, reference: str, *, creds: Credentials | None = None
) -> bytes:
    """``skopeo inspect --raw`` of a reference: the manifest bytes as stored."""
    args = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    args += ["--creds", creds.skopeo] if creds is not None else ["--no-creds"]
    args.append(f"docker://{registry.ref(repo, reference)}")
    proc = subprocess.run(args, capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise SkopeoFailed(f"{' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout
