import asyncpg


async def test_real_redis_roundtrip(real_redis, redis_prefix):
    await real_redis.set(f"{redis_prefix}k", b"v")
    assert await real_redis.get(f"{redis_prefix}k") == b"v"


async def test_pg_schema_is_isolated(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1), (2)")
        assert await conn.fetchval("SELECT sum(x) FROM t") == 3
        schema = await conn.fetchval("SELECT current_schema()")
        assert schema.startswith("t_")
    finally:
        await conn.close()
