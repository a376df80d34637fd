"""An OCI distribution registry client over ``httpx`` (what the puller uses).

    client = RegistryClient("127.0.0.1:5000", credentials=("alice", "pw"))
    desc, body = client.resolve(parse_reference("127.0.0.1:5000/a/b:1.0"))
    chunks, total = client.open_blob("a/b", layer_digest, offset=written)

Transport: https, except ``plain_http=True``; a loopback host (127.0.0.0/8,
``::1``, ``localhost``) that answers TLS with something else is spoken to
over plain http, as Docker does. Auth: anonymous, basic, or the bearer
challenge flow of :mod:`runtime.registry_auth`, tokens kept per scope.

Errors, translated where httpx's enter::

    NotFound          404, MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN
    Unauthenticated   401 after the credentials or token were sent
    PermissionDenied  403, DENIED
    Unavailable       connection refused, timeouts, 5xx
    InvalidArgument   digest or size mismatch, an oversized manifest, other 4xx

each naming the reference and the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from runtime.reference import Reference
from runtime.registry_auth import TokenCache, basic_header, parse_challenges
from wire.errors import (
    BerthError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["MANIFEST_ACCEPT", "MAX_MANIFEST_SIZE", "Descriptor", "RegistryClient", "is_loopback"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
MAX_MANIFEST_SIZE = 4 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6]:port``) is a loopback address."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return False  # it speaks TLS, with a certificate we do not trust: say so
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RegistryClient:
    """One registry host; thread-compatible (one httpx.Client), close() when done.

    ``token_cache`` (a clock) and ``transport`` (``httpx.MockTransport``) are for tests.
    """

    def __init__(
        self,
        host: str,
        *,
        plain_http: bool | None = None,
        ca_file: str | None = None,
        cert: str | tuple[str, str] | None = None,
        credentials: tuple[str, str] | None = None,
        timeout: float = 30,
        token_cache: TokenCache | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = host
        self._scheme: str | None = "http" if plain_http else None
        self._fallback = plain_http is None and is_loopback(host)
        if plain_http is False:
            self._scheme = "https"
        self._credentials = credentials
        self._tokens = token_cache or TokenCache()
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=ca_file)
        if cert is not None:
            if not isinstance(verify, ssl.SSLContext):
                verify = ssl.create_default_context()
            certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
            verify.load_cert_chain(certfile, keyfile)
        self._http = httpx.Client(
            verify=verify, timeout=timeout, follow_redirects=True, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API ----------------------------------------------------------------------

    def resolve(self, ref: Reference) -> tuple[Descriptor, bytes]:
        """The manifest or index ``ref`` names (digest before tag): descriptor and bytes."""
        what = ref.digest or ref.tag or "latest"
        body, media_type = self._get_manifest(ref.path, what, str(ref))
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.digest:
            self._check_digest(ref.digest, digest, str(ref))
        return Descriptor(media_type, digest, len(body)), body

    def fetch_manifest(self, name: str, digest: str) -> bytes:
        """The manifest ``name@digest``, verified against the digest, at most 4 MiB."""
        what = f"{self.host}/{name}@{digest}"
        body, _ = self._get_manifest(name, digest, what)
        self._check_digest(digest, "sha256:" + hashlib.sha256(body).hexdigest(), what)
        return body

    def blob_exists(self, name: str, digest: str) -> bool:
        what = f"{self.host}/{name}@{digest}"
        try:
            with self._send("HEAD", f"/v2/{name}/blobs/{digest}", name, what):
                return True
        except NotFound:
            return False

    def open_blob(self, name: str, digest: str, offset: int = 0) -> tuple[Iterator[bytes], int]:
        """The blob's bytes from ``offset`` (HTTP Range) as chunks, and its total size.

        The total is -1 when the registry does not say. The caller hashes what it
        writes (it holds the bytes before ``offset``); the iterator must be drained
        or closed to release the connection.
        """
        what = f"{self.host}/{name}@{digest}"
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        stack = contextlib.ExitStack()
        resp = stack.enter_context(
            self._send("GET", f"/v2/{name}/blobs/{digest}", name, what, headers)
        )
        skip = 0
        if resp.status_code == 206:
            size = resp.headers.get("content-range", "").rsplit("/", 1)[-1]
            total = int(size) if size.isdigit() else -1
        else:
            total = int(resp.headers.get("content-length", "-1"))
            skip = offset  # the registry ignored Range: drop what we have
        return self._chunks(resp, stack, skip, what), total

    # -- the machinery ----------------------------------------------------------------

    def _chunks(
        self, resp: httpx.Response, stack: contextlib.ExitStack, skip: int, what: str
    ) -> Iterator[bytes]:
        with stack, self._translate(what):
            for chunk in resp.iter_bytes(_CHUNK):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                if chunk:
                    yield chunk

    def _get_manifest(self, name: str, what_ref: str, what: str) -> tuple[bytes, str]:
        headers = {"Accept": MANIFEST_ACCEPT}
        with self._send("GET", f"/v2/{name}/manifests/{what_ref}", name, what, headers) as resp:
            length = int(resp.headers.get("content-length", "0") or 0)
            if length > MAX_MANIFEST_SIZE:
                raise InvalidArgument(
                    f"manifest {what}: {length} bytes is over the {MAX_MANIFEST_SIZE} byte limit"
                )
            body = bytearray()
            with self._translate(what):
                for chunk in resp.iter_bytes(_CHUNK):
                    body += chunk
                    if len(body) > MAX_MANIFEST_SIZE:
                        raise InvalidArgument(
                            f"manifest {what}: over the {MAX_MANIFEST_SIZE} byte limit"
                        )
            sent = resp.headers.get("docker-content-digest", "")
            if sent.startswith("sha256:"):
                self._check_digest(sent, "sha256:" + hashlib.sha256(body).hexdigest(), what)
            media_type = resp.headers.get("content-type", "").split(";")[0].strip()
            if not media_type or media_type == "application/json":
                with contextlib.suppress(ValueError, AttributeError):
                    media_type = json.loads(body).get("mediaType", media_type)
            return bytes(body), media_type

    @staticmethod
    def _check_digest(want: str, got: str, what: str) -> None:
        if want != got:
            raise InvalidArgument(f"{what}: digest mismatch: content hashes to {got}")

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise Unavailable(f"registry {self.host}: timed out fetching {what}") from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"registry {self.host} unavailable ({what}): {exc}") from exc

    @contextlib.contextmanager
    def _send(
        self, method: str, path: str, name: str, what: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """An authorised request whose status is 2xx, streamed; errors mapped."""
        scope = f"repository:{name}:pull"
        headers = dict(headers or {})
        auth = self._cached_auth(scope)
        resp = self._open(method, path, headers, auth, what)
        if resp.status_code == 401:
            challenge = resp.headers.get("www-authenticate", "")
            resp.close()
            auth = self._answer(challenge, scope, what, stale=auth)
            if auth is None:
                raise Unauthenticated(f"{what}: registry {self.host} requires credentials")
            resp = self._open(method, path, headers, auth, what)
            if resp.status_code == 401:
                resp.close()
                raise Unauthenticated(f"{what}: registry {self.host} refused the credentials")
        try:
            if resp.status_code >= 300:
                resp.read()
                raise self._status_error(resp, what)
            yield resp
        finally:
            resp.close()

    def _open(
        self, method: str, path: str, headers: dict[str, str], auth: str | None, what: str
    ) -> httpx.Response:
        if auth:
            headers = {**headers, "Authorization": auth}
        with self._translate(what):
            if self._scheme is None:
                try:
                    resp = self._request("https", method, path, headers)
                    self._scheme = "https"
                    return resp
                except httpx.TransportError as exc:
                    if not (self._fallback and _is_tls_error(exc)):
                        raise
                self._scheme = "http"
            return self._request(self._scheme, method, path, headers)

    def _request(
        self, scheme: str, method: str, path: str, headers: dict[str, str]
    ) -> httpx.Response:
        req = self._http.build_request(method, f"{scheme}://{self.host}{path}", headers=headers)
        return self._http.send(req, stream=True)

    def _cached_auth(self, scope: str) -> str | None:
        token = self._tokens.for_scope(scope)
        return f"Bearer {token}" if token else None

    def _answer(self, header: str, scope: str, what: str, stale: str | None) -> str | None:
        """The Authorization value answering a 401's challenges, or None."""
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and "realm" in challenge.params:
                return "Bearer " + self._token(challenge.params, scope, what, stale)
        for challenge in parse_challenges(header):
            if challenge.scheme == "basic" and self._credentials:
                return basic_header(*self._credentials)
        return None

    def _token(self, params: dict[str, str], scope: str, what: str, stale: str | None) -> str:
        realm, service = params["realm"], params.get("service", "")
        scope = params.get("scope", scope)
        key = (realm, service, scope)
        if (cached := self._tokens.get(key)) and f"Bearer {cached}" != stale:
            return cached  # a token just refused (revoked early) is fetched anew
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        with self._translate(what):
            resp = self._http.get(realm, params=query, auth=auth)
        if resp.status_code in (401, 403):
            raise Unauthenticated(f"{what}: token server {realm} refused the credentials")
        if resp.status_code >= 300:
            raise Unavailable(f"{what}: token server {realm} answered {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"{what}: token server {realm} sent no token")
        expires = body.get("expires_in")
        self._tokens.put(key, token, float(expires) if isinstance(expires, int | float) else None)
        return token

    def _status_error(self, resp: httpx.Response, what: str) -> BerthError:
        codes: list[str] = []
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            codes = [e.get("code", "") for e in resp.json().get("errors", [])]
        status = resp.status_code
        where = f"registry {self.host}"
        if status == 404 or {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"} & set(codes):
            return NotFound(f"{what}: not found on {where}")
        if status == 403 or "DENIED" in codes:
            return PermissionDenied(f"{what}: {where} denied access")
        if status >= 500:
            return Unavailable(f"{what}: {where} answered {status}")
        return InvalidArgument(f"{what}: {where} answered {status} {' '.join(codes)}".strip())
