"""
16 FRONTEND and 16 ML connections for 30 seconds against the real daemon,
mixing one-row and batched inserts, selects, updates and deletes across
tables. Afterwards: no unexpected error, every acknowledged write present
exactly once, every connection's writes applied in the order it sent them,
and the daemon's memory under a stated bound.
"""

import os
import random
import signal
import threading
import time
from decimal import Decimal

import psutil
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.protocol.enums import Role, SQLTable

from . import rows
from .daemon import TOKENS, Daemon
from .support import blocking_query, fresh_database
from .test_daemon import _url

SECONDS = float(os.environ.get("TRADEHUB_STRESS_SECONDS", "30"))
CONNECTIONS_PER_ROLE = 16
# The stated bound on the daemon's resident memory during the stress run.
RSS_BOUND = 256 * 1024 * 1024


def frontend_worker(port, number, deadline, model_id):
    """Ticks (one-row and batches), an order life cycle, and a position rewritten with a counter."""
    rng = random.Random(number)
    symbol = f"FE{number:02d}"
    acked_ticks, live_orders, deleted_orders = [], {}, set()
    seq = writes = 0
    with BlockingClient(
        "127.0.0.1", port, Role.FRONTEND, TOKENS["TRADEHUB_FRONTEND_TOKEN"], f"stress-fe-{number}"
    ) as hub:
        state = rows.position(symbol=symbol, qty=Decimal(0), side="long")
        hub.insert(SQLTable.POSITION, [state])
        while time.monotonic() < deadline:
            batch = []
            for _ in range(1 if rng.random() < 0.5 else rng.randint(2, 20)):
                seq += 1
                batch.append(rows.tick(seq, symbol=symbol, ts=rows.ts(seq * 1000)))
            assert hub.insert(SQLTable.MARKET_TICK, batch).affected == len(batch)
            acked_ticks += [t["seq"] for t in batch]
            roll = rng.random()
            if roll < 0.3:
                order = rows.order(client_order_id=f"{symbol}-{seq}", symbol=symbol)
                hub.insert(SQLTable.ORDER, [order])
                live_orders[order["client_order_id"]] = order
            elif roll < 0.5 and live_orders:
                key = rng.choice(sorted(live_orders))
                order = dict(live_orders[key], status="canceled")
                hub.update(SQLTable.ORDER, [order])
                if rng.random() < 0.5:
                    hub.delete(SQLTable.ORDER, [{"client_order_id": key}])
                    deleted_orders.add(key)
                    del live_orders[key]
                else:
                    live_orders[key] = order
            elif roll < 0.6:
                last = batch[-1]
                found = hub.select(
                    SQLTable.MARKET_TICK, keys=[{"symbol": symbol, "ts": last["ts"], "seq": last["seq"]}]
                )
                assert found.rows == [last], "a connection must read its own acknowledged write"
            writes += 1
            hub.update(SQLTable.POSITION, [dict(state, qty=Decimal(writes))])
    return {"symbol": symbol, "ticks": acked_ticks, "orders": live_orders, "deleted": deleted_orders, "writes": writes}


def ml_worker(port, number, deadline, model_id):
    """Predictions (one-row and batches, some deleted) and a label rewritten with a counter."""
    rng = random.Random(1000 + number)
    symbol = f"ML{number:02d}"
    acked, deleted = set(), set()
    writes = step = 0
    with BlockingClient("127.0.0.1", port, Role.ML, TOKENS["TRADEHUB_ML_TOKEN"], f"stress-ml-{number}") as hub:
        state = rows.label(symbol=symbol, label_value=0.0)
        hub.insert(SQLTable.LABELED_DATA, [state])
        while time.monotonic() < deadline:
            batch = []
            for _ in range(1 if rng.random() < 0.5 else rng.randint(2, 20)):
                step += 1
                batch.append(rows.prediction(model_id, symbol=symbol, ts=rows.ts(step)))
            hub.insert(SQLTable.ML_PREDICTION, batch)
            acked |= {p["id"] for p in batch}
            if rng.random() < 0.2:
                victim = batch[0]["id"]
                hub.delete(SQLTable.ML_PREDICTION, [{"id": victim}])
                acked.discard(victim)
                deleted.add(victim)
            if rng.random() < 0.2:
                page = hub.select(SQLTable.ML_PREDICTION, symbol=symbol, since=rows.ts(step), limit=5)
                assert [p["id"] for p in page.rows] == [p["id"] for p in batch[-1:] if p["id"] in acked]
            writes += 1
            hub.update(SQLTable.LABELED_DATA, [dict(state, label_value=float(writes))])
    return {"symbol": symbol, "predictions": acked, "deleted": deleted, "writes": writes, "label": state["id"]}


class StressTests(TestCase):
    timeout = SECONDS + 150

    async def test_thirty_two_connections_mixing_every_command(self):
        dsn = await fresh_database(self)
        daemon = Daemon(self.mktemp(), env={"DATABASE_URL": _url(dsn), "TRADEHUB_DB_POOL_MAX": "8"}).start()
        self.addCleanup(daemon.kill)
        await deferToThread(daemon.wait_for, "ready: ")
        model = rows.model()
        account = rows.account()

        def setup():
            with BlockingClient("127.0.0.1", daemon.ml_port, Role.ML, TOKENS["TRADEHUB_ML_TOKEN"]) as hub:
                hub.insert(SQLTable.ML_MODEL, [model])
            with BlockingClient(
                "127.0.0.1", daemon.frontend_port, Role.FRONTEND, TOKENS["TRADEHUB_FRONTEND_TOKEN"]
            ) as hub:
                hub.insert(SQLTable.ACCOUNT, [account])

        await deferToThread(setup)
        process = psutil.Process(daemon.process.pid)
        peak = [process.memory_info().rss]
        sampling = threading.Event()

        def sample():
            while not sampling.wait(0.5):
                peak.append(process.memory_info().rss)

        threading.Thread(target=sample, daemon=True).start()
        reactor.suggestThreadPoolSize(2 * CONNECTIONS_PER_ROLE + 4)
        self.addCleanup(reactor.suggestThreadPoolSize, 10)
        deadline = time.monotonic() + SECONDS
        work = [
            deferToThread(frontend_worker, daemon.frontend_port, n, deadline, model["id"])
            for n in range(CONNECTIONS_PER_ROLE)
        ]
        work += [
            deferToThread(ml_worker, daemon.ml_port, n, deadline, model["id"]) for n in range(CONNECTIONS_PER_ROLE)
        ]
        results = await gatherResults(work)
        sampling.set()
        frontends, mls = results[:CONNECTIONS_PER_ROLE], results[CONNECTIONS_PER_ROLE:]

        def stored():
            ticks = blocking_query(dsn, "SELECT symbol, seq FROM market_tick")
            orders = blocking_query(dsn, 'SELECT client_order_id, status FROM "order"')
            positions = blocking_query(dsn, "SELECT symbol, qty FROM position")
            predictions = blocking_query(dsn, "SELECT id::text FROM ml_prediction")
            labels = blocking_query(dsn, "SELECT symbol, label_value FROM labeled_data")
            return ticks, orders, positions, predictions, labels

        ticks, orders, positions, predictions, labels = await deferToThread(stored)
        for result in frontends:
            mine = sorted(seq for symbol, seq in ticks if symbol == result["symbol"])
            self.assertEqual(mine, sorted(result["ticks"]), f"{result['symbol']}: ticks stored exactly once")
        self.assertEqual(len(ticks), sum(len(r["ticks"]) for r in frontends))
        expected_orders = {key: order["status"] for r in frontends for key, order in r["orders"].items()}
        self.assertEqual(dict(orders), expected_orders)
        self.assertEqual(
            dict(positions), {r["symbol"]: Decimal(r["writes"]) for r in frontends}, "last write wins: in order"
        )
        self.assertEqual({p[0] for p in predictions}, set().union(*(r["predictions"] for r in mls)))
        self.assertEqual(dict(labels), {r["symbol"]: float(r["writes"]) for r in mls}, "last write wins: in order")
        total = sum(len(r["ticks"]) for r in frontends) + sum(len(r["predictions"]) for r in mls)
        self.assertGreater(total, 1000, "the stress run did too little to prove anything")
        self.assertTrue(all(r["writes"] > 0 for r in results), "every connection must have worked")
        self.assertLess(max(peak), RSS_BOUND, f"daemon RSS peaked at {max(peak) / 2**20:.0f} MiB")
        print(
            f"\nstress: {SECONDS:g}s, 32 connections, {total} rows acknowledged, "
            f"{sum(r['writes'] for r in results)} state rewrites; daemon RSS peak {max(peak) / 2**20:.0f} MiB"
        )
        daemon.signal(signal.SIGTERM)
        self.assertEqual(await deferToThread(daemon.wait), 0)
