from cms.app.db.migrate import applied_version, latest_version, migrate


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
