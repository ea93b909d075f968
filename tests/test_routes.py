"""
Routing on its own: the order of a request's checks, the refusals' error
codes, coalesced groups that fail, and the table routes that turn rows into
answers (echo, cursors).
"""

from decimal import Decimal

from twisted.internet.defer import ensureDeferred as _run
from twisted.trial.unittest import SynchronousTestCase

from tradehub import errors
from tradehub.controllers.base import Page
from tradehub.db.failures import CommitOutcomeUnknown, PoolClosed, row_refusal
from tradehub.protocol.enums import ErrorCode, MessageType, Role, SQLCommand, SQLTable
from tradehub.protocol.errors import ProtocolError
from tradehub.protocol.messages import Header
from tradehub.protocol.tables import LAYOUTS
from tradehub.protocol.wire import Field, Layout, string
from tradehub.server.requests import admit
from tradehub.server.routes import Registry, Route, TableRoutes, as_protocol_error, serve_group

from . import rows

ECHO = Layout("echo", [Field("text", string)])


async def _echo(value):
    return ECHO.encode(value)


def header(command, table, request_id=7):
    return Header(0x4854, 1, MessageType.REQUEST, command, table, 0, request_id)


class AdmitTests(SynchronousTestCase):
    """The contract's order of checks: command, table, permission, route, then the payload."""

    def setUp(self):
        self.registry = Registry([Route(SQLCommand.INSERT, SQLTable.ORDER, ECHO, _echo)])

    def code(self, command, table, payload=b"", role=Role.FRONTEND):
        task = admit(self.registry, role, header(command, table), payload)
        self.assertEqual(task.request_id, 7)
        return task.error.code if task.error else None

    def test_each_check_answers_before_the_next(self):
        self.assertEqual(self.code(99, 99), ErrorCode.UNKNOWN_COMMAND)
        self.assertEqual(self.code(SQLCommand.INSERT, 99), ErrorCode.UNKNOWN_TABLE)
        self.assertEqual(self.code(SQLCommand.INSERT, SQLTable.ORDER, role=Role.ML), ErrorCode.PERMISSION_DENIED)
        self.assertEqual(self.code(SQLCommand.UPDATE, SQLTable.ORDER), ErrorCode.INTERNAL)
        self.assertEqual(self.code(SQLCommand.INSERT, SQLTable.ORDER, b"\x05"), ErrorCode.MALFORMED_PAYLOAD)

    def test_an_admitted_request_carries_its_route_and_decoded_value(self):
        task = admit(
            self.registry, Role.FRONTEND, header(SQLCommand.INSERT, SQLTable.ORDER), ECHO.encode({"text": "hi"})
        )
        self.assertIsNone(task.error)
        self.assertIs(task.route, self.registry.route(SQLCommand.INSERT, SQLTable.ORDER))
        self.assertEqual(task.value, {"text": "hi"})

    def test_a_route_is_registered_once(self):
        self.assertRaises(ValueError, self.registry.add, Route(SQLCommand.INSERT, SQLTable.ORDER, ECHO, _echo))

    def test_the_checks_answer_alike_the_second_time_and_for_the_other_role(self):
        """What passed the checks once is kept, by role and bytes: a refusal is found again each time, never kept."""
        cases = [
            (99, 99, Role.FRONTEND),
            (SQLCommand.INSERT, SQLTable.ORDER, Role.ML),
            (SQLCommand.INSERT, SQLTable.ORDER, Role.FRONTEND),
            (SQLCommand.UPDATE, SQLTable.ORDER, Role.FRONTEND),
        ]
        first = [self.code(command, table, ECHO.encode({"text": "x"}), role) for command, table, role in cases]
        again = [self.code(command, table, ECHO.encode({"text": "x"}), role) for command, table, role in cases]
        self.assertEqual(first, again)
        self.assertEqual(first, [ErrorCode.UNKNOWN_COMMAND, ErrorCode.PERMISSION_DENIED, None, ErrorCode.INTERNAL])
        self.assertEqual(list(self.registry.admitted), [(Role.FRONTEND, SQLCommand.INSERT, SQLTable.ORDER)])

    def test_a_route_added_later_is_found(self):
        self.assertEqual(self.code(SQLCommand.UPDATE, SQLTable.ORDER), ErrorCode.INTERNAL)
        self.registry.add(Route(SQLCommand.UPDATE, SQLTable.ORDER, ECHO, _echo))
        self.assertIsNone(self.code(SQLCommand.UPDATE, SQLTable.ORDER, ECHO.encode({"text": "x"})))


class ErrorTests(SynchronousTestCase):
    def test_each_refusal_has_its_code_and_keeps_its_row(self):
        expected = {
            errors.Invalid: ErrorCode.VALIDATION_FAILED,
            errors.Missing: ErrorCode.NOT_FOUND,
            errors.Conflict: ErrorCode.CONFLICT,
            errors.Busy: ErrorCode.BUSY,
            errors.Unavailable: ErrorCode.DB_UNAVAILABLE,
            errors.Closing: ErrorCode.SHUTTING_DOWN,
        }
        for refusal, code in expected.items():
            typed = as_protocol_error(refusal("why").at_row(3))
            self.assertEqual((typed.code, typed.message, typed.row_index), (code, "row 3: why", 3))

    def test_every_kind_of_refusal_has_a_code(self):
        for kind in (errors.Refused, *errors.Refused.__subclasses__()):
            self.assertIsInstance(as_protocol_error(kind("why")).code, ErrorCode)

    def test_an_unexpected_database_error_of_a_row_is_internal_and_names_the_row(self):
        typed = as_protocol_error(row_refusal(ValueError("A string literal cannot contain NUL"), 3))
        self.assertEqual(
            (typed.code, typed.message, typed.row_index), (ErrorCode.INTERNAL, "row 3: internal error (ValueError)", 3)
        )

    def test_pool_failures_become_shutting_down_and_db_unavailable(self):
        self.assertEqual(as_protocol_error(PoolClosed()).code, ErrorCode.SHUTTING_DOWN)
        self.assertEqual(as_protocol_error(CommitOutcomeUnknown("lost")).code, ErrorCode.DB_UNAVAILABLE)

    def test_a_bug_is_internal_and_keeps_its_cause_for_the_log(self):
        typed = as_protocol_error(KeyError("oops"))
        self.assertEqual(typed.code, ErrorCode.INTERNAL)
        self.assertIsInstance(typed.cause.value, KeyError)


class ServeGroupTests(SynchronousTestCase):
    def test_a_group_that_fails_as_a_whole_is_answered_one_by_one(self):
        async def one(value):
            if value == "bad":
                raise errors.Invalid("row 0: bad")
            return value.encode()

        async def group(values):
            raise errors.Invalid("the batch was refused")

        route = Route(SQLCommand.INSERT, SQLTable.MARKET_TICK, ECHO, one, group)
        answers = self.successResultOf(_run(serve_group(route, ["a", "bad", "c"])))
        self.assertEqual(answers[0], b"a")
        self.assertEqual(answers[1].code, ErrorCode.VALIDATION_FAILED)
        self.assertEqual(answers[2], b"c")

    def test_a_group_the_database_cannot_take_is_answered_at_once_not_one_by_one(self):
        alone = []

        async def one(value):
            alone.append(value)
            return value.encode()

        for failure, code in (
            (errors.Unavailable("the database is unavailable; try again"), ErrorCode.DB_UNAVAILABLE),
            (CommitOutcomeUnknown("lost"), ErrorCode.DB_UNAVAILABLE),
            (PoolClosed(), ErrorCode.SHUTTING_DOWN),
            (errors.Busy("slow"), ErrorCode.BUSY),
        ):

            async def group(values, failure=failure):
                raise failure

            route = Route(SQLCommand.INSERT, SQLTable.MARKET_TICK, ECHO, one, group)
            answers = self.successResultOf(_run(serve_group(route, ["a", "b", "c"])))
            self.assertEqual([answer.code for answer in answers], [code] * 3)
        self.assertEqual(alone, [])

    def test_requests_that_may_not_share_a_transaction_are_served_alone(self):
        async def one(value):
            return value.encode()

        async def group(values):
            raise errors.ServeAlone()

        route = Route(SQLCommand.INSERT, SQLTable.ORDER, ECHO, one, group)
        self.assertEqual(self.successResultOf(_run(serve_group(route, ["a", "b"]))), [b"a", b"b"])


class FakeController:
    """Answers like a controller, recording what it was called with."""

    def __init__(self, stored=(), page=None):
        self.stored = list(stored)
        self.page = page
        self.calls = []

    def echoes(self, rows_, echo):
        return echo

    async def update(self, rows_):
        self.calls.append(("update", rows_))
        return self.stored

    async def select(self, query, shape):
        self.calls.append(("select", query))
        return Page([shape(row) for row in self.page.rows], self.page.more, self.page.last)


class TableRoutesTests(SynchronousTestCase):
    def test_a_write_answers_each_key_and_what_the_hub_set_and_the_stored_rows_only_if_asked(self):
        prediction = rows.prediction(rows.new_id())
        layouts = LAYOUTS[SQLTable.ML_PREDICTION]
        routes = TableRoutes(FakeController(stored=[prediction]), layouts)
        written = [{"id": prediction["id"], "created_at": prediction["created_at"]}]
        for echo, echoed in ((False, []), (True, [prediction])):
            answer = self.successResultOf(_run(routes.update({"echo": echo, "rows": [prediction]})))
            decoded = layouts.response.decode(answer)
            self.assertEqual((decoded["affected"], decoded["rows"], decoded["written"]), (1, echoed, written))

    def test_a_page_with_more_rows_carries_the_cursor_of_its_last_row_and_the_cursor_comes_back_as_a_position(self):
        layouts = LAYOUTS[SQLTable.MARKET_TICK]
        first, last = rows.tick(1), rows.tick(2, price=Decimal("2.5"))
        controller = FakeController(page=Page([first, last], more=True, last=last))
        routes = TableRoutes(controller, layouts)
        query = {"keys": [], "symbol": None, "since": None, "until": None, "limit": 2, "after": None}
        answer = layouts.response.decode(self.successResultOf(_run(routes.select(query))))
        self.assertEqual((answer["affected"], answer["rows"]), (2, [first, last]))
        cursor = answer["next_cursor"]
        self.assertEqual(layouts.cursor.decode(cursor), {name: last[name] for name in layouts.table.sort})
        self.successResultOf(_run(routes.select(dict(query, after=cursor))))
        self.assertEqual(controller.calls[-1][1]["position"], layouts.cursor.decode(cursor))

    def test_an_after_that_is_not_a_cursor_of_the_table_is_refused(self):
        routes = TableRoutes(FakeController(), LAYOUTS[SQLTable.MARKET_TICK])
        query = {"keys": [], "symbol": None, "since": None, "until": None, "limit": 2, "after": b"\x01"}
        failure = self.failureResultOf(_run(routes.select(query)), errors.Invalid)
        self.assertIn("not a cursor", failure.value.message)
        self.assertEqual(as_protocol_error(failure.value).code, ErrorCode.VALIDATION_FAILED)
        busy = ProtocolError(ErrorCode.BUSY, "x")
        self.assertIs(as_protocol_error(busy), busy)
