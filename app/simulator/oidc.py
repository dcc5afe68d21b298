"""A simulated OpenID Connect provider for tests, the demo and trying SSO: a small ASGI app
served by uvicorn on 127.0.0.1, as the provider API simulators are.

* `/.well-known/openid-configuration`: the discovery document;
* `/jwks`: its RSA public key;
* `/authorize`: the authorization code flow with PKCE (S256 required): signs in the configured
  test user at once (`auto_user`), or shows a tiny form to pick one of `users`;
* `/token`: the code (once, within a minute, for the same client, redirect URI and verifier)
  for an access token and an RS256-signed ID token (iss, sub, aud, exp, iat, nonce, the
  user's name, email and groups).

Tests make it misbehave on command: `tamper` changes claims of the next ID tokens (another
nonce, audience, issuer, an expiry in the past) or signs them with a key it does not publish;
`discovery_changes` changes its discovery document (an endpoint on another host).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import unquote, urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "termpulse"
CLIENT_SECRET = "sim-oidc-client-secret-0000000000"
CODE_TTL_S = 60.0
TOKEN_TTL_S = 300


@dataclass
class SimUser:
    username: str
    groups: list[str] = field(default_factory=list)
    subject: str = ""  # stable id at the provider; made from the name when not given

    def __post_init__(self) -> None:
        self.subject = self.subject or "sub-" + hashlib.sha256(self.username.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Code:
    user: SimUser
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    issued: float


# Test users of the demo and `termpulse simulate`: one per role, and one no role maps.
DEFAULT_USERS = (
    SimUser("alice", ["tp-admins"]),
    SimUser("mia", ["tp-managers"]),
    SimUser("sam", ["tp-support"]),
    SimUser("vic", ["tp-viewers"]),
    SimUser("nobody", ["marketing"]),
)
DEFAULT_ROLE_MAP = "tp-admins=admin,tp-managers=manager,tp-support=support,tp-viewers=viewer"


class OidcSim:
    def __init__(
        self,
        users: list[SimUser] | tuple[SimUser, ...] = DEFAULT_USERS,
        *,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        auto_user: str | None = None,
    ) -> None:
        self.users = {u.username: u for u in users}
        self.client_id = client_id
        self.client_secret = client_secret
        self.auto_user = auto_user  # signs this one in without a form
        self.key = RSAKey.generate_key(2048, parameters={"kid": "sim-1", "use": "sig", "alg": "RS256"})
        # Same kid, not published: what a forged token would be signed with.
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "sim-1", "use": "sig", "alg": "RS256"})
        self.tamper: dict[str, Any] = {}  # claims to change in the next ID tokens; "sign_with_other_key"
        self.discovery_changes: dict[str, Any] = {}  # fields to change in the discovery document
        self.calls: Counter[str] = Counter()
        self._codes: dict[str, _Code] = {}
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize, methods=["GET", "POST"]),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    # --- endpoints ---------------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        self.calls["discovery"] += 1
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", "profile", "email"],
                "claims_supported": ["sub", "preferred_username", "email", "groups"],
            }
            | self.discovery_changes
        )

    async def jwks(self, request: Request) -> Response:
        self.calls["jwks"] += 1
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: Request) -> Response:
        self.calls["authorize"] += 1
        params = dict(request.query_params)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.form()).items()})
        problem = self._authorize_problem(params)
        if problem:
            return HTMLResponse(f"<p>{html.escape(problem)}</p>", status_code=400)
        name = params.get("user") or self.auto_user
        if name is None:
            return self._pick_user_form(params)
        user = self.users.get(name)
        if user is None:
            return HTMLResponse(f"<p>no user {html.escape(name)}</p>", status_code=400)
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            user,
            params["client_id"],
            params["redirect_uri"],
            params.get("nonce", ""),
            params["code_challenge"],
            time.monotonic(),
        )
        answer = {"code": code, "state": params.get("state", "")}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(answer)}", status_code=302)

    def _authorize_problem(self, params: dict[str, str]) -> str | None:
        if params.get("client_id") != self.client_id:
            return "unknown client_id"
        if params.get("response_type") != "code":
            return "response_type must be code"
        if not params.get("redirect_uri"):
            return "redirect_uri missing"
        if "openid" not in params.get("scope", "").split():
            return "scope must include openid"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "PKCE with S256 is required"
        return None

    def _pick_user_form(self, params: dict[str, str]) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k != "user"
        )
        buttons = "".join(
            f'<button name="user" value="{html.escape(u.username)}">{html.escape(u.username)}'
            f" ({html.escape(', '.join(u.groups) or 'no groups')})</button> "
            for u in self.users.values()
        )
        page = (
            "<!doctype html><title>Simulated sign-in</title><h1>Simulated identity provider</h1>"
            f'<form method="post" action="/authorize">{hidden}<p>Sign in as:</p>{buttons}</form>'
        )
        return HTMLResponse(page)

    async def token(self, request: Request) -> Response:
        self.calls["token"] += 1
        form = {k: str(v) for k, v in (await request.form()).items()}
        client_id, secret = self._client_credentials(request, form)
        if client_id != self.client_id or not hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        code = self._codes.pop(form.get("code", ""), None)  # once
        if (
            code is None
            or time.monotonic() - code.issued > CODE_TTL_S
            or code.client_id != client_id
            or code.redirect_uri != form.get("redirect_uri")
            or _s256(form.get("code_verifier", "")) != code.challenge
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access_token = secrets.token_urlsafe(32)
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_S,
                "id_token": self.id_token(code.user, code.nonce),
            },
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
        """client_secret_basic (form-encoded parts) or client_secret_post."""
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "", ""
            return unquote(user), unquote(password)
        return form.get("client_id", ""), form.get("client_secret", "")

    def id_token(self, user: SimUser, nonce: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": user.subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "nonce": nonce,
            "preferred_username": user.username,
            "email": f"{user.username}@example.test",
            "groups": list(user.groups),
        }
        changes = dict(self.tamper)
        other_key = changes.pop("sign_with_other_key", False)
        claims.update(changes)
        key = self.other_key if other_key else self.key
        return jwt.encode({"alg": "RS256", "kid": "sim-1"}, claims, key)

    # --- serving -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            log_config=None,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
            await asyncio.sleep(0.01)
        bound = self._server.servers[0].sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None

    def settings(self) -> dict[str, str]:
        """The TERMPULSE_OIDC_* settings that make TermPulse use this provider (with
        TERMPULSE_ALLOWED_NETWORKS listing 127.0.0.0/8: the issuer is on loopback)."""
        return {
            "oidc_issuer": self.url,
            "oidc_client_id": self.client_id,
            "oidc_client_secret": self.client_secret,
            "oidc_role_map": DEFAULT_ROLE_MAP,
        }


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
