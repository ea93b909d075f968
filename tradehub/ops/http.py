"""
The operations endpoint's HTTP resources, served by twisted.web on
TRADEHUB_OPS_ENDPOINT: /healthz (the process answers), /readyz (each part
ready or not, in JSON) and /metrics (Prometheus text format).
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .readiness import Readiness


class Health(Resource):
    """Liveness: 200 whenever the process answers at all; nothing is checked."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Ready(Resource):
    """Readiness: 200 when every part is ready, else 503; the JSON body says which part is and which is not."""

    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: Request) -> int:
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)
        report = ensureDeferred(self.readiness.report())
        report.addCallback(lambda parts: None if gone else self._answer(request, parts))
        report.addErrback(request.processingFailed)
        return NOT_DONE_YET

    @staticmethod
    def _answer(request: Request, parts: dict[str, dict[str, Any]]) -> None:
        ready = all(part["ready"] for part in parts.values())
        request.setResponseCode(http.OK if ready else http.SERVICE_UNAVAILABLE)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps({"ready": ready, "parts": parts}, indent=2).encode() + b"\n")
        request.finish()


def metrics_resource(registry: CollectorRegistry) -> IResource:
    """
    prometheus_client's own Twisted resource on C{registry}. It renders in the
    global reactor's thread pool, and importing it imports that reactor: so
    it is imported here, once the daemon's reactor is installed.
    """
    from prometheus_client.twisted import MetricsResource

    return MetricsResource(registry)


class OpsSite(Site):
    """twisted.web's Site, quiet: no access log (probes every few seconds would fill it), no tracebacks in answers."""

    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        """Nothing: see the class."""


def ops_site(reactor: IReactorTime, readiness: Readiness, registry: CollectorRegistry) -> Site:
    """/healthz, /readyz and /metrics; every other path is 404."""
    root = Resource()
    root.putChild(b"healthz", Health())
    root.putChild(b"readyz", Ready(readiness))
    root.putChild(b"metrics", metrics_resource(registry))
    return OpsSite(root, reactor=reactor)
