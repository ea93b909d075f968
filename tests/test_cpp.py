"""
C++ ↔ hub ↔ PostgreSQL ↔ hub ↔ C++ and Python, over real loopback sockets:
the generated header is current and compiles warning-free; a C++ program
round-trips every table; Python reads exactly what C++ wrote and the reverse.
"""

import subprocess
from decimal import Decimal

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.client import BlockingClient
from tradehub.codegen import cpp_header
from tradehub.protocol.enums import Role, SQLTable
from tradehub.protocol.tables import LAYOUTS
from tradehub.schema import Timestamp

from . import rows, wire
from .cpp import CLIENTS, SOURCES, compile_program, row_literal
from .hub import start_hub, table_registry


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
    check(hub.insert<T>({{row}}).affected == 1, name, "insert");
    typename TableTraits<T>::Select by_key;
    by_key.keys.push_back(key_of(row));
    auto found = hub.select<T>(by_key);
    check(found.rows.size() == 1 && found.rows[0] == row, name, "select after insert");
    if (update) {{
        check(hub.update<T>({{changed}}).affected == 1, name, "update");
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

    async def test_example_program_inserts_an_order_and_reads_it_back(self):
        binary = await deferToThread(compile_program, CLIENTS / "example.cpp", "example")
        env = {"TRADEHUB_FRONTEND_TOKEN": wire.FRONTEND_TOKEN}

        def example():
            result = subprocess.run(
                [str(binary), "127.0.0.1", str(self.hub.port), "example-order-1"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            return result.returncode, result.stdout + result.stderr

        status, output = await deferToThread(example)
        self.assertEqual(status, 0, output)
        self.assertIn("order example-order-1: buy 10 AAPL @ 189.12, new", output)

        def stored():
            with self.python() as client:
                return client.select(SQLTable.ORDER, keys=[{"client_order_id": "example-order-1"}]).rows

        [order] = await deferToThread(stored)
        self.assertEqual(
            (order["qty"], order["limit_price"], order["status"]), (Decimal("10"), Decimal("189.12"), "new")
        )

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
