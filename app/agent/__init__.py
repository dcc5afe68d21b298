"""The store agent (`termpulse agent`): runs a store's checks from inside its network.

A light process for a Raspberry Pi or a back-office PC: no database server, pure asyncio,
the same probes as the central checker (`app.checks`). It fetches its monitors from the
server (`/api/agent/v1`, docs/agents.md), runs each at its due time, keeps the results in a
local SQLite queue (`buffer`) and uploads them in order, so a server that cannot be reached
loses nothing within the queue's bounds.

* `buffer`: the local queue: instance id, sequence numbers, the last config, the results.
* `client`: the HTTP side: one gate for 401/429, errors by kind, logs without the token.
* `runner`: `Agent`, the loops: config and heartbeat, checks, upload, on-demand work.
* `cli`: `termpulse agent`.

It imports no database code: the import contract in pyproject.toml forbids it.
"""
