"""WWW-Authenticate parsing and bearer-token reuse (runtime.registry_auth)."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from runtime.reference import parse_reference
from runtime.registry_auth import Challenge, TokenCache, basic_header, parse_challenges
from runtime.registry_client import RegistryClient, is_loopback
from wire.errors import PermissionDenied, Unauthenticated


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull",
                    },
                )
            ],
        ),
        (
            'Bearer realm="https://t/token", scope="repository:a:pull,push"',
            [Challenge("bearer", {"realm": "https://t/token", "scope": "repository:a:pull,push"})],
        ),
        (
            'Bearer realm="https://t",service=reg, Basic realm="r"',
            [
                Challenge("bearer", {"realm": "https://t", "service": "reg"}),
                Challenge("basic", {"realm": "r"}),
            ],
        ),
        (
            'BEARER Realm = "x" , Error="invalid_token"',
            [Challenge("bearer", {"realm": "x", "error": "invalid_token"})],
        ),
        ('Bearer realm="a\\"b,c"', [Challenge("bearer", {"realm": 'a"b,c'})]),
        (
            "Negotiate abc==, Basic realm=r",
            [Challenge("negotiate"), Challenge("basic", {"realm": "r"})],
        ),
        ("", []),
        ("Bearer", [Challenge("bearer")]),
    ],
)
def test_challenges_parse_with_quoted_values_commas_and_several_schemes(header, expected):
    assert parse_challenges(header) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_reused_until_its_expiry_passes():
    clock = FakeClock()
    cache = TokenCache(clock)
    key = ("https://t", "reg", "repository:a:pull")
    cache.put(key, "tok", 300)
    clock.now += 299
    assert cache.get(key) == "tok" and cache.for_scope("repository:a:pull") == "tok"
    assert cache.for_scope("repository:b:pull") is None
    clock.now += 1
    assert cache.get(key) is None


def test_a_token_without_expires_in_lives_sixty_seconds():
    clock = FakeClock()
    cache = TokenCache(clock)
    cache.put(("r", "s", "x"), "tok", None)
    clock.now += 59.9
    assert cache.get(("r", "s", "x")) == "tok"
    clock.now += 0.1
    assert cache.get(("r", "s", "x")) is None


MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'


class TokenRegistry:
    """A mock transport: a registry demanding bearer tokens and its token server."""

    def __init__(self, token_status: int = 200, expires_in: int = 300) -> None:
        self.token_requests: list[httpx.Request] = []
        self.token_status = token_status
        self.expires_in = expires_in
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.token_requests.append(request)
            if self.token_status != 200:
                return httpx.Response(self.token_status)
            self.issued += 1
            return httpx.Response(
                200, json={"access_token": f"t{self.issued}", "expires_in": self.expires_in}
            )
        if request.headers.get("authorization") != f"Bearer t{self.issued}" or not self.issued:
            challenge = (
                'Bearer realm="https://auth.test/token",service="reg.test",'
                'scope="repository:a/b:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if "denied" in request.url.path:
            return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})
        return httpx.Response(
            200,
            content=MANIFEST,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )


def _client(mock: TokenRegistry, clock: FakeClock, creds=("alice", "pw")) -> RegistryClient:
    return RegistryClient(
        "reg.test",
        plain_http=True,
        credentials=creds,
        token_cache=TokenCache(clock),
        transport=httpx.MockTransport(mock),
    )


def test_the_bearer_flow_fetches_one_token_per_scope_and_reuses_it_until_expiry():
    mock, clock = TokenRegistry(), FakeClock()
    ref = parse_reference("reg.test/a/b:1.0")
    with _client(mock, clock) as client:
        desc, body = client.resolve(ref)
        assert body == MANIFEST and desc.digest == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
        client.resolve(ref)
        assert len(mock.token_requests) == 1
        token_request = mock.token_requests[0]
        assert token_request.url.params["service"] == "reg.test"
        assert token_request.url.params["scope"] == "repository:a/b:pull"
        assert token_request.headers["authorization"] == basic_header("alice", "pw")
        clock.now += 301
        client.resolve(ref)
        assert len(mock.token_requests) == 2


def test_a_token_server_refusing_the_credentials_is_unauthenticated():
    mock, clock = TokenRegistry(token_status=401), FakeClock()
    with _client(mock, clock) as client, pytest.raises(Unauthenticated, match=r"auth\.test"):
        client.resolve(parse_reference("reg.test/a/b:1.0"))


def test_denied_is_permission_denied_naming_the_reference():
    mock, clock = TokenRegistry(), FakeClock()
    with _client(mock, clock) as client, pytest.raises(PermissionDenied, match="denied:1"):
        client.resolve(parse_reference("reg.test/a/denied:1"))


def test_basic_header_is_base64_of_user_colon_password():
    assert base64.b64decode(basic_header("a", "b:c").split()[1]) == b"a:b:c"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.3.4.5", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry-1.docker.io", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts_are_recognised(host, loopback):
    assert is_loopback(host) is loopback
