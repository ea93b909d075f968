"""
The floor of this stack for SELECT by key: a bare Twisted server on ONE
txpostgres connection that speaks just enough of the wire protocol (HELLO,
REQUEST SELECT ORDER, HEARTBEAT, SHUTDOWN) to answer the frame the hub
answers, with the hub's own statement (its order repository's
select_statement) and the project's own layouts, so that its bytes are the
hub's. Same reactor, driver, codecs and SQL: what the hub takes beyond this
server is the hub's own work (sessions, lanes, checks, the pool).

    .venv/bin/python bench/floor.py --dsn DSN --port PORT
"""

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, protocol, reactor  # noqa: E402
from twisted.protocols.basic import IntNStringReceiver  # noqa: E402
from txpostgres.txpostgres import Connection  # noqa: E402

from tradehub.controllers.alpaca import OrderController  # noqa: E402
from tradehub.protocol.enums import HEADER_SIZE, ErrorCode, MessageType, SQLCommand  # noqa: E402
from tradehub.protocol.messages import (  # noqa: E402
    ERROR,
    HEADER,
    HELLO,
    HELLO_ACK,
    SHUTDOWN_ACK,
    encode_frame,
    split_frames,
)
from tradehub.protocol.tables import LAYOUTS  # noqa: E402

# The repository the hub's ORDER controller builds: the same statement text.
REPOSITORY = OrderController.repository_class(OrderController.table, OrderController.computed_sql)
TABLE = OrderController.table.id
LAYOUT = LAYOUTS[TABLE]
MAX_FRAME = 1 << 20
SESSIONS = itertools.count(1)


async def select(database, request):
    """A SELECT's RESPONSE payload, as the hub's route and controller make it."""
    after = request["after"]
    query = dict(request, position=LAYOUT.cursor.decode(after) if after is not None else None)
    statement, params, limit = REPOSITORY.select_statement(query)
    records = await database.runQuery(statement, params)
    more = len(records) > limit
    del records[limit:]
    rows = [LAYOUT.row.encode(REPOSITORY.row(record)) for record in records]
    next_cursor = None
    if more:
        last = REPOSITORY.row(records[-1])
        next_cursor = LAYOUT.cursor.encode({name: last[name] for name in LAYOUT.table.sort})
    return LAYOUT.answer(len(rows), rows, next_cursor)


class Session(IntNStringReceiver):
    """One client connection; its answers go out in request order (the one database connection is FIFO)."""

    structFormat = "<I"
    prefixLength = 4
    MAX_LENGTH = MAX_FRAME

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.last = defer.succeed(None)
        self.in_flight = 0

    def stringReceived(self, body):
        header = HEADER.decode(body[:HEADER_SIZE])
        payload = body[HEADER_SIZE:]
        if header.type == MessageType.HELLO:
            HELLO.decode(payload)
            ack = HELLO_ACK.encode(
                {
                    "version": 1,
                    "session_id": next(SESSIONS),
                    "heartbeat_ms": 5000,
                    "max_frame": MAX_FRAME,
                    "max_in_flight": 4096,
                    "server_name": "floor",
                }
            )
            self.transport.write(encode_frame(MessageType.HELLO_ACK, ack))
        elif header.type == MessageType.REQUEST and (header.command, header.table) == (SQLCommand.SELECT, TABLE):
            self.in_flight += 1
            answer = defer.ensureDeferred(select(self.factory.database, LAYOUT.select_request.decode(payload)))
            self.last = answer.addCallbacks(self.answer, self.failed, (header.request_id,), None, (header.request_id,))
        elif header.type == MessageType.SHUTDOWN:
            completed = self.in_flight
            self.last.addCallback(lambda _: self.bye(completed))
        elif header.type != MessageType.HEARTBEAT:
            self.error(header.request_id, ErrorCode.UNKNOWN_TYPE, "the floor server answers SELECT ORDER only")

    def answer(self, payload, request_id):
        self.in_flight -= 1
        self.transport.write(split_frames(MessageType.RESPONSE, payload, request_id, MAX_FRAME))

    def failed(self, reason, request_id):
        self.in_flight -= 1
        self.error(request_id, ErrorCode.INTERNAL, reason.getErrorMessage()[:1000])

    def error(self, request_id, code, message):
        error = ERROR.encode({"code": code, "row_index": -1, "message": message})
        self.transport.write(encode_frame(MessageType.ERROR, error, request_id))

    def bye(self, completed):
        self.transport.write(encode_frame(MessageType.SHUTDOWN_ACK, SHUTDOWN_ACK.encode({"completed": completed})))
        self.transport.loseConnection()


async def start(dsn, port):
    database = Connection(reactor)
    await database.connect(dsn)
    factory = protocol.Factory.forProtocol(Session)
    factory.database = database
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(f"floor ready: 127.0.0.1:{port}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dsn", required=True, help="libpq connection string of the database")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    options = parser.parse_args(argv)

    def failed(reason):
        print(f"floor failed: {reason.getErrorMessage()}", flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start(options.dsn, options.port)).addErrback(failed))
    reactor.run()


if __name__ == "__main__":
    main()
