"""The pages' small caches under many users at once (app.dashboard.queries)."""

import asyncio

import pytest

from app.dashboard import queries


@pytest.fixture(autouse=True)
def empty_caches():
    queries.clear_caches()
    yield
    queries.clear_caches()


async def test_a_value_expiring_under_many_users_is_loaded_once_for_all():
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # the query: everyone else asks meanwhile
        return 42

    values = await asyncio.gather(*(queries._cached(("summary",), load, 1.0) for _ in range(50)))
    assert values == [42] * 50 and loads == 1

    fresh = await queries._cached(("summary",), load, 1.0, fresh=True)  # a change was published
    assert fresh == 42 and loads == 2


async def test_when_the_load_fails_those_waiting_load_it_themselves():
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        if loads == 1:
            raise ConnectionError("the database went away")
        return loads

    first, *others = await asyncio.gather(
        *(queries._cached(("rows",), load, 1.0) for _ in range(5)), return_exceptions=True
    )
    assert isinstance(first, ConnectionError)
    assert all(isinstance(v, int) for v in others)
