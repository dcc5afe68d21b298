"""A fake TermPulse server for the store agent: the five calls of docs/agents.md, in memory.

It runs under uvicorn on a real loopback socket, keeps what it received (config fetches,
heartbeats, every POST /results with its seqs, the results it wrote, on-demand answers), and
dedupes results the way the real server does: per instance, the highest seq written, so a
batch sent twice writes nothing twice. Knobs make it misbehave: a revoked token (401), a
rate limit (429 with Retry-After), an answer lost after the write (the connection drops).

Used by tests/agent and bench/agent_footprint.py; `python -m tests.agent.fake_server` runs
one alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PREFIX = "/api/agent/v1"


@dataclass
class Received:
    method: str
    path: str
    status: int
    at: float  # time.monotonic() when the request arrived


@dataclass
class FakeServer:
    token: str = "tpa_fake-token-never-to-be-logged"
    monitors: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_s: float = 1.0
    revoked: bool = False
    rate_limit_next: int | None = None  # answer the next call 429 with this Retry-After
    lose_next_results_answer: bool = False  # write the next batch, then drop the connection

    def __post_init__(self) -> None:
        self.requests: list[Received] = []
        self.configs: list[int] = []  # the status of each GET /config (200, 304)
        self.heartbeats: list[dict[str, Any]] = []
        self.posts: list[list[int]] = []  # the seqs of each POST /results, as received
        self.written: list[dict[str, Any]] = []  # results written (deduped), in order
        self.duplicates = 0
        self.last_seq: dict[str, int] = {}  # instance -> highest seq written
        self.work: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.work_results: dict[str, list[dict[str, Any]]] = {}
        self.url = ""
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.app = Starlette(
            routes=[
                Route(f"{PREFIX}/config", self.config, methods=["GET"]),
                Route(f"{PREFIX}/heartbeat", self.heartbeat, methods=["POST"]),
                Route(f"{PREFIX}/results", self.results, methods=["POST"]),
                Route(f"{PREFIX}/work", self.work_poll, methods=["GET"]),
                Route(f"{PREFIX}/work/{{work_id}}", self.work_answer, methods=["POST"]),
            ]
        )

    # --- the config

    def config_body(self) -> dict[str, Any]:
        return {
            "agent": {"id": 1, "name": "Fake store agent"},
            "stores": ["S-0001"],
            "heartbeat_s": self.heartbeat_s,
            "monitors": self.monitors,
        }

    @property
    def etag(self) -> str:
        digest = hashlib.sha256(json.dumps(self.config_body(), sort_keys=True).encode()).hexdigest()
        return f'"{digest[:16]}"'

    def set_monitors(self, monitors: list[dict[str, Any]]) -> None:
        self.monitors = monitors

    # --- what was received

    def seqs(self) -> list[int]:
        return [r["seq"] for r in self.written]

    def of_monitor(self, monitor_id: int) -> list[dict[str, Any]]:
        return [r for r in self.written if r["monitor_id"] == monitor_id]

    # --- the calls

    def _refuse(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}" or self.revoked:
            return JSONResponse({"detail": "unknown or revoked agent token"}, status_code=401)
        if self.rate_limit_next is not None:
            wait, self.rate_limit_next = self.rate_limit_next, None
            return JSONResponse({"detail": "slow down"}, status_code=429, headers={"Retry-After": str(wait)})
        return None

    def _log(self, request: Request, status: int) -> None:
        at = request.scope.get("fake_arrived", time.monotonic())
        self.requests.append(Received(request.method, request.url.path, status, at))

    async def config(self, request: Request) -> Response:
        response = self._refuse(request)
        if response is None:
            if request.headers.get("if-none-match") == self.etag:
                response = Response(status_code=304, headers={"ETag": self.etag})
            else:
                response = JSONResponse(self.config_body(), headers={"ETag": self.etag})
            self.configs.append(response.status_code)
        self._log(request, response.status_code)
        return response

    async def heartbeat(self, request: Request) -> Response:
        response = self._refuse(request)
        if response is None:
            body = await request.json()
            self.heartbeats.append(body)
            now = datetime.now(UTC)
            skew = (datetime.fromisoformat(body["clock"]) - now).total_seconds() * 1000
            response = JSONResponse(
                {
                    "server_time": now.isoformat(),
                    "skew_ms": round(skew),
                    "last_seq": self.last_seq.get(body["instance"], 0),
                    "config_etag": self.etag.strip('"'),  # the bare value: the agent must cope
                }
            )
        self._log(request, response.status_code)
        return response

    async def results(self, request: Request) -> Response:
        response = self._refuse(request)
        if response is None:
            body = await request.json()
            instance = body["instance"]
            batch = body["results"]
            self.posts.append([r["seq"] for r in batch])
            accepted = duplicates = 0
            last = self.last_seq.get(instance, 0)
            for r in sorted(batch, key=lambda r: r["seq"]):
                if r["seq"] <= last:
                    duplicates += 1
                    continue
                self.written.append(r)
                last = r["seq"]
                accepted += 1
            self.last_seq[instance] = last
            self.duplicates += duplicates
            response = JSONResponse({"accepted": accepted, "duplicates": duplicates, "last_seq": last})
        self._log(request, response.status_code)
        return response

    async def work_poll(self, request: Request) -> Response:
        response = self._refuse(request)
        if response is None:
            wait = float(request.query_params.get("wait", "25"))
            deadline = time.monotonic() + wait
            response = Response(status_code=204)
            while time.monotonic() < deadline and not self._closing:
                with contextlib.suppress(asyncio.QueueEmpty):
                    response = JSONResponse(self.work.get_nowait())
                    break
                await asyncio.sleep(0.02)
        self._log(request, response.status_code)
        return response

    async def work_answer(self, request: Request) -> Response:
        response = self._refuse(request)
        if response is None:
            self.work_results[request.path_params["work_id"]] = (await request.json())["results"]
            response = Response(status_code=204)
        self._log(request, response.status_code)
        return response

    # --- ASGI: the lost answer

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        scope["fake_arrived"] = time.monotonic()
        if scope["type"] == "http" and scope["path"] == f"{PREFIX}/results" and self.lose_next_results_answer:
            self.lose_next_results_answer = False

            async def drop_after_start(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    # Headers out, then the connection drops: the batch is written, the
                    # agent never reads the answer.
                    await send(message)
                    raise ConnectionAbortedError("fake server: answer lost")
                await send(message)

            with contextlib.suppress(ConnectionAbortedError):
                await self.app(scope, receive, drop_after_start)
            return
        await self.app(scope, receive, send)

    # --- running

    async def start(self, port: int = 0) -> FakeServer:
        self._closing = False
        config = uvicorn.Config(
            self.asgi,
            host="127.0.0.1",
            port=port or self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # the bind error
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        """Stop listening (connections refused from now on); start() again binds the same port."""
        self._closing = True
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


async def _main() -> None:  # pragma: no cover - by hand: python -m tests.agent.fake_server
    server = await FakeServer(monitors=[]).start(8765)
    print(f"fake agent server on {server.url}, token {server.token}")
    await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
