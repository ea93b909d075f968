"""
A batch INSERT's columns as array literals (Repository.columns) against the
lists psycopg2 adapted before, on real PostgreSQL: each column of every
table, cast to its unnest array type, reads back identical either way, over
seeded random rows and the values that need escaping; what the literals do
not cover still goes as a list.
"""

import decimal
import json
import random
import struct
import uuid

import psycopg2
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.controllers import CONTROLLERS
from tradehub.repositories.table import Repository, array_param
from tradehub.schema import SQLTable
from tradehub.schema.kinds import text_array_literal
from tradehub.schema.timestamp import Timestamp

from .support import fresh_database
from .test_generated_codecs import identical

REPOSITORIES = {c.table.id: Repository(c.table, c.computed_sql) for c in CONTROLLERS}
# Text that array literals must escape or quote, and text they need not.
TRICKY = ['"', "\\", '\\"', "a,b", "{x}", " padded ", "", "NULL", "null", "é€𝄞", "'", "\t\n", "plain"]


def _text(rng):
    return "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 3)))


def _i64(rng):
    return rng.choice([-(2**63), 2**63 - 1, 0, rng.randint(-(2**63), 2**63 - 1)])


def _decimal(rng):
    """Wire decimals (9 places), and others that reach the hub from elsewhere (Alpaca's JSON)."""
    if rng.random() < 0.7:
        return decimal.Decimal(_i64(rng)).scaleb(-9)
    return decimal.Decimal(rng.choice(["1E+2", "-0", "0.1", "-12.5000", "1E-7", "123456789012345678901234567890"]))


VALUES = {
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128))),
    "text": _text,
    "symbol": _text,
    "json": lambda rng: json.dumps({_text(rng): _text(rng)}),
    "decimal": _decimal,
    "bool": lambda rng: rng.random() < 0.5,
    "int": _i64,
    "int32": lambda rng: rng.randint(-(2**31), 2**31 - 1),
    "float": lambda rng: struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0],
    "bytes": lambda rng: rng.randbytes(rng.randint(0, 4)),
    "text_list": lambda rng: [_text(rng) for _ in range(rng.randint(0, 3))],
    "float_list": lambda rng: [rng.uniform(-1e300, 1e300) for _ in range(rng.randint(0, 3))],
    "timestamp": lambda rng: Timestamp(_i64(rng)),
}


def random_rows(table, rng, count, nulls):
    """Rows of valid values (what the hub's checks let through), None in optional columns at rate C{nulls}."""
    return [
        {
            c.name: None if c.optional and rng.random() < nulls else VALUES[c.kind.name](rng)
            for c in table.columns
            if not c.computed
        }
        for _ in range(count)
    ]


def listed(repository, rows):
    """The columns as psycopg2 adapted them before: each a list of the rows' parameters."""
    return [list(column) for column in zip(*map(repository.params, rows), strict=True)]


def array_types(repository):
    return [part.array for c in repository.stored for part in c.kind.parts]


def read_back(dsn, casts):
    """Each (parameter, array type) cast by PostgreSQL, or the error it raised."""
    connection = psycopg2.connect(dsn)
    try:
        cursor = connection.cursor()
        results = []
        for param, array in casts:
            try:
                cursor.execute(f"SELECT %s::{array}", (param,))
                results.append(cursor.fetchone()[0])
            except (psycopg2.Error, ValueError) as error:
                connection.rollback()
                results.append((type(error), str(error)))
        return results
    finally:
        connection.close()


class ColumnsTests(TestCase):
    async def check_same(self, dsn, repository, rows):
        literals = repository.columns(rows)
        lists = listed(repository, rows)
        types = array_types(repository)
        self.assertEqual(len(literals), len(types))
        new = await deferToThread(read_back, dsn, list(zip(literals, types, strict=True)))
        old = await deferToThread(read_back, dsn, list(zip(lists, types, strict=True)))
        for name, a, b in zip(types, new, old, strict=True):
            self.assertTrue(identical(a, b), f"{repository.table.sql_name} {name}: {a!r} != {b!r}")
        return literals

    async def test_every_tables_columns_read_back_identical(self):
        dsn = await fresh_database(self, migrated=False)
        rng = random.Random(5150)
        sent_as_literals = 0
        for repository in REPOSITORIES.values():
            for nulls in (0.0, 0.5, 1.0):
                for count in (2, 7):
                    literals = await self.check_same(dsn, repository, random_rows(repository.table, rng, count, nulls))
                    sent_as_literals += sum(isinstance(p, str) for p in literals)
        self.assertGreater(sent_as_literals, 500)

    async def test_the_hot_columns_go_as_literals(self):
        dsn = await fresh_database(self, migrated=False)
        tick = REPOSITORIES[SQLTable.MARKET_TICK]
        rows = random_rows(tick.table, random.Random(7), 5, 0.3)
        literals = await self.check_same(dsn, tick, rows)
        self.assertEqual([type(p) for p in literals], [str] * len(literals))

    async def test_values_outside_the_literals_go_as_lists(self):
        dsn = await fresh_database(self, migrated=False)
        cases = [
            ([decimal.Decimal("1.5"), decimal.Decimal("NaN")], "numeric[]"),
            ([decimal.Decimal("Infinity"), None], "numeric[]"),
            ([1, "2"], "text[]"),
            ([b"\x00\xff", None], "bytea[]"),
        ]
        params = [array_param(values) for values, _ in cases]
        self.assertEqual([type(p) for p in params], [list] * len(cases))
        new = await deferToThread(read_back, dsn, list(zip(params, (t for _, t in cases), strict=True)))
        old = await deferToThread(read_back, dsn, cases)
        self.assertTrue(identical(new, old), f"{new!r} != {old!r}")

    async def test_a_nul_is_refused_as_psycopg2_refuses_it(self):
        dsn = await fresh_database(self, migrated=False)
        values = ["a", "b\x00c"]
        param = array_param(values)
        self.assertIsInstance(param, str)
        [new] = await deferToThread(read_back, dsn, [(param, "text[]")])
        [old] = await deferToThread(read_back, dsn, [(values, "text[]")])
        self.assertEqual(new, old)
        self.assertIs(new[0], ValueError)


class TimestampTextTests(SynchronousTestCase):
    def test_the_text_is_the_datetimes_to_the_nanosecond(self):
        """Seconds apart and far apart (more than the kept seconds' texts), both sides of 1970 and the extremes."""
        rng = random.Random(1984)
        stamps = [Timestamp(n * 1_000_000_007) for n in range(-3000, 3000)]
        stamps += [Timestamp(_i64(rng)) for _ in range(3000)] + [Timestamp(-1), Timestamp(999), Timestamp(-1000)]
        for stamp in stamps:
            moment, nanos = stamp.to_pg()
            self.assertEqual(stamp.to_pg_text(), (f"{moment:%Y-%m-%d %H:%M:%S.%f}+00", nanos))


class ArrayParamTests(SynchronousTestCase):
    def test_a_list_of_text_is_one_literal_of_its_items_escaped(self):
        rng = random.Random(3)
        for items in [[], [""], ["\x00", "a"], *([_text(rng) for _ in range(rng.randint(1, 4))] for _ in range(200))]:
            quoted = ['"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items]
            self.assertEqual(text_array_literal(items), "{" + ",".join(quoted) + "}")

    def test_literals(self):
        self.assertEqual(array_param(['a"b', "c\\d", None, ""]), '{"a\\"b","c\\\\d",NULL,""}')
        self.assertEqual(array_param([1, None, -3]), "{1,NULL,-3}")
        self.assertEqual(array_param([True, False]), "{t,f}")
        self.assertEqual(array_param([None, None]), "{NULL,NULL}")
        self.assertEqual(array_param([decimal.Decimal("1.500000000"), decimal.Decimal("-1E-9")]), "{1.500000000,-1E-9}")
        self.assertEqual(array_param([True, 1]), [True, 1])
