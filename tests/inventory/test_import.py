"""Bulk import on both databases: counts, idempotence, every bad row, nothing half-imported."""

import pytest
from sqlalchemy import func, select

from app.inventory.csvimport import ImportFailed, import_fleet
from app.inventory.models import Monitor, Store, Terminal, TerminalEvent
from tests.fleet import sample_files


async def count(db, model) -> int:
    async with db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def run_import(db, files, **kwargs):
    async with db.sessionmaker() as session:
        return await import_fleet(session, files, **kwargs)


async def test_sample_fleet_imports_then_reimports_unchanged(db):
    summary = await run_import(db, sample_files())
    assert (summary.stores.created, summary.terminals.created) == (60, 246)
    assert (await count(db, Store), await count(db, Terminal)) == (60, 246)
    monitors = await count(db, Monitor)
    assert monitors == summary.monitors["created"] > 246

    again = await run_import(db, sample_files())
    assert (again.stores.created, again.stores.updated, again.stores.unchanged) == (0, 0, 60)
    assert (again.terminals.created, again.terminals.updated, again.terminals.unchanged) == (0, 0, 246)
    assert again.monitors == {"created": 0, "updated": 0, "deleted": 0}
    assert await count(db, Monitor) == monitors


async def test_dry_run_writes_nothing(db):
    summary = await run_import(db, sample_files(), dry_run=True)
    assert summary.terminals.created == 246
    assert await count(db, Store) == 0 and await count(db, Monitor) == 0


async def test_every_bad_row_is_reported_and_nothing_written(db):
    stores = (
        b"code,name,region,timezone,network_profile\n"
        b"S-1,One,N,Europe/London,mixed\nS-2,,N,Nowhere/Land,\nS-1,Dup,N,UTC,\n"
    )
    terminals = (
        "store_code,poiid,integration,lan_host,lan_port,local_api,mac,cloud_enabled\n"
        "S-1,A\u20111,cloud,,,,,yes\n"  # fine (dash normalised)
        "S-1,A-1,cloud,,,,,yes\n"  # duplicate of line 2 after normalisation
        "S-9,B-1,local,127.0.0.1,99999,tcp,,no\n"  # bad port (and unknown store)
        "S-9,C-1,cloud,,,,,no\n"  # unknown store
        "S-1,D-1,local,,,tcp,zz,maybe\n"  # missing host, bad MAC, bad yes/no
    ).encode()
    with pytest.raises(ImportFailed) as failed:
        await run_import(db, [("stores.csv", stores), ("terminals.csv", terminals)])
    found = {(e.file, e.line, e.column) for e in failed.value.errors}
    assert found == {
        ("stores.csv", 3, "name"),
        ("stores.csv", 3, "timezone"),
        ("stores.csv", 4, "code"),
        ("terminals.csv", 3, "poiid"),
        ("terminals.csv", 4, "lan_port"),
        ("terminals.csv", 4, "store_code"),
        ("terminals.csv", 5, "store_code"),
        ("terminals.csv", 6, "mac"),
        ("terminals.csv", 6, "cloud_enabled"),
        ("terminals.csv", 6, "lan_host"),
        ("terminals.csv", 6, "lan_port"),  # checked although the row had others
    }
    assert "already appears at terminals.csv:2" in str(failed.value.errors[3])
    assert await count(db, Store) == 0 and await count(db, Terminal) == 0


async def test_spreadsheet_formats_bom_crlf_semicolons_quotes(db):
    stores = '\ufeffcode;name;region;timezone;tags\r\nS-1;"Café; ""Main"" St";North;Europe/Paris;a;b\r\n'
    # a quoted field with a line break inside: the next record's line number still counts lines
    stores = stores.replace(";a;b", ';"a;b"') + 'S-2;"Two\r\nlines";South;UTC;\r\n'
    summary = await run_import(db, [("stores.csv", stores.encode("utf-8"))])
    assert summary.stores.created == 2
    async with db.sessionmaker() as session:
        store = await session.scalar(select(Store).where(Store.code == "S-1"))
    assert store.name == 'Café; "Main" St' and store.tags == "a;b"

    bad = 'code;name;timezone\r\nS-3;"Three\r\nlines";UTC\r\nS-4;Four;Bad/Zone\r\n'
    with pytest.raises(ImportFailed) as failed:
        await run_import(db, [("s.csv", bad.encode())])
    assert [(e.line, e.column) for e in failed.value.errors] == [(4, "timezone")]


async def test_not_utf8_and_missing_columns_are_named(db):
    with pytest.raises(ImportFailed) as failed:
        await run_import(
            db,
            [
                ("latin1.csv", "code,name\nS-1,Caf\xe9\n".encode("latin-1")),
                ("t.csv", b"poiid,model\nX-1,M\n"),
            ],
        )
    messages = [str(e) for e in failed.value.errors]
    assert messages[0].startswith("latin1.csv:2: file is not UTF-8")
    assert "store_code" in messages[1] and "required column missing" in messages[1]


async def test_reimport_updates_moves_and_records_address_changes(db):
    await run_import(db, sample_files())
    _stores, terminals = sample_files()
    text = terminals[1].decode()
    # Move the first terminal to S-0002 and change its LAN address and MAC.
    first = text.splitlines()[1]
    moved = first.replace("S-0001,", "S-0002,", 1).replace("127.1.1.1", "127.1.1.99").replace(":5c", ":5d")
    summary = await run_import(db, [("terminals.csv", text.replace(first, moved).encode())])
    assert (summary.terminals.created, summary.terminals.updated, summary.terminals.unchanged) == (0, 1, 245)
    assert summary.monitors["updated"] >= 1 and summary.monitors["created"] == 0
    async with db.sessionmaker() as session:
        events = (await session.scalars(select(TerminalEvent).order_by(TerminalEvent.kind))).all()
        tcp = await session.scalar(select(Monitor).where(Monitor.key == f"t{events[0].terminal_id}:tcp"))
    assert [e.kind for e in events] == ["address_changed", "moved_store"]
    assert events[0].detail["lan_host"] == {"from": "127.1.1.1", "to": "127.1.1.99"}
    assert tcp.target == "127.1.1.99:2000"  # same monitor (history kept), new target


async def test_monitors_follow_integration_and_profile(db):
    await run_import(db, sample_files())
    async with db.sessionmaker() as session:
        kinds = dict((await session.execute(select(Monitor.kind, func.count()).group_by(Monitor.kind))).all())
        ingenico_store = await session.scalar(
            select(Store).where(Store.network_profile == "fullsteam-ingenico")
        )
        targets = set(
            await session.scalars(
                select(Monitor.target).where(
                    Monitor.store_id == ingenico_store.id, Monitor.terminal_id.is_(None)
                )
            )
        )
        phases = set(await session.scalars(select(Monitor.phase_ms)))
    assert set(kinds) == {"cloud", "dns", "tcp", "paynt_epos", "tls"}
    assert targets == {
        "prodssl.protectedtransactions.com",
        "prodssl.protectedtransactions.com:443",
        "temterminalsnar01.icloud.ingenico.com",
        "temterminalsnar01.icloud.ingenico.com:7003",
    }
    assert len(phases) > 400  # spread over the interval, not all at second 0


async def test_cloud_state_is_set_from_the_inventory(db):
    await run_import(db, sample_files())
    async with db.sessionmaker() as session:
        rows = (
            await session.execute(select(Terminal.integration, Terminal.cloud_enabled, Terminal.cloud_state))
        ).all()
    for integration, enabled, state in rows:
        assert state == ("unknown" if integration != "local" and enabled else "not_enabled")


async def test_large_import_copies_rows_and_keys_monitors_by_the_right_terminal(db):
    """Past 500 rows PostgreSQL takes stores, terminals and monitors by COPY and reads the new
    ids back: each monitor belongs to its own terminal and store; a re-import changes nothing."""
    from bench.fleetgen import generate

    stores_csv, terminals_csv = generate(60, 10, seed=7)
    files = [("stores.csv", stores_csv), ("terminals.csv", terminals_csv)]
    dry = await run_import(db, files, dry_run=True)
    assert dry.terminals.created == 600 and dry.monitors["created"] > 600
    assert (await count(db, Store), await count(db, Terminal), await count(db, Monitor)) == (0, 0, 0)

    summary = await run_import(db, files)
    assert (summary.stores.created, summary.terminals.created) == (60, 600)
    assert summary.monitors == dry.monitors
    async with db.sessionmaker() as session:
        rows = (
            await session.execute(
                select(
                    Monitor.key,
                    Monitor.target,
                    Monitor.store_id,
                    Terminal.id,
                    Terminal.store_id,
                    Terminal.lan_host,
                    Terminal.poiid,
                    Monitor.kind,
                ).join(Terminal, Monitor.terminal_id == Terminal.id)
            )
        ).all()
        created = set(await session.scalars(select(Terminal.created_at)))
    assert len(rows) > 600
    for key, target, store_id, terminal_id, terminal_store, lan_host, poiid, kind in rows:
        assert key == f"t{terminal_id}:{kind}" and store_id == terminal_store
        assert target == poiid if kind == "cloud" else target.startswith(f"{lan_host}:")
    assert None not in created

    again = await run_import(db, files)
    assert (again.terminals.unchanged, again.stores.unchanged) == (600, 60)
    assert again.monitors == {"created": 0, "updated": 0, "deleted": 0}


async def test_import_leaves_the_garbage_collector_as_it_found_it(db):
    import gc

    await run_import(db, sample_files(), dry_run=True)
    assert gc.isenabled()
    with pytest.raises(ImportFailed):
        await run_import(db, [("terminals.csv", b"store_code,poiid\nS-404,P-1\n")])
    assert gc.isenabled()
    gc.disable()
    try:
        await run_import(db, sample_files(), dry_run=True)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_reimport_of_some_columns_compares_only_those(db):
    """A file with fewer columns updates what it gives and leaves the rest; a terminal whose
    only change is its store is updated (moved), not taken as unchanged."""
    await run_import(db, sample_files())
    async with db.sessionmaker() as session:
        first, second = (await session.execute(select(Terminal).order_by(Terminal.id).limit(2))).scalars()
        codes = dict((await session.execute(select(Store.id, Store.code))).all())
    other = next(code for sid, code in codes.items() if sid != first.store_id)
    rows = [
        "store_code,poiid,label",
        f"{codes[first.store_id]},{first.poiid},{first.label}",  # unchanged
        f"{codes[second.store_id]},{second.poiid},Renamed till",  # label changed
    ]
    summary = await run_import(db, [("terminals.csv", "\n".join(rows).encode())])
    assert (summary.terminals.updated, summary.terminals.unchanged) == (1, 1)
    moved = [
        "store_code,poiid,label,lan_host",
        f"{other},{first.poiid},{first.label},{first.lan_host or ''}",
    ]
    summary = await run_import(db, [("terminals.csv", "\n".join(moved).encode())])
    assert (summary.terminals.updated, summary.terminals.unchanged) == (1, 0)
    async with db.sessionmaker() as session:
        after = {t.id: t for t in (await session.scalars(select(Terminal))).all()}
    assert after[second.id].label == "Renamed till" and after[second.id].mac == second.mac
    assert codes[after[first.id].store_id] == other and after[first.id].lan_port == first.lan_port
