import pytest

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
    from tests.support import clone_database

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

    from tests.support import clone_database

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


async def test_rows_of_an_article_are_compressed_only_as_much_as_two_to_a_page_needs(db) -> None:
    """toast_tuple_target (migrations 0015, 0016): a published document of up to ~4 KB stays as it is
    (two fit a page), a larger one is compressed inline until it fits; an entry's data over ~1 KB is
    compressed (its one copy: published_data is not stored while it is the same); versions at
    PostgreSQL's default."""
    async with db.acquire() as conn:
        options = {r["relname"]: r["reloptions"] or [] for r in await conn.fetch(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('published_documents', 'entries', 'entry_versions')")}
        assert "toast_tuple_target=4080" in options["published_documents"]
        assert "toast_tuple_target=1024" in options["entries"]
        assert not any(o.startswith("toast_tuple_target") for o in options["entry_versions"])
        body = ("lorem ipsum dolor sit amet " * 100).encode()  # 2.7 KB, compresses well
        await conn.execute("INSERT INTO content_types (id, name, fields) VALUES ('t', 'T', '[]')")
        ids = ["small", "double", "large"]
        await conn.execute(
            "INSERT INTO entries (id, type, data, version) SELECT id, 't', '{}', 1 FROM unnest($1::text[]) AS id", ids)
        for entry_id, size in zip(ids, (1, 2, 10), strict=True):
            await conn.execute(
                "INSERT INTO published_documents (entry_id, locale, type, version, body, etag, vals, search, "
                "published_at, updated_at, created_at) VALUES ($1, 'en', 't', 1, $2, 'e', '{}', ''::tsvector, "
                "now(), now(), now())", entry_id, body * size,
            )
        rows = {r["entry_id"]: r for r in await conn.fetch(
            "SELECT entry_id, pg_column_compression(body) AS method, pg_column_size(body) AS size "
            "FROM published_documents WHERE type = 't'"
        )}
        assert rows["small"]["method"] is None and rows["small"]["size"] >= len(body)
        assert rows["double"]["method"] == "pglz" and rows["double"]["size"] < 2 * len(body)
        assert rows["large"]["method"] == "pglz" and rows["large"]["size"] < len(body)
        article = {"title": {"en": "T"}, "body": {"en": "lorem ipsum dolor sit amet " * 80}}  # ~2.2 KB
        await conn.execute("INSERT INTO entries (id, type, data, version) VALUES ('article', 't', $1, 1)", article)
        method, size = await conn.fetchrow(
            "SELECT pg_column_compression(data), pg_column_size(data) FROM entries WHERE id = 'article'")
        assert method == "pglz" and size < 1024


async def test_json_values_round_trip_through_the_binary_codecs(db) -> None:
    """json/jsonb travel in binary format, arrays of them too (the bulk writes' unnest($n::jsonb[]))."""
    values = [{"q": 'say "hi"', "b": "back\\slash", "u": "Zürich ✓", "n": None, "l": [1, 2.5, True]}, "text", 3, None]
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT $1::jsonb", values[0]) == values[0]
        assert await conn.fetchval("SELECT $1::json", values[0]) == values[0]
        rows = await conn.fetch("SELECT v, jsonb_typeof(v) AS t FROM unnest($1::jsonb[]) AS v", values)
        assert [r["v"] for r in rows] == values
        assert [r["t"] for r in rows] == ["object", "string", "number", None]  # None is SQL NULL
        assert await conn.fetchval("SELECT $1::jsonb->>'u'", values[0]) == "Zürich ✓"


async def test_a_by_slug_read_takes_the_slug_index_before_the_table_is_ever_analyzed(db) -> None:
    """Prepared by-slug reads on a never-analyzed table (a new site, a first import): the generic
    plan reads the one matching index entry, not the type's documents in publish order (migration 0021)."""
    from cms.app.publishing import repository

    async with db.acquire() as conn:
        await conn.execute("INSERT INTO content_types (id, name, fields) VALUES ('t', 'T', '[]')")
        await conn.execute(
            "INSERT INTO entries (id, type, data, version) SELECT 'e' || n, 't', '{}', 1 FROM generate_series(1, 600) n")
        await conn.execute(
            "INSERT INTO published_documents (entry_id, locale, type, version, slug, body, etag, vals, search, "
            "published_at, updated_at, created_at) SELECT 'e' || n, 'en', 't', 1, 's' || n, '{}', 'e', '{}', "
            "''::tsvector, now() - n * interval '1 s', now(), now() FROM generate_series(1, 600) n")
        if conn.get_server_version().major < 18:  # an external server (the embedded one is 18)
            pytest.skip("pg_clear_relation_stats needs PostgreSQL 18")
        await conn.execute("SELECT pg_clear_relation_stats('public', 'published_documents')")
        for column in ("type", "locale", "slug", "published_at", "entry_id"):
            await conn.execute("SELECT pg_clear_attribute_stats('public', 'published_documents', $1, false)", column)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            assert (await repository.document_by_slug(conn, "t", "en", "s300"))["entry_id"] == "e300"
            statement = await conn.prepare(
                "EXPLAIN (ANALYZE, COSTS OFF) SELECT entry_id FROM published_documents WHERE type = $1 AND "
                "locale = $2 AND slug = $3 ORDER BY published_at, entry_id LIMIT 1")
            plan = "\n".join(r[0] for r in await statement.fetch("t", "en", "s300"))
        finally:
            await conn.execute("RESET plan_cache_mode")
        assert "published_documents_slug" in plan and "Rows Removed by Filter" not in plan, plan


async def test_a_document_whose_links_alone_changed_is_written_again(db) -> None:
    """Same bytes, other includable links (a component's sub-field changed from a reference to json):
    the row is rewritten, not left with links that no longer match the type."""
    from datetime import UTC, datetime

    from cms.app.publishing import repository

    at = datetime(2026, 12, 7, tzinfo=UTC)
    async with db.acquire() as conn:
        await conn.execute("INSERT INTO content_types (id, name, fields) VALUES ('t', 'T', '[]')")
        await conn.execute("INSERT INTO entries (id, type, data, version) VALUES ('e1', 't', '{}', 1)")
        doc = ("e1", "en", "t", 1, None, b'{"id":"e1"}', "etag", {}, "", at, at, at, None, [["c", 1, 5, "x"]])
        assert await repository.replace_documents_many(conn, ["e1"], [doc]) == {("e1", "en")}
        assert await repository.replace_documents_many(conn, ["e1"], [doc]) == set()  # the same: left alone
        assert await repository.replace_documents_many(conn, ["e1"], [(*doc[:13], [])]) == {("e1", "en")}
        assert await conn.fetchval("SELECT links FROM published_documents WHERE entry_id = 'e1'") == []


async def test_migration_0023_replaces_the_btree_of_an_indexed_list_with_a_gin_index(db) -> None:
    """A site whose indexed list field got a btree over the whole list (before 0023): the migration
    drops it and builds the GIN index query/indexes.py list_ddl names, so long lists publish."""
    import msgspec

    from cms.app.query.indexes import index_ddl, list_ddl

    sql = next(text for version, _, text in available_migrations() if version == 23)
    fields = [{"id": "tags", "type": "reference", "to": ["tag"], "list": True, "indexed": True},
              {"id": "label", "type": "text", "indexed": True}]
    await db.execute("INSERT INTO content_types (id, name, fields) VALUES ('tagged', 'Tagged', $1::text::jsonb)",
                     msgspec.json.encode(fields).decode())
    await db.execute(index_ddl("tagged", "tags"))  # what ensure_indexes built before
    await db.execute(index_ddl("tagged", "label"))

    async def indexes() -> set[str]:
        rows = await db.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'published_documents'"
                              " AND indexname LIKE '%tagged%'")
        return {r["indexname"] for r in rows}

    assert await indexes() == {"pd_idx_tagged_tags", "pd_idx_tagged_label"}
    await db.execute(sql)
    assert await indexes() == {"pd_gin_tagged_tags", "pd_idx_tagged_label"}
    ddl = await db.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'pd_gin_tagged_tags'")
    assert "USING gin" in ddl and "jsonb_path_ops" in ddl
    # the very index list_ddl builds for a type saved now (name and expression)
    await db.execute("DROP INDEX pd_gin_tagged_tags")
    await db.execute(list_ddl("tagged", "tags"))
    assert await db.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'pd_gin_tagged_tags'") == ddl
    # Saving the type drops a btree over a list too (a single reference made a list had one).
    from cms.app.query.indexes import ensure_indexes
    from cms.app.schema.model import content_type_from_row

    await db.execute(index_ddl("tagged", "tags"))
    async with db.acquire() as conn:
        ct = content_type_from_row(await conn.fetchrow("SELECT * FROM content_types WHERE id = 'tagged'"))
        await ensure_indexes(conn, ct, concurrently=False)
    assert "pd_idx_tagged_tags" not in await indexes() and "pd_gin_tagged_tags" in await indexes()


async def test_rewritten_tables_are_vacuumed_at_two_percent_dead(db) -> None:
    """migration 0024: a schema change rewrites every document and entry of a type; autovacuum
    comes at 2% dead rows instead of PostgreSQL's 20%, so the old versions' space is reused during
    the rewrite instead of the table growing by a fifth or more."""
    rows = await db.fetch(
        """SELECT c.relname, c.reloptions, t.reloptions AS toast FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid
            WHERE c.relname IN ('published_documents', 'entries')""")
    assert {r["relname"]: (r["reloptions"], r["toast"]) for r in rows} == {
        "published_documents": (["toast_tuple_target=4080", "autovacuum_vacuum_scale_factor=0.02"],
                                ["autovacuum_vacuum_scale_factor=0.02"]),
        "entries": (["toast_tuple_target=1024", "autovacuum_vacuum_scale_factor=0.02"], ["autovacuum_vacuum_scale_factor=0.02"]),
    }


async def test_migration_0025_registers_unique_numbers_in_postgresqls_text(db) -> None:
    """Registrations written in Python's old text (1.5e-07, 1e+23's binary digits) take the text a
    schema change gives them; two entries that already share a number keep one registration each."""
    import msgspec

    sql = next(text for version, _, text in available_migrations() if version == 25)
    fields = [{"id": "weight", "type": "number", "unique": True}, {"id": "code", "type": "text", "unique": True}]
    await db.execute("INSERT INTO content_types (id, name, fields) VALUES ('thing', 'Thing', $1::text::jsonb)",
                     msgspec.json.encode(fields).decode())
    registered = [("t1", 1.5e-07, "1.5e-07"), ("t2", 1e23, str(int(1e23))), ("t3", 2.5, "2.5"),
                  ("t4", 1.5e-07, "0.00000015"), ("t5", 7e-07, "7e-07"), ("t6", 7e-07, "7E-7")]
    for entry_id, number, text in registered:
        data = msgspec.json.encode({"weight": {"_": number}, "code": {"_": "1e-07"}}).decode()
        await db.execute("INSERT INTO entries (id, type, data, version) VALUES ($1, 'thing', $2::text::jsonb, 1)",
                         entry_id, data)
        await db.execute("INSERT INTO entry_unique_values (type, field, locale, value, entry_id)"
                         " VALUES ('thing', 'weight', '_', $1, $2)", text, entry_id)
    await db.execute("INSERT INTO entry_unique_values (type, field, locale, value, entry_id)"
                     " VALUES ('thing', 'code', '_', '1e-07', 't1')")
    await db.execute(sql)
    rows = await db.fetch("SELECT entry_id, field, value FROM entry_unique_values WHERE type = 'thing' ORDER BY 1, 2")
    assert [tuple(r) for r in rows] == [
        ("t1", "code", "1e-07"),  # text: as written
        ("t1", "weight", "1.5e-07"),  # t4 holds 0.00000015 already: t1 keeps its own
        ("t2", "weight", "100000000000000000000000"),
        ("t3", "weight", "2.5"),
        ("t4", "weight", "0.00000015"),
        ("t5", "weight", "0.0000007"),  # t5 and t6 shared 7e-07: the first takes the new form
        ("t6", "weight", "7E-7"),
    ]
