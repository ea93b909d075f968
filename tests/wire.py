"""Client-side frames for tests, built from the protocol package's own layouts."""

from tradehub.protocol.enums import MessageType, Role, ShutdownReason
from tradehub.protocol.framing import FrameDecoder
from tradehub.protocol.messages import ERROR, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, encode_frame

# The session payloads a test reader decodes, by message type.
SESSION_LAYOUTS = {
    MessageType.HELLO: HELLO,
    MessageType.HELLO_ACK: HELLO_ACK,
    MessageType.ERROR: ERROR,
    MessageType.SHUTDOWN: SHUTDOWN,
    MessageType.SHUTDOWN_ACK: SHUTDOWN_ACK,
}
FRONTEND_TOKEN = "frontend-token"
ML_TOKEN = "ml-token"
TOKENS = {"FRONTEND": FRONTEND_TOKEN, "ML": ML_TOKEN}


def hello(role=Role.FRONTEND, token=None, min_version=1, max_version=1, name="test-client", request_id=0):
    token = token if token is not None else TOKENS[Role(role).name] if role in (1, 2) else "x"
    payload = HELLO.encode(
        {"role": role, "min_version": min_version, "max_version": max_version, "client_name": name, "token": token}
    )
    return encode_frame(MessageType.HELLO, payload, request_id)


def request(command, table, payload=b"", request_id=1):
    return encode_frame(MessageType.REQUEST, payload, request_id, command=command, table=table)


def shutdown(reason=ShutdownReason.CLIENT_DONE, deadline_ms=1000, message="done"):
    payload = SHUTDOWN.encode({"reason": reason, "deadline_ms": deadline_ms, "message": message})
    return encode_frame(MessageType.SHUTDOWN, payload)


def heartbeat():
    return encode_frame(MessageType.HEARTBEAT)


class Reader:
    """Decodes what the server wrote: frames with their session payloads decoded."""

    def __init__(self, max_frame=1 << 30):
        self._decoder = FrameDecoder(max_frame)

    def feed(self, data):
        frames = []
        for frame in self._decoder.feed(data):
            layout = SESSION_LAYOUTS.get(frame.header.type)
            frames.append((frame.header, layout.decode(frame.payload) if layout else frame.payload))
        return frames
