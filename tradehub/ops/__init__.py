"""The operations endpoint: liveness, readiness and Prometheus metrics over HTTP."""
