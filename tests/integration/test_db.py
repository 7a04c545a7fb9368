from cms.app.db.migrate import applied_version, available_migrations, latest_version, migrate


async def test_migrations_are_applied_once(db) -> None:
    async with db.acquire() as conn:
        assert await applied_version(conn) == latest_version()
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT code FROM locales WHERE is_default") == "en"


async def test_audit_log_is_append_only(db) -> None:
    import asyncpg
    import pytest

    async with db.acquire() as conn:
        await conn.execute("INSERT INTO audit_log (actor, action, outcome) VALUES ('{}', 'x.y', 'success')")
        with pytest.raises(asyncpg.RaiseError):
            await conn.execute("DELETE FROM audit_log")


async def test_readyz_is_503_until_migrations_are_current(services, tmp_path) -> None:
    import asyncpg
    import httpx
    from asgi_lifespan import LifespanManager

    from cms.app.config import load_settings
    from cms.app.server import create_management_app
    from tests.conftest import clone_database

    url = await clone_database(services)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    app = create_management_app(load_settings({"CMS_DATA_DIR": str(tmp_path)}), url, services.redis_url)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://m") as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["checks"]["migrations"].startswith("at 0")
            conn = await asyncpg.connect(url)
            try:
                assert await migrate(conn) == [v for v, _, _ in available_migrations()]
            finally:
                await conn.close()
            assert (await client.get("/readyz")).status_code == 200


async def test_concurrent_migrators_apply_each_migration_once(services) -> None:
    import asyncio

    import asyncpg

    from tests.conftest import clone_database

    url = await clone_database(services)
    conn = await asyncpg.connect(url)
    try:
        # start from scratch: drop everything the template had
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()

    async def run() -> list[int]:
        c = await asyncpg.connect(url)
        try:
            return await migrate(c)
        finally:
            await c.close()

    results = await asyncio.gather(*[run() for _ in range(4)])
    assert sorted(v for r in results for v in r) == [v for v, _, _ in available_migrations()]
