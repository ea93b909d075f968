"""
The ends of each integer range round-trip through the hub: a bound parameter
is cast as CAST(%s AS type), since psycopg2 writes a negative number as
" -9223372036854775808" and "-x::bigint" would cast x before negating it
(out of range at the lowest bigint).
"""

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.protocol.enums import Role, SQLTable

from . import rows, wire
from .hub import start_hub, table_registry

LOWEST, HIGHEST = -(2**63), 2**63 - 1


class IntegerEndsTests(TestCase):
    timeout = 60

    async def test_the_lowest_and_highest_bigint_are_stored_and_found_by_key(self):
        hub = await start_hub(self, table_registry)

        def work():
            with BlockingClient("127.0.0.1", hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN) as client:
                ticks = [dict(rows.tick(1), seq=LOWEST), dict(rows.tick(2), seq=HIGHEST)]
                for tick in ticks:
                    # One row a request: the one-row statement (VALUES), not the batch's unnest.
                    client.insert(SQLTable.MARKET_TICK, [tick])
                keys = [{name: tick[name] for name in ("symbol", "ts", "seq")} for tick in ticks]
                return [client.select(SQLTable.MARKET_TICK, keys=[key]).rows for key in keys]

        found = await deferToThread(work)
        self.assertEqual([[row["seq"] for row in page] for page in found], [[LOWEST], [HIGHEST]])
