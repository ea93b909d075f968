"""
C++ ↔ hub ↔ PostgreSQL ↔ hub ↔ C++ and Python, over real loopback sockets:
the generated header is current and compiles warning-free; a C++ program
round-trips every table; Python reads exactly what C++ wrote and the reverse;
a C++ subscriber follows what the Python ML client writes.
"""

import subprocess
from decimal import Decimal

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.client import BlockingClient
from tradehub.codegen import cpp_header
from tradehub.protocol.enums import FLAG_MORE, ErrorCode, MessageType, Role, SQLCommand, SQLTable
from tradehub.protocol.framing import FrameDecoder
from tradehub.protocol.messages import ERROR, HELLO_ACK, SHUTDOWN_ACK, SUBSCRIBED, encode_frame
from tradehub.protocol.tables import LAYOUTS
from tradehub.schema import Timestamp

from . import rows, wire
from .cpp import CLIENTS, SOURCES, Driven, compile_program, row_literal
from .hub import start_hub, table_registry
from .support import blocking_query
from .test_clients import HeldRoute


class GeneratedHeaderTests(SynchronousTestCase):
    def test_committed_header_is_what_the_generator_writes(self):
        self.assertEqual(
            cpp_header.OUTPUT.read_text(),
            cpp_header.render(),
            "clients/cpp/tradehub_protocol.hpp is out of date: run python -m tradehub.codegen.cpp_header",
        )

    def test_decoding_is_bounds_checked(self):
        binary = compile_program(SOURCES / "hubcli.cpp", "hubcli")
        result = subprocess.run([str(binary), "-", "0", "fe", "-", "decode-checks"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertNotIn("ACCEPTED", result.stdout)


def _plan():
    """
    What the C++ program does with each table: (table, row, changed row or
    None, whether it deletes the row), and rows it inserts first. Rows that
    others refer to (the account, the model, the filled order) are kept.
    """
    filled = rows.order(qty=Decimal("100"))
    model = rows.model()
    order = rows.order()
    features = rows.features()
    plan = [
        (SQLTable.ACCOUNT, rows.account(), {"cash": Decimal("-5.5"), "status": "ACCOUNT_UPDATED"}, False),
        (SQLTable.ASSET, rows.asset(), {"status": "inactive"}, True),
        (SQLTable.ORDER, order, {"status": "canceled", "canceled_at": rows.ts(77)}, True),
        (SQLTable.POSITION, rows.position(), {"qty": Decimal("-3"), "side": "short"}, True),
        (SQLTable.TRADE, rows.trade(filled["client_order_id"]), None, False),
        (SQLTable.MARKET_TICK, rows.tick(1), {"price": Decimal("190.000000001")}, True),
        (SQLTable.ML_MODEL, model, {"status": "ready", "metrics": '{"auc": 0.7}'}, False),
        (SQLTable.ML_PREDICTION, rows.prediction(model["id"]), {"confidence": 0.25}, True),
        (SQLTable.LABELED_DATA, rows.label(), {"label_value": -1.0}, True),
        (SQLTable.FEATURE_SET, features, {"features": [0.0, 0.5, -1.0]}, True),
        (SQLTable.TECHNICAL_INDICATOR, rows.indicator(), {"values": [1.0]}, True),
    ]
    return [(SQLTable.ORDER, filled)], [(t, r, dict(r, **c) if c else None, d) for t, r, c, d in plan]


def roundtrip_source(setup, plan):
    body = []
    for index, (table, row) in enumerate(setup):
        spec = LAYOUTS[table]
        body.append(row_literal(spec.row, row, f"setup{index}"))
        body.append(f"    fe.insert<SQLTable::{table.name}>({{setup{index}}});")
    for index, (table, row, changed, delete) in enumerate(plan):
        spec = LAYOUTS[table]
        role = "fe" if LAYOUTS[table].table.id.value <= 6 else "ml"
        body.append(row_literal(spec.row, row, f"row{index}"))
        body.append(row_literal(spec.row, changed or row, f"changed{index}"))
        body.append(
            f"    roundtrip<SQLTable::{table.name}>({role}, row{index}, changed{index}, "
            f'{"true" if changed else "false"}, {"true" if delete else "false"}, "{table.name}");'
        )
    return f"""#include <cstdlib>
#include <iostream>

#include "tradehub_client.hpp"

using namespace tradehub;

static void check(bool ok, const char* table, const char* what) {{
    if (!ok) {{
        std::cout << "MISMATCH " << table << ": " << what << std::endl;
        std::exit(1);
    }}
}}

template <SQLTable T>
void roundtrip(Client& hub, const typename TableTraits<T>::Row& row, const typename TableTraits<T>::Row& changed,
               bool update, bool remove, const char* name) {{
    auto inserted = hub.insert<T>({{row}});
    check(inserted.affected == 1 && inserted.rows.empty() && inserted.written.size() == 1, name, "insert");
    typename TableTraits<T>::Select by_key;
    by_key.keys.push_back(key_of(row));
    auto found = hub.select<T>(by_key);
    check(found.rows.size() == 1 && found.rows[0] == row, name, "select after insert");
    if (update) {{
        auto updated = hub.update<T>({{changed}}, /*echo=*/true);
        check(updated.affected == 1 && updated.rows.size() == 1 && updated.rows[0] == changed, name, "update");
        found = hub.select<T>(by_key);
        check(found.rows.size() == 1 && found.rows[0] == changed, name, "select after update");
    }}
    if (remove) {{
        check(hub.remove<T>({{key_of(row)}}).affected == 1, name, "delete");
        check(hub.select<T>(by_key).rows.empty(), name, "select after delete");
    }}
    std::cout << "ROUNDTRIP " << name << " OK" << std::endl;
}}

int main(int argc, char** argv) {{
    (void)argc;
    std::uint16_t port = static_cast<std::uint16_t>(std::atoi(argv[1]));
    Client fe("127.0.0.1", port, Role::FRONTEND, argv[2], "cpp-roundtrip-frontend");
    Client ml("127.0.0.1", port, Role::ML, argv[3], "cpp-roundtrip-ml");
{chr(10).join(body)}
    fe.shutdown();
    ml.shutdown();
    return 0;
}}
"""


def run(binary, *args):
    result = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


class CrossLanguageTests(TestCase):
    timeout = 180

    async def setUp(self):
        self.hub = await start_hub(self, table_registry)

    def python(self, role=Role.FRONTEND):
        token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
        return BlockingClient("127.0.0.1", self.hub.port, role, token)

    def hubcli(self, role, *args):
        binary = compile_program(SOURCES / "hubcli.cpp", "hubcli")
        token = wire.FRONTEND_TOKEN if role == "fe" else wire.ML_TOKEN
        return run(binary, "127.0.0.1", self.hub.port, role, token, *args)

    async def test_cpp_round_trips_every_table_and_python_reads_what_it_wrote(self):
        setup, plan = _plan()
        binary = await deferToThread(compile_program, roundtrip_source(setup, plan), "roundtrip")
        status, output = await deferToThread(run, binary, self.hub.port, wire.FRONTEND_TOKEN, wire.ML_TOKEN)
        self.assertEqual(status, 0, output)
        self.assertEqual(output.count(" OK"), len(LAYOUTS), output)

        def read_back():
            kept = {}
            with self.python(Role.ML) as client:
                for table, row, changed, delete in plan:
                    if delete:
                        continue
                    key = {k: row[k] for k in LAYOUTS[table].table.key}
                    kept[table] = (client.select(table, keys=[key]).rows, changed or row)
            return kept

        for table, (found, expected) in (await deferToThread(read_back)).items():
            if table == SQLTable.TRADE:
                continue
            self.assertEqual(found, [expected], table.name)

    async def test_prediction_written_by_python_ml_is_read_by_cpp(self):
        model = rows.model()
        prediction = rows.prediction(model["id"], value=0.1 + 0.2, confidence=1 / 3, symbol="XPRED")

        def write():
            with self.python(Role.ML) as client:
                client.insert(SQLTable.ML_MODEL, [model])
                client.insert(SQLTable.ML_PREDICTION, [prediction])

        await deferToThread(write)
        status, output = await deferToThread(self.hubcli, "fe", "predictions", "XPRED")
        self.assertEqual(status, 0, output)
        expected = (
            f"prediction {prediction['id']} {model['id']} {prediction['ts'].ns} {prediction['horizon']} "
            f"{prediction['value'].hex()} {prediction['confidence'].hex()} buy"
        )
        self.assertEqual(_normalise_hex(output.splitlines()[0]), _normalise_hex(expected))

    async def test_cpp_and_python_interleave_writes_and_each_sees_the_others(self):
        def python_insert(seq, price):
            with self.python() as client:
                tick = rows.tick(
                    seq,
                    symbol="XLANG",
                    ts=Timestamp(1_700_000_000_000_000_000 + seq),
                    price=Decimal(price),
                    size=Decimal("1"),
                    conditions=["py"],
                    exchange=None,
                    tape=None,
                )
                client.insert(SQLTable.MARKET_TICK, [tick])

        def python_ticks():
            with self.python() as client:
                return [
                    (t["seq"], t["price"], t["conditions"][0])
                    for t in client.select(SQLTable.MARKET_TICK, symbol="XLANG").rows
                ]

        for seq in range(1, 7):
            if seq % 2:
                status, output = await deferToThread(self.hubcli, "fe", "insert-tick", seq, f"{seq}.000000001")
                self.assertEqual(status, 0, output)
            else:
                await deferToThread(python_insert, seq, f"{seq}.000000001")
        status, output = await deferToThread(self.hubcli, "fe", "ticks", "XLANG")
        self.assertEqual(status, 0, output)
        seen_by_cpp = [line.split() for line in output.splitlines() if line.startswith("tick ")]
        self.assertEqual(
            [(int(s), p, c) for _, s, _, p, c in seen_by_cpp],
            [(seq, f"{seq}.000000001", "cpp" if seq % 2 else "py") for seq in range(1, 7)],
        )
        self.assertEqual(
            [int(ts) for _, _, ts, _, _ in seen_by_cpp], [1_700_000_000_000_000_000 + s for s in range(1, 7)]
        )
        seen_by_python = await deferToThread(python_ticks)
        self.assertEqual(
            seen_by_python, [(seq, Decimal(f"{seq}.000000001"), "cpp" if seq % 2 else "py") for seq in range(1, 7)]
        )


def _normalise_hex(line):
    """C++ hexfloat and Python float.hex() spell the same bits differently (0x1.3333p-2 vs 0x1.3333000000000p-2)."""
    out = []
    for word in line.split():
        if word.startswith("0x") and "p" in word:
            out.append(repr(float.fromhex(word)))
        else:
            out.append(word)
    return " ".join(out)


def connect(port, role):
    token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
    return BlockingClient("127.0.0.1", port, role, token, timeout=20)


@attrs.frozen
class Seen:
    """One event line of tests/cpp/follower.cpp; details are the row's (symbol, model_id, horizon, value, ...)."""

    subscription: int
    kind: str
    position: int
    id: str
    details: tuple

    @classmethod
    def parse(cls, line):
        word, subscription, kind, position, id, *details = line.split()
        assert word == "event", line
        return cls(int(subscription), kind, int(position), id, tuple(details))


async def start_follower(test, port):
    """tests/cpp/follower.cpp as the frontend, connected to C{port}; it quits when the test ends."""
    binary = await deferToThread(compile_program, SOURCES / "follower.cpp", "follower")
    follower = Driven(binary, "127.0.0.1", port, "fe", wire.FRONTEND_TOKEN)
    test.addCleanup(deferToThread, follower.close)
    return follower


def subscribed(lines):
    """The id and position of a follower's `subscribed ID POSITION` answer."""
    [line] = lines
    word, subscription, position = line.split()
    assert word == "subscribed", line
    return int(subscription), int(position)


class PushTests(TestCase):
    """
    A C++ subscriber (tests/cpp/follower.cpp, the frontend) follows what the
    Python ML client writes, on a hub whose small frames split larger events.
    """

    timeout = 120

    async def setUp(self):
        self.hub = await start_hub(self, table_registry, push=True, max_frame=2048)
        self.ml = await deferToThread(connect, self.hub.port, Role.ML)
        self.addCleanup(deferToThread, self.ml.close)
        self.model = rows.model()
        await self.write(SQLTable.ML_MODEL, [self.model])

    def write(self, table, written):
        return deferToThread(self.ml.insert, table, written)

    def predictions(self, count, **changes):
        return [rows.prediction(self.model["id"], horizon=index + 1, **changes) for index in range(count)]

    async def follower(self, hub=None):
        self.cpp = await start_follower(self, (hub or self.hub).port)

    def ask(self, command):
        return deferToThread(self.cpp.ask, command)

    async def events(self, count):
        return [Seen.parse(line) for line in await self.ask(f"events {count}")]

    async def test_every_prediction_reaches_cpp_once_in_order_with_the_stored_values(self):
        await self.follower()
        subscription, start = subscribed(await self.ask("subscribe predictions - - -"))
        written = [
            rows.prediction(self.model["id"], horizon=i + 1, value=0.1 * i + 1 / 3, confidence=1 / (i + 2))
            for i in range(5)
        ]
        for prediction in written:
            await self.write(SQLTable.ML_PREDICTION, [prediction])
        events = await self.events(5)
        self.assertEqual([e.id for e in events], [p["id"] for p in written])
        self.assertEqual({(e.subscription, e.kind) for e in events}, {(subscription, "INSERT")})
        self.assertEqual(
            [(s, m, int(h), float.fromhex(v), float.fromhex(c)) for s, m, h, v, c in (e.details for e in events)],
            [(p["symbol"], p["model_id"], p["horizon"], p["value"], p["confidence"]) for p in written],
        )
        positions = [e.position for e in events]
        self.assertEqual(positions, sorted(set(positions)))
        self.assertGreater(positions[0], start)
        # Each row as received is the row SELECT returns.
        self.assertEqual(await self.ask("stored"), ["stored 5 same 5"])
        # Once: the next event is the next write's.
        [marker] = self.predictions(1, symbol="MARK")
        await self.write(SQLTable.ML_PREDICTION, [marker])
        [after] = await self.events(1)
        self.assertEqual(after.id, marker["id"])
        self.assertIn("shutdown 0", await deferToThread(self.cpp.close))

    async def test_the_hub_applies_the_symbols_and_model_ids_filters(self):
        other = rows.model()
        await self.write(SQLTable.ML_MODEL, [other])
        await self.follower()
        await self.ask(f"subscribe predictions - msft {self.model['id']}")
        wanted = rows.prediction(self.model["id"], symbol="MSFT", horizon=7)
        await self.write(
            SQLTable.ML_PREDICTION,
            [rows.prediction(self.model["id"], symbol="AAPL"), rows.prediction(other["id"], symbol="MSFT"), wanted],
        )
        [event] = await self.events(1)
        self.assertEqual((event.id, event.details[:3]), (wanted["id"], ("MSFT", self.model["id"], "7")))

    async def test_after_cancel_no_event_of_that_subscription_comes(self):
        await self.follower()
        cancelled, _ = subscribed(await self.ask("subscribe predictions - - -"))
        kept, _ = subscribed(await self.ask("subscribe predictions - - -"))
        first, second, third = self.predictions(3)
        await self.write(SQLTable.ML_PREDICTION, [first])
        both = await self.events(2)
        self.assertEqual(sorted((e.subscription, e.id) for e in both), [(cancelled, first["id"]), (kept, first["id"])])
        # Written before the cancel, read after it: the cancelled subscription's event is dropped.
        await self.write(SQLTable.ML_PREDICTION, [second])
        [answer] = await self.ask(f"cancel {cancelled}")
        self.assertEqual(answer.split()[0], "cancelled")
        self.assertGreaterEqual(int(answer.split()[1]), both[0].position)
        await self.write(SQLTable.ML_PREDICTION, [third])
        events = await self.events(2)
        self.assertEqual([(e.subscription, e.id) for e in events], [(kept, second["id"]), (kept, third["id"])])
        self.assertEqual(await self.ask(f"cancel {cancelled}"), [f"not live: no live subscription {cancelled}"])

    async def test_resuming_from_a_position_gets_exactly_the_changes_after_it(self):
        await self.follower()
        first, _ = subscribed(await self.ask("subscribe predictions - - -"))
        written = self.predictions(7)
        await self.write(SQLTable.ML_PREDICTION, written[:3])
        await self.write(SQLTable.ML_PREDICTION, written[3:6])
        seen = await self.events(6)
        await self.ask(f"cancel {first}")
        _, position = subscribed(await self.ask(f"subscribe predictions {seen[2].position} - -"))
        self.assertEqual(position, seen[2].position)
        replayed = await self.events(3)
        self.assertEqual([e.id for e in replayed], [p["id"] for p in written[3:6]])
        self.assertEqual([e.position for e in replayed], [e.position for e in seen[3:]])
        await self.write(SQLTable.ML_PREDICTION, written[6:])
        [live] = await self.events(1)
        self.assertEqual(live.id, written[6]["id"])

    async def test_a_position_past_retention_is_refused_with_the_subscription_error(self):
        await self.write(SQLTable.ML_PREDICTION, self.predictions(3))
        await deferToThread(blocking_query, self.hub.dsn, "UPDATE change_log_head SET trimmed_through = last_position")
        await self.follower()
        [refused] = await self.ask("subscribe predictions 0 - -")
        word, code, subscription, _ = refused.split(maxsplit=3)
        self.assertEqual((word, int(code)), ("failed", ErrorCode.POSITION_EXPIRED))
        # The connection stays usable: a live subscription is confirmed.
        later, position = subscribed(await self.ask("subscribe predictions - - -"))
        self.assertGreater(later, int(subscription))
        self.assertGreater(position, 0)

    async def test_events_that_come_while_a_call_waits_are_kept_for_next_event(self):
        await self.follower()
        await self.ask("subscribe predictions - - -")
        # A Python subscriber on the same hub: once it has the events, the hub has sent C++ its own.
        witness = await deferToThread(connect, self.hub.port, Role.FRONTEND)
        self.addCleanup(deferToThread, witness.close)
        following = await deferToThread(witness.subscribe, SQLTable.ML_PREDICTION)
        written = self.predictions(3)
        await self.write(SQLTable.ML_PREDICTION, written)
        await deferToThread(lambda: [next(following) for _ in written])
        # C++ asks something first: its answer comes after the three events.
        self.assertEqual(await self.ask(f"model {self.model['id']}"), [f"model {self.model['id']} momentum"])
        self.assertEqual([e.id for e in await self.events(3)], [p["id"] for p in written])

    async def test_an_event_larger_than_a_frame_is_joined_from_its_frames(self):
        await self.follower()
        await self.ask("subscribe indicators - - sma")
        values = [index / 7 for index in range(600)]
        large = rows.indicator(name="sma", values=values, ts=rows.ts(60))
        await self.write(SQLTable.TECHNICAL_INDICATOR, [rows.indicator(name="ema"), large])
        [event] = await self.events(1)
        self.assertEqual(
            (event.id, event.details[1], int(event.details[2]), float.fromhex(event.details[3])),
            (large["id"], "sma", 600, values[-1]),
        )
        self.assertEqual(await self.ask("stored"), ["stored 1 same 1"])

    async def test_a_subscriber_waiting_for_events_keeps_its_session_with_heartbeats(self):
        hub = await start_hub(self, table_registry, push=True, heartbeat_ms=200)
        await self.follower(hub)
        await self.ask("subscribe predictions - - -")
        # Seven heartbeat intervals without a call: the hub closes a session silent for three.
        self.assertEqual(await self.ask("poll 1400"), ["none"])
        subscribed(await self.ask("subscribe predictions - - -"))

    async def test_example_program_places_an_order_while_it_follows_predictions(self):
        binary = await deferToThread(compile_program, CLIENTS / "example.cpp", "example")
        example = subprocess.Popen(
            [str(binary), "127.0.0.1", str(self.hub.port), "example-order-1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"TRADEHUB_FRONTEND_TOKEN": wire.FRONTEND_TOKEN},
        )
        self.addCleanup(lambda: example.poll() is None and example.kill())

        def until_following():
            lines = []
            while not lines or not lines[-1].startswith("following"):
                lines.append(example.stdout.readline())
                if not lines[-1]:
                    raise AssertionError(f"the example ended: {lines}")
            return lines

        await deferToThread(until_following)
        [prediction] = self.predictions(1)
        await self.write(SQLTable.ML_PREDICTION, [prediction])
        output = await deferToThread(lambda: example.communicate(timeout=60)[0])
        self.assertEqual(example.returncode, 0, output)
        self.assertIn("order example-order-1: buy 10 AAPL @ 189.12, new", output)
        self.assertIn(f"prediction {prediction['id']} model {self.model['id']}", output)

        def stored():
            with connect(self.hub.port, Role.FRONTEND) as client:
                return client.select(SQLTable.ORDER, keys=[{"client_order_id": "example-order-1"}]).rows

        [order] = await deferToThread(stored)
        self.assertEqual(
            (order["qty"], order["limit_price"], order["status"]), (Decimal("10"), Decimal("189.12"), "new")
        )


class ScriptedHub(Protocol):
    """
    A hub's part written out: it confirms each SUBSCRIBE, sends one EVENT in
    two frames (a HEARTBEAT between them), then the ERROR with which a hub
    ends a subscription that fell behind retention.
    """

    def __init__(self, event, lost):
        self.event = event
        self.lost = lost
        self.decoder = FrameDecoder(1 << 20)

    def dataReceived(self, data):
        for frame in self.decoder.feed(data):
            kind, request_id = frame.header.type, frame.header.request_id
            if kind == MessageType.HELLO:
                payload = HELLO_ACK.encode(
                    {
                        "version": 1,
                        "session_id": 1,
                        "heartbeat_ms": 5000,
                        "max_frame": 1 << 20,
                        "max_in_flight": 16,
                        "server_name": "scripted",
                    }
                )
                self.transport.write(encode_frame(MessageType.HELLO_ACK, payload))
            elif kind == MessageType.SUBSCRIBE:
                self.subscribed(request_id, frame.header.table)
            elif kind == MessageType.SHUTDOWN:
                self.transport.write(encode_frame(MessageType.SHUTDOWN_ACK, SHUTDOWN_ACK.encode({"completed": 0})))
                self.transport.loseConnection()

    def subscribed(self, request_id, table):
        payload = LAYOUTS[SQLTable(table)].event.encode(dict(self.event, position=8))
        half = len(payload) // 2
        error = ERROR.encode({"code": ErrorCode.POSITION_EXPIRED, "row_index": -1, "message": "fell behind"})
        self.transport.write(
            encode_frame(MessageType.RESPONSE, SUBSCRIBED.encode({"position": 7}), request_id, table=table)
            + encode_frame(MessageType.EVENT, payload[:half], request_id, SQLCommand.INSERT, table, FLAG_MORE)
            + encode_frame(MessageType.HEARTBEAT)
            + encode_frame(MessageType.EVENT, payload[half:], request_id, SQLCommand.INSERT, table)
            + encode_frame(MessageType.ERROR, error, request_id)
        )

    def connectionLost(self, reason):
        self.lost.callback(None)


class ClientTests(TestCase):
    """The C++ client against peers the test controls: what a hub does rarely, made to happen."""

    timeout = 60

    async def test_a_subscription_the_hub_ends_raises_its_error_after_its_events(self):
        prediction = rows.prediction(rows.new_id(), value=0.75)
        lost = Deferred()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(lambda: ScriptedHub(prediction, lost))
        )
        self.addCleanup(port.stopListening)
        follower = await start_follower(self, port.getHost().port)
        self.assertEqual(await deferToThread(follower.ask, "subscribe predictions - - -"), ["subscribed 1 7"])
        event, failed = await deferToThread(follower.ask, "events 2")
        seen = Seen.parse(event)
        symbol, model_id, horizon, value, confidence = seen.details
        self.assertEqual(
            (seen.subscription, seen.kind, seen.position, seen.id, symbol, model_id, int(horizon)),
            (1, "INSERT", 8, prediction["id"], "AAPL", prediction["model_id"], 300),
        )
        self.assertEqual((float.fromhex(value), float.fromhex(confidence)), (0.75, prediction["confidence"]))
        self.assertEqual(failed, f"failed {int(ErrorCode.POSITION_EXPIRED)} 1 fell behind")
        # Ended: it is no longer live, and no later event of it is read.
        self.assertEqual(await deferToThread(follower.ask, "cancel 1"), ["not live: no live subscription 1"])
        self.assertIn("shutdown 0", await deferToThread(follower.close))
        await lost

    async def test_a_call_waiting_when_the_hub_stops_gets_its_answer_and_later_calls_are_refused(self):
        """The hub's SHUTDOWN arrives before the answer: the call still returns it; the next one fails at once."""
        route = HeldRoute()
        hub = await start_hub(self, lambda pool: route.registry())
        binary = await deferToThread(compile_program, SOURCES / "hubcli.cpp", "hubcli")
        running = deferToThread(run, binary, "127.0.0.1", hub.port, "fe", wire.FRONTEND_TOKEN, "held-calls")
        held = await route.arrivals.get()
        drained = hub.factory.drain(5)
        held.callback(b"first")
        status, output = await running
        self.assertEqual(status, 0, output)
        self.assertEqual(
            output.splitlines(),
            [
                "answer first",
                f"refused {int(ErrorCode.SHUTTING_DOWN)}: the hub is shutting down: tradehub is stopping",
                "shutdown 0",
            ],
        )
        await drained
