"""
Configuration: every setting declared once, in L{SETTINGS}, read from the
environment, then `.env`, then its default; twistd options override all three.

A bad value raises L{ConfigError} naming the key and the problem, so the
daemon can stop with one line and no traceback.
"""

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import psycopg2.extensions
from decouple import Config, RepositoryEmpty, RepositoryEnv
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore

from .schema.kinds import symbol

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
LOG_FORMATS = ("text", "json")
# Alpaca's stock data feeds (the URL's last part).
ALPACA_FEEDS = ("iex", "sip", "delayed_sip", "boats", "overnight", "test")


class ConfigError(Exception):
    """A setting is missing or invalid; str() is the one line to show."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _text(value: str) -> str:
    return value.strip()


def _directory(value: str) -> Path:
    return Path(value.strip()).expanduser().resolve()


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"must be a positive number of seconds, got {value}")
    return number


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> float:
    """Seconds, or a number with a unit: 90s, 15m, 12h, 7d."""
    text = value.strip().lower()
    unit = _UNITS.get(text[-1:], None)
    try:
        number = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise ValueError(f"expected a duration such as 7d, 12h, 15m or 90 (seconds), got {value!r}") from None
    if not number > 0:
        raise ValueError(f"must be a positive duration, got {value}")
    return number


def _database_url(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    scheme = urlsplit(value).scheme
    if scheme not in ("postgres", "postgresql"):
        raise ValueError("expected a postgresql:// URL")
    try:
        psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError:
        raise ValueError("not a valid libpq URL") from None
    return value


def _server_endpoint(description: str, reactor: IReactorCore) -> None:
    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise ValueError(f"not a valid server endpoint string ({e})") from None


def _optional_server_endpoint(description: str, reactor: IReactorCore) -> None:
    if description:
        _server_endpoint(description, reactor)


def _http_url(value: str) -> str:
    value = value.strip()
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError(f"expected an http(s):// URL, got {value!r}")
    return value


def _ws_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if urlsplit(value).scheme not in ("ws", "wss") or not urlsplit(value).netloc:
        raise ValueError(f"expected a ws(s):// URL, got {value!r}")
    return value


def _feed(value: str) -> str:
    value = value.strip().lower()
    if value not in ALPACA_FEEDS:
        raise ValueError(f"expected one of {', '.join(ALPACA_FEEDS)}, got {value!r}")
    return value


def _symbols(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(symbol(part) for part in value.split(",") if part.strip()))


def _switch(value: str) -> bool:
    value = value.strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"expected on or off, got {value!r}")
    return value == "on"


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


@attrs.frozen
class Setting:
    """
    One configuration key: its environment name, option name, parser and
    optional check. The parser's return annotation is the type of the key's
    field on L{Settings}. Both raise ValueError naming the problem. The check
    also gets the reactor the daemon runs on: an endpoint string is only valid
    for a reactor, and validating must not import the global one.
    """

    key: str
    default: str
    parse: Callable[[str], Any]
    help: str
    option: str | None = None
    secret: bool = False
    check: Callable[[Any, IReactorCore], None] | None = None

    @property
    def attribute(self) -> str:
        """Its field on L{Settings}: the key without TRADEHUB_, in lower case."""
        return self.key.removeprefix("TRADEHUB_").lower()


SETTINGS = (
    Setting(
        "DATABASE_URL",
        "",
        _database_url,
        "libpq URL of PostgreSQL; empty starts the embedded cluster",
        "database-url",
        secret=True,
    ),
    Setting("TRADEHUB_DATA_DIR", "./var", _directory, "home of the embedded cluster (pgdata/) and of logs", "data-dir"),
    Setting(
        "TRADEHUB_FRONTEND_ENDPOINT",
        "tcp:7001:interface=127.0.0.1",
        _text,
        "server endpoint for the C++ frontend",
        "frontend-endpoint",
        check=_server_endpoint,
    ),
    Setting(
        "TRADEHUB_ML_ENDPOINT",
        "tcp:7002:interface=127.0.0.1",
        _text,
        "server endpoint for the Python ML modules",
        "ml-endpoint",
        check=_server_endpoint,
    ),
    Setting(
        "TRADEHUB_LISTEN_BACKLOG",
        "1024",
        _integer(1),
        "connections the kernel queues per listener before they are accepted (unless the endpoint sets backlog=)",
        "listen-backlog",
    ),
    Setting(
        "TRADEHUB_SEND_BUFFER",
        "131072",
        _integer(4096),
        "bytes of answers the kernel holds for one client before the hub stops answering it (Linux doubles it)",
        "send-buffer",
    ),
    Setting(
        "TRADEHUB_OPS_ENDPOINT",
        "tcp:7003:interface=127.0.0.1",
        _text,
        "server endpoint of the HTTP operations endpoint (/healthz, /readyz, /metrics); empty turns it off",
        "ops-endpoint",
        check=_optional_server_endpoint,
    ),
    Setting("TRADEHUB_FRONTEND_TOKEN", "", _text, "handshake secret of the FRONTEND role", secret=True),
    Setting("TRADEHUB_ML_TOKEN", "", _text, "handshake secret of the ML role", secret=True),
    Setting(
        "TRADEHUB_WORKERS",
        "1",
        _integer(1),
        "hub processes sharing the tcp listeners and, divided among them, the pool",
        "workers",
    ),
    Setting("TRADEHUB_DB_POOL_MIN", "2", _integer(1), "database connections kept open", "db-pool-min"),
    Setting("TRADEHUB_DB_POOL_MAX", "10", _integer(1), "most database connections open at once", "db-pool-max"),
    Setting(
        "TRADEHUB_DB_POOL_PER_CLIENT",
        "2",
        _integer(1),
        "most database connections the work of one client connection holds at once",
        "db-pool-per-client",
    ),
    Setting(
        "TRADEHUB_DB_IDLE_TIMEOUT",
        "60",
        _seconds,
        "seconds an idle connection above the minimum is kept",
        "db-idle-timeout",
    ),
    Setting(
        "TRADEHUB_DB_RETRY_BUDGET",
        "15",
        _seconds,
        "seconds a transient database failure is retried before the request is answered DB_UNAVAILABLE",
        "db-retry-budget",
    ),
    Setting(
        "TRADEHUB_DB_RETRY_BACKOFF",
        "0.1",
        _seconds,
        "first retry delay in seconds, doubling up to 0.5",
        "db-retry-backoff",
    ),
    Setting(
        "TRADEHUB_DB_CONNECT_TIMEOUT",
        "5",
        _seconds,
        "seconds a database connection may take to open",
        "db-connect-timeout",
    ),
    Setting(
        "TRADEHUB_DB_STATEMENT_TIMEOUT",
        "5",
        _seconds,
        "seconds a statement may run before PostgreSQL cancels it (BUSY); a server silent 1 s longer is dropped",
        "db-statement-timeout",
    ),
    Setting(
        "TRADEHUB_HANDSHAKE_TIMEOUT", "10", _seconds, "seconds a client has to complete HELLO", "handshake-timeout"
    ),
    Setting("TRADEHUB_HEARTBEAT_MS", "5000", _integer(1), "heartbeat interval in milliseconds", "heartbeat-ms"),
    Setting("TRADEHUB_MAX_FRAME", "1048576", _integer(64), "largest frame body in bytes", "max-frame"),
    Setting(
        "TRADEHUB_MAX_REQUEST",
        "67108864",
        _integer(64),
        "largest request in bytes once its MORE frames are joined",
        "max-request",
    ),
    Setting(
        "TRADEHUB_MAX_IN_FLIGHT",
        "4096",
        _integer(1),
        "unanswered requests per connection before reading pauses (or once they hold TRADEHUB_MAX_REQUEST bytes)",
        "max-in-flight",
    ),
    Setting(
        "TRADEHUB_SHUTDOWN_DEADLINE", "10", _seconds, "seconds to drain clients when stopping", "shutdown-deadline"
    ),
    Setting(
        "TRADEHUB_CHANGE_RETENTION",
        "7d",
        _duration,
        "how long the change log keeps a change for subscribers resuming from a position (7d, 12h, 90 seconds)",
        "change-retention",
    ),
    Setting(
        "TRADEHUB_CHANGE_SWEEP_SECONDS",
        "1",
        _seconds,
        "seconds between looks for changes written outside this hub (another hub's NOTIFY is immediate)",
        "change-sweep-seconds",
    ),
    Setting("TRADEHUB_LOG_FORMAT", "text", _log_format, "log line format: text or json", "log-format"),
    Setting(
        "APCA_API_KEY_ID", "", _text, "Alpaca key id; empty turns the Alpaca sync and order submission off", secret=True
    ),
    Setting("APCA_API_SECRET_KEY", "", _text, "Alpaca secret key", secret=True),
    Setting(
        "APCA_API_BASE_URL",
        "https://paper-api.alpaca.markets",
        _http_url,
        "Alpaca Trading API (paper by default)",
        "alpaca-base-url",
    ),
    Setting("APCA_API_DATA_URL", "https://data.alpaca.markets", _http_url, "Alpaca Market Data API", "alpaca-data-url"),
    Setting(
        "TRADEHUB_ALPACA_SYNC_SECONDS",
        "15",
        _seconds,
        "seconds between syncs of account, positions and open orders",
        "alpaca-sync-seconds",
    ),
    Setting(
        "TRADEHUB_ALPACA_ASSETS_SECONDS",
        "86400",
        _seconds,
        "seconds between syncs of the asset list",
        "alpaca-assets-seconds",
    ),
    Setting(
        "TRADEHUB_ALPACA_TRADE_STREAM",
        "on",
        _switch,
        "on: hold Alpaca's trading stream (wss://{APCA_API_BASE_URL host}/stream) for fills as they happen",
        "alpaca-trade-stream",
    ),
    Setting(
        "TRADEHUB_ALPACA_MARKET_DATA",
        "on",
        _switch,
        "on: hold Alpaca's stock market-data stream and store its trades and quotes as MARKET_TICK rows",
        "alpaca-market-data",
    ),
    Setting(
        "APCA_API_DATA_STREAM_URL",
        "wss://stream.data.alpaca.markets",
        _ws_url,
        "Alpaca's market-data streams: stocks at /v2/{feed}, crypto at /v1beta3/crypto/us",
        "alpaca-data-stream-url",
    ),
    Setting("TRADEHUB_ALPACA_FEED", "iex", _feed, "stock data feed: " + ", ".join(ALPACA_FEEDS), "alpaca-feed"),
    Setting(
        "TRADEHUB_ALPACA_CRYPTO",
        "off",
        _switch,
        "on: also hold Alpaca's crypto market-data stream (symbols such as BTC/USD)",
        "alpaca-crypto",
    ),
    Setting(
        "TRADEHUB_ALPACA_SYMBOLS",
        "",
        _symbols,
        "symbols whose trades and quotes are always streamed (comma-separated); subscribers' symbols are added",
        "alpaca-symbols",
    ),
    Setting("TRADEHUB_ALPACA_TIMEOUT", "10", _seconds, "seconds an Alpaca call may take", "alpaca-timeout"),
    Setting(
        "TRADEHUB_ALPACA_RETRY_ATTEMPTS",
        "4",
        _integer(0),
        "retries of an Alpaca call that timed out or got 429/5xx",
        "alpaca-retry-attempts",
    ),
)


@attrs.frozen(these={s.attribute: attrs.field(repr=not s.secret) for s in SETTINGS})
class Settings:
    """
    The validated configuration the daemon is built from.

    attrs builds its fields from L{SETTINGS} (C{these}): one per key, in table
    order, secrets left out of repr. attrs ignores the annotations below; they
    are for type checkers, to which fields made at run time are invisible (a
    class from attrs.make_class is a bare C{type} to mypy, every attribute
    Any). test_config checks them against SETTINGS and the parsers' return
    types, so the two cannot drift.
    """

    database_url: str
    data_dir: Path
    frontend_endpoint: str
    ml_endpoint: str
    listen_backlog: int
    send_buffer: int
    ops_endpoint: str
    frontend_token: str
    ml_token: str
    workers: int
    db_pool_min: int
    db_pool_max: int
    db_pool_per_client: int
    db_idle_timeout: float
    db_retry_budget: float
    db_retry_backoff: float
    db_connect_timeout: float
    db_statement_timeout: float
    handshake_timeout: float
    heartbeat_ms: int
    max_frame: int
    max_request: int
    max_in_flight: int
    shutdown_deadline: float
    change_retention: float
    change_sweep_seconds: float
    log_format: str
    apca_api_key_id: str
    apca_api_secret_key: str
    apca_api_base_url: str
    apca_api_data_url: str
    alpaca_sync_seconds: float
    alpaca_assets_seconds: float
    alpaca_trade_stream: bool
    alpaca_market_data: bool
    apca_api_data_stream_url: str
    alpaca_feed: str
    alpaca_crypto: bool
    alpaca_symbols: tuple[str, ...]
    alpaca_timeout: float
    alpaca_retry_attempts: int

    @property
    def alpaca_enabled(self) -> bool:
        return bool(self.apca_api_key_id and self.apca_api_secret_key)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def tokens(self) -> dict[str, str]:
        """Role name to handshake secret."""
        return {"FRONTEND": self.frontend_token, "ML": self.ml_token}


def load_settings(
    reactor: IReactorCore,
    env_file: str | Path = ".env",
    overrides: Mapping[str, str] | None = None,
    example_file: str | Path = ENV_EXAMPLE,
) -> Settings:
    """
    Read every setting (overrides, environment, env_file, default, in that
    order), parse and cross-check them, and return L{Settings}. Endpoint
    strings are checked against C{reactor}, the one the daemon will listen on.
    """
    overrides = overrides or {}
    env_path = Path(env_file)
    repository = RepositoryEnv(str(env_path)) if env_path.is_file() else RepositoryEmpty()
    config = Config(repository)
    values = {}
    for setting in SETTINGS:
        raw = overrides.get(setting.key)
        if raw is None:
            raw = config(setting.key, default=setting.default)
        try:
            value = setting.parse(str(raw))
            if setting.check is not None:
                setting.check(value, reactor)
        except ValueError as e:
            raise ConfigError(setting.key, str(e)) from None
        values[setting.attribute] = value
    settings = Settings(**values)
    _cross_check(settings, _example_values(example_file))
    return settings


def _example_values(example_file: str | Path) -> dict[str, str]:
    path = Path(example_file)
    if not path.is_file():
        return {}
    return dict(RepositoryEnv(str(path)).data)


def _cross_check(settings: Settings, example: Mapping[str, str]) -> None:
    if bool(settings.apca_api_key_id) != bool(settings.apca_api_secret_key):
        raise ConfigError(
            "APCA_API_SECRET_KEY", "APCA_API_KEY_ID and APCA_API_SECRET_KEY are set together or not at all"
        )
    if settings.max_request < settings.max_frame:
        raise ConfigError(
            "TRADEHUB_MAX_REQUEST",
            f"{settings.max_request} is below TRADEHUB_MAX_FRAME ({settings.max_frame})",
        )
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError(
            "TRADEHUB_DB_POOL_MIN",
            f"{settings.db_pool_min} is above TRADEHUB_DB_POOL_MAX ({settings.db_pool_max})",
        )
    for role, endpoint in (("FRONTEND", settings.frontend_endpoint), ("ML", settings.ml_endpoint)):
        token_key = f"TRADEHUB_{role}_TOKEN"
        endpoint_key = f"TRADEHUB_{role}_ENDPOINT"
        token = settings.tokens[role]
        if not token:
            raise ConfigError(token_key, "must be set to a non-empty secret")
        if token == example.get(token_key) and not is_local_endpoint(endpoint):
            raise ConfigError(
                token_key,
                f"still has the .env.example value while {endpoint_key} listens beyond loopback",
            )


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def is_local_endpoint(description: str) -> bool:
    """
    True when a server endpoint string can only be reached from this
    machine: a unix socket, or a TCP/SSL listener bound to a loopback address.
    A TCP listener with no interface binds every address, so it is not local.
    """
    kind, *parts = [p.replace("\\:", ":") for p in _UNESCAPED_COLON.split(description)]
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    interface = options.get("interface", "")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """A database URL fit for logs: the password, if any, replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
