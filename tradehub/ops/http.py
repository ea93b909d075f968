"""
The operations endpoint's HTTP resources, served by twisted.web on
TRADEHUB_OPS_ENDPOINT: /healthz (the process answers), /readyz (each part
ready or not, in JSON) and /metrics (Prometheus text format).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .readiness import Readiness


class Health(Resource):
    """Liveness: 200 whenever the process answers at all; nothing is checked."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


def answer_later(request: Request, outcome: Deferred[Any], answer: Callable[[Request, Any], None]) -> int:
    """Answer C{request} with C{answer(request, result)} once C{outcome} fires, unless the client left."""
    gone: list[object] = []
    request.notifyFinish().addErrback(gone.append)
    outcome.addCallback(lambda result: None if gone else answer(request, result))
    outcome.addErrback(request.processingFailed)
    return NOT_DONE_YET


class Ready(Resource):
    """Readiness: 200 when every part is ready, else 503; the JSON body says which part is and which is not."""

    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: Request) -> int:
        return answer_later(request, ensureDeferred(self.readiness.report()), self._answer)

    @staticmethod
    def _answer(request: Request, parts: dict[str, dict[str, Any]]) -> None:
        ready = all(part["ready"] for part in parts.values())
        request.setResponseCode(http.OK if ready else http.SERVICE_UNAVAILABLE)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps({"ready": ready, "parts": parts}, indent=2).encode() + b"\n")
        request.finish()


class MetricsPage(Resource):
    """
    /metrics in Prometheus text format, rendered in the reactor's thread pool
    (a scrape of the workers' series waits on them there). prometheus_client
    has a Twisted resource too, but as a WSGI application it cannot answer
    on a unix socket, where a worker serves its metrics.
    """

    isLeaf = True

    def __init__(self, reactor: Any, registry: CollectorRegistry) -> None:
        super().__init__()
        self.reactor = reactor
        self.registry = registry

    def render_GET(self, request: Request) -> int:
        text = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), generate_latest, self.registry)
        return answer_later(request, text, self._answer)

    @staticmethod
    def _answer(request: Request, body: bytes) -> None:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.write(body)
        request.finish()


class OpsSite(Site):
    """twisted.web's Site, quiet: no access log (probes every few seconds would fill it), no tracebacks in answers."""

    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        """Nothing: see the class."""


def ops_site(reactor: Any, readiness: Readiness, registry: CollectorRegistry) -> Site:
    """/healthz, /readyz and /metrics; every other path is 404."""
    root = Resource()
    root.putChild(b"healthz", Health())
    root.putChild(b"readyz", Ready(readiness))
    root.putChild(b"metrics", MetricsPage(reactor, registry))
    return OpsSite(root, reactor=reactor)
