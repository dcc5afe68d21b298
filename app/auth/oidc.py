"""OpenID Connect, the protocol side of SSO: the settings, the authorization request, the code
exchange and the ID token's checks. The pages and the users are app.auth.sso's.

Authorization code flow with PKCE (S256), state and nonce. Authlib's framework-agnostic parts
do the protocol: the PKCE challenge, the authorization URL, and the ID token's claims
(`CodeIDToken`: issuer, audience, expiry, issued-at, nonce, azp, at_hash), its signature
checked with joserfc (Authlib's JOSE library) against the issuer's JWKS. Authlib's Starlette
client is not used: it keeps the flow's secrets in Starlette's cookie session, and TermPulse
keeps them on the server with its own sessions (app.auth.sso).

Outbound calls (discovery, JWKS, token) go only to the issuer's host (and TERMPULSE_OIDC_HOSTS,
for providers whose endpoints live on other hosts), over HTTPS unless the host is loopback,
and only to an address the target policy allows (app.checks.guard: loopback, link-local and the
metadata address only when TERMPULSE_ALLOWED_NETWORKS lists them); the connection goes to the
address that was checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet

from app.auth.roles import RANK, ROLES, normalize
from app.checks.guard import SENSITIVE_NETWORKS, TargetGuard
from app.config import Settings

TIMEOUT_S = 10.0
METADATA_TTL_S = 3600.0  # discovery and keys are fetched again after this (and keys on an unknown kid)
LEEWAY_S = 60  # clock difference tolerated on exp, iat, nbf
CALLBACK_PATH = "/login/sso/callback"


class OidcError(Exception):
    """The sign-in cannot go on; the message says why, for the page and the audit log."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    groups_claim: str
    role_map: dict[str, str]  # group -> role
    only: str  # off, non-admins, all
    hosts: frozenset[str]  # where calls may go
    redirect_uri: str

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """None when SSO is off (no issuer); ValueError naming the setting when it is wrong."""
        issuer = settings.oidc_issuer.strip().rstrip("/")
        if not issuer:
            return None
        parts = urlsplit(issuer)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(host)):
            raise ValueError(
                f"TERMPULSE_OIDC_ISSUER must be an https:// URL (http only on loopback): {issuer}"
            )
        if not settings.oidc_client_id or not settings.oidc_client_secret:
            raise ValueError("SSO needs TERMPULSE_OIDC_CLIENT_ID and TERMPULSE_OIDC_CLIENT_SECRET")
        return cls(
            issuer=issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            scopes=settings.oidc_scopes if "openid" in settings.oidc_scopes.split() else "openid",
            groups_claim=settings.oidc_groups_claim,
            role_map=parse_role_map(settings.oidc_role_map),
            only=settings.oidc_only,
            hosts=frozenset({host, *(h.strip().lower() for h in settings.oidc_hosts if h.strip())}),
            redirect_uri=settings.base_url.rstrip("/") + CALLBACK_PATH,
        )

    def role_for(self, groups: list[str]) -> str | None:
        """The highest role the groups map to, None when none does."""
        roles = [self.role_map[g] for g in groups if g in self.role_map]
        return max(roles, key=RANK.__getitem__, default=None)


def parse_role_map(entries: list[str]) -> dict[str, str]:
    mapping = {}
    for entry in entries:
        group, sep, role = entry.rpartition("=")
        try:
            if not sep or not group.strip():
                raise ValueError
            mapping[group.strip()] = normalize(role.strip())
        except ValueError:
            raise ValueError(
                f"TERMPULSE_OIDC_ROLE_MAP: {entry!r} is not group=role (a role of {', '.join(ROLES)})"
            ) from None
    return mapping


def password_allowed(settings: Settings, role: str) -> bool:
    """Whether a user of this role may log in with a password (TERMPULSE_OIDC_ONLY)."""
    only = settings.oidc_only if settings.oidc_issuer else "off"
    return only == "off" or (only == "non-admins" and normalize(role) == "admin")


def groups_of(claims: dict[str, Any], claim: str) -> list[str]:
    """The groups a claim carries: a list of names, or one name, or a space-separated string."""
    value = claims.get(claim)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int)]
    return []


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class IssuerOnly(httpx.AsyncBaseTransport):
    """Sends a request only to the issuer's hosts, at an address the target policy allows,
    connecting to that very address (a name cannot resolve elsewhere in between)."""

    def __init__(self, hosts: frozenset[str], guard: TargetGuard) -> None:
        self.hosts = hosts
        self.guard = guard
        self.inner = httpx.AsyncHTTPTransport(retries=0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host.lower()
        if host not in self.hosts:
            raise OidcError(f"{host} is not the SSO issuer's host (TERMPULSE_OIDC_HOSTS lists others)")
        if request.url.scheme != "https" and not _loopback(host):
            raise OidcError(f"{request.url} is not HTTPS")
        address = await self._allowed_address(host, request.url.port)
        request.url = request.url.copy_with(host=address)  # the Host header keeps the name
        if request.url.scheme == "https":
            request.extensions["sni_hostname"] = host  # and the certificate is checked against it
        return await self.inner.handle_async_request(request)

    async def _allowed_address(self, host: str, port: int | None) -> str:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OidcError(f"{host} cannot be resolved: {exc}") from None
        addresses = [str(info[4][0]) for info in found]
        for address in addresses:
            if self._allows(address):
                return address
        raise OidcError(f"the SSO issuer {host}: {self.guard.refusal(addresses[0])}")

    def _allows(self, address: str) -> bool:
        """The issuer an admin configured is allowed wherever it lives, as a network profile's
        host is, but for loopback, link-local and metadata addresses (only when listed)."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net, _ in SENSITIVE_NETWORKS):
            return self.guard.allows(address)
        return True

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True)
class Start:
    """What a sign-in keeps until its callback, and where it sends the browser."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class OidcClient:
    """One issuer: discovery and keys cached, every call through IssuerOnly."""

    def __init__(self, config: OidcConfig, guard: TargetGuard) -> None:
        self.config = config
        self.guard = guard
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._keys: tuple[float, KeySet] | None = None

    def _http(self) -> httpx.AsyncClient:
        transport = IssuerOnly(self.config.hosts, self.guard)
        return httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S, trust_env=False)

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        async with self._http() as http:
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                raise OidcError(f"the SSO issuer's {what} cannot be reached: {exc!r}") from None
        return _json_object(response, what)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is not None and time.monotonic() - self._metadata[0] < METADATA_TTL_S:
            return self._metadata[1]
        found = await self._get_json(f"{self.config.issuer}/.well-known/openid-configuration", "discovery")
        if found.get("issuer") != self.config.issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise OidcError(f"the discovery document names another issuer: {found.get('issuer')!r}")
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(found.get(field), str):
                raise OidcError(f"the discovery document has no {field}")
        self._metadata = (time.monotonic(), found)
        return found

    async def _key_set(self, fresh: bool = False) -> KeySet:
        if not fresh and self._keys is not None and time.monotonic() - self._keys[0] < METADATA_TTL_S:
            return self._keys[1]
        document = await self._get_json((await self.metadata())["jwks_uri"], "keys (JWKS)")
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise OidcError("the SSO issuer's keys (JWKS) cannot be read") from None
        self._keys = (time.monotonic(), keys)
        return keys

    async def start(self) -> Start:
        state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_uri,
            "scope": self.config.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        url = add_params_to_uri((await self.metadata())["authorization_endpoint"], params)
        return Start(url, state, nonce, verifier)

    async def finish(self, code: str, nonce: str, code_verifier: str) -> dict[str, Any]:
        """The code exchanged for tokens, the ID token checked: its claims."""
        tokens = await self._exchange(code, code_verifier)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str):
            raise OidcError("the SSO issuer's token answer has no ID token")
        return await self._checked_claims(
            id_token, nonce, access_token if isinstance(access_token, str) else None
        )

    async def _exchange(self, code: str, code_verifier: str) -> dict[str, Any]:
        endpoint = (await self.metadata())["token_endpoint"]
        # client_secret_basic: both parts form-encoded first (RFC 6749, section 2.3.1).
        auth = (quote(self.config.client_id, safe=""), quote(self.config.client_secret, safe=""))
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "code_verifier": code_verifier,
        }
        async with self._http() as http:
            try:
                response = await http.post(endpoint, data=form, auth=auth)
            except httpx.HTTPError as exc:
                raise OidcError(f"the SSO issuer's token endpoint cannot be reached: {exc!r}") from None
        return _json_object(response, "token endpoint")

    async def _checked_claims(self, id_token: str, nonce: str, access_token: str | None) -> dict[str, Any]:
        algorithms = [
            a
            for a in (await self.metadata()).get("id_token_signing_alg_values_supported", ["RS256"])
            if a != "none"
        ]
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(), algorithms=algorithms)
            except InvalidKeyIdError:  # the issuer rotated its keys since we fetched them
                token = jwt.decode(id_token, await self._key_set(fresh=True), algorithms=algorithms)
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "value": self.config.issuer},
                    "aud": {"essential": True, "value": self.config.client_id},
                    "nonce": {"essential": True},
                },
                {"nonce": nonce, "client_id": self.config.client_id, "access_token": access_token},
            )
            claims.validate(leeway=LEEWAY_S)
        except BadSignatureError:
            raise OidcError("the ID token's signature does not verify with the issuer's keys") from None
        except ExpiredTokenError:
            raise OidcError("the ID token has expired") from None
        except ClaimError as exc:
            raise OidcError(f"the ID token's {_claim_named(exc.claim)} claim is wrong or missing") from None
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the ID token cannot be read: {exc}") from None
        return dict(claims)


def _claim_named(claim: str) -> str:
    return {"aud": "audience (aud)", "iss": "issuer (iss)"}.get(claim, claim)


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        # The body is the issuer's, not shown: an OAuth error code is enough to act on.
        error = ""
        try:
            body = response.json()
            error = f" ({str(body.get('error', ''))[:60]})" if isinstance(body, dict) else ""
        except ValueError:
            pass
        raise OidcError(f"the SSO issuer's {what} answered {response.status_code}{error}")
    try:
        found = response.json()
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise OidcError(f"the SSO issuer's {what} did not answer a JSON object")
    return found
