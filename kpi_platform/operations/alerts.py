"""Alerts: severities, the Slack / Discord / email channels (through apprise, configured by environment variables),
routing by minimum severity, one notification per problem until it is resolved (state in the warehouse table
`alert_state`), and redaction of every secret.

Channels and their defaults (see settings.ENV_ALERT_*):

| channel | configured by                                                              | minimum severity |
|---------|----------------------------------------------------------------------------|------------------|
| slack   | KPI_ALERT_SLACK_WEBHOOK (incoming webhook URL)                             | HIGH             |
| discord | KPI_ALERT_DISCORD_WEBHOOK (webhook URL)                                    | HIGH             |
| email   | KPI_ALERT_SMTP_HOST, _PORT, _USER, _PASSWORD, _TLS, KPI_ALERT_EMAIL_FROM/_TO | CRITICAL         |

A channel is off while its variables are unset; `KPI_ALERT_<CHANNEL>_MIN_SEVERITY` changes its minimum.
Webhook URLs, the SMTP password, the Meta access token and the watchdog's heartbeat URL (KPI_HEARTBEAT_URL) never
reach a log line, an exception or a message (`env_secrets`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from kpi_platform import settings
from kpi_platform.meta.breaker import OPEN, BreakerState
from kpi_platform.meta.client import URL_LOGGERS
from kpi_platform.meta.errors import redact
from kpi_platform.warehouse import Warehouse, as_utc, schema

if TYPE_CHECKING:
    from apprise.common import NotifyType

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Loggers that may write a webhook URL or an SMTP exchange while a notification is sent.
DELIVERY_LOGGERS: tuple[str, ...] = ("apprise", *URL_LOGGERS)
#: Discord refuses a `content` longer than 2000 characters.
DISCORD_MAX_CHARS = 2000
SLACK_MAX_CHARS = 35_000
KEY_MAX_CHARS = 200
#: Path segments of a webhook URL at least this long are its token, redacted on their own too.
SECRET_SEGMENT_MIN_CHARS = 16
SMTP_TLS_MODES = {"none": "insecure", "starttls": "starttls", "ssl": "ssl"}
SMTP_DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
RUNBOOK = "README › Runbook"


class Severity(IntEnum):
    """How urgently someone must act.

    CRITICAL: data is not being collected (a client-day failed after retries, a breaker is open, the token is
    invalid). HIGH: wrong data was or would be stored (split data, a blocking check failed). MEDIUM: data is late
    or incomplete (freshness missed, completeness below target). LOW: worth a look (an anomaly).
    """

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | Severity, *, what: str = "severity") -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValueError(f"{what}: {value!r} is not one of {', '.join(s.name for s in cls)}") from None


def _notify_type(severity: Severity, *, resolved: bool) -> NotifyType:
    # apprise is imported only on a send: processes that never alert (e.g. `kpi-platform health`) skip its cost.
    from apprise.common import NotifyType

    if resolved:
        return NotifyType.SUCCESS
    return {
        Severity.CRITICAL: NotifyType.FAILURE,
        Severity.HIGH: NotifyType.FAILURE,
        Severity.MEDIUM: NotifyType.WARNING,
        Severity.LOW: NotifyType.INFO,
    }[severity]


@dataclass(frozen=True)
class Alert:
    """One problem. `key` is its stable identity (e.g. `token_invalid:acme`), the unit of de-duplication;
    `body` says what happened (client, day, rule, observed vs expected) and what to do, with a runbook pointer."""

    key: str
    severity: Severity
    title: str
    body: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity.parse(self.severity, what=f"alert {self.key!r}"))
        if not self.key or len(self.key) > KEY_MAX_CHARS:
            raise ValueError(f"alert key must be 1..{KEY_MAX_CHARS} characters, got {self.key!r}")


@dataclass(frozen=True)
class Channel:
    """A destination: `kind` is slack, discord or email; `apprise_url` and `secrets` are never shown."""

    kind: str
    apprise_url: str = field(repr=False)
    min_severity: Severity
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def accepts(self, severity: Severity) -> bool:
        return severity >= self.min_severity


@dataclass(frozen=True)
class SyncResult:
    """Keys of one `Notifier.sync`: newly notified, resolved, and present (open) after it."""

    notified: tuple[str, ...]
    resolved: tuple[str, ...]
    open: tuple[str, ...]


@dataclass(frozen=True)
class OpenProblem:
    """An `alert_state` row whose problem is not resolved."""

    key: str
    severity: Severity
    title: str
    first_seen: datetime
    last_seen: datetime
    notified_at: datetime | None


# --- Channel configuration --------------------------------------------------------------------------------------


def webhook_apprise_url(webhook_url: str, *, message_field: str) -> str:
    """The apprise `json://` / `jsons://` URL posting `{message_field: <text>}` to exactly `webhook_url`.

    apprise's own Slack and Discord plugins rebuild the URL on fixed hosts (hooks.slack.com, discord.com) from
    the tokens; the generic JSON plugin posts to the URL as given, so the configured webhook (or a proxy, or a
    local test server) is honoured, and its payload remapping produces the one field both services need
    (`text` for Slack, `content` for Discord) with apprise's own fields removed.
    """
    parts = urlsplit(webhook_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the webhook is not an http(s) URL")
    query = [(f"-{name}", value) for name, value in parse_qsl(parts.query, keep_blank_values=True)]
    query += [
        (":message", message_field),
        (":title", ""),
        (":version", ""),
        (":type", ""),
        (":attachments", ""),
    ]
    scheme = "jsons" if parts.scheme == "https" else "json"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


def webhook_secrets(webhook_url: str) -> tuple[str, ...]:
    """The URL, its path, and its long path segments (the webhook token)."""
    path = urlsplit(webhook_url).path
    segments = [s for s in path.split("/") if len(s) >= SECRET_SEGMENT_MIN_CHARS]
    return tuple(s for s in (webhook_url, webhook_url.rstrip("/"), path, *segments) if s and s != "/")


def smtp_apprise_url(
    *,
    host: str,
    port: int,
    tls: str,
    user: str | None,
    password: str | None,
    sender: str,
    recipients: Sequence[str],
) -> str:
    """The apprise `mailto://` (tls none) or `mailtos://` URL for one SMTP server; every part is quoted."""
    if tls not in SMTP_TLS_MODES:
        raise ValueError(f"{settings.ENV_ALERT_SMTP_TLS}: {tls!r} is not one of {', '.join(SMTP_TLS_MODES)}")
    auth = ""
    if user:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
    query = urlencode(
        {
            "smtp": host,
            "from": sender,
            "to": ",".join(recipients),
            "mode": SMTP_TLS_MODES[tls],
            "format": "text",
        }
    )
    scheme = "mailto" if tls == "none" else "mailtos"
    return f"{scheme}://{auth}{host}:{port}/?{query}"


#: (URL variable, minimum-severity variable, the JSON field carrying the message) of each webhook channel.
_SLACK_SETTINGS = (settings.ENV_ALERT_SLACK_WEBHOOK, settings.ENV_ALERT_SLACK_MIN_SEVERITY, "text")
_DISCORD_SETTINGS = (settings.ENV_ALERT_DISCORD_WEBHOOK, settings.ENV_ALERT_DISCORD_MIN_SEVERITY, "content")


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _minimum(env: Mapping[str, str], kind: str, variable: str) -> Severity:
    return Severity.parse(_get(env, variable) or settings.DEFAULT_ALERT_MIN_SEVERITY[kind], what=variable)


def _webhook_channel(
    env: Mapping[str, str], kind: str, url_variable: str, min_variable: str, message_field: str
) -> Channel | None:
    url = _get(env, url_variable)
    if not url:
        return None
    try:
        apprise_url = webhook_apprise_url(url, message_field=message_field)
    except ValueError as exc:
        raise ValueError(f"{url_variable}: {exc}") from None
    return Channel(
        kind, apprise_url, _minimum(env, kind, min_variable), secrets=(*webhook_secrets(url), apprise_url)
    )


def _email_channel(env: Mapping[str, str]) -> Channel | None:
    host = _get(env, settings.ENV_ALERT_SMTP_HOST)
    if not host:
        return None
    tls = (_get(env, settings.ENV_ALERT_SMTP_TLS) or "starttls").lower()
    if tls not in SMTP_TLS_MODES:
        raise ValueError(f"{settings.ENV_ALERT_SMTP_TLS}: {tls!r} is not one of {', '.join(SMTP_TLS_MODES)}")
    raw_port = _get(env, settings.ENV_ALERT_SMTP_PORT)
    try:
        port = int(raw_port) if raw_port else SMTP_DEFAULT_PORTS[tls]
    except ValueError:
        raise ValueError(f"{settings.ENV_ALERT_SMTP_PORT}: {raw_port!r} is not a port number") from None
    sender = _get(env, settings.ENV_ALERT_EMAIL_FROM)
    recipients = [r.strip() for r in _get(env, settings.ENV_ALERT_EMAIL_TO).split(",") if r.strip()]
    missing = [
        name
        for name, value in (
            (settings.ENV_ALERT_EMAIL_FROM, sender),
            (settings.ENV_ALERT_EMAIL_TO, recipients),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"{settings.ENV_ALERT_SMTP_HOST} is set but {', '.join(missing)} is not")
    password = env.get(settings.ENV_ALERT_SMTP_PASSWORD) or None
    apprise_url = smtp_apprise_url(
        host=host,
        port=port,
        tls=tls,
        user=_get(env, settings.ENV_ALERT_SMTP_USER) or None,
        password=password,
        sender=sender,
        recipients=recipients,
    )
    secrets = (password, apprise_url) if password else (apprise_url,)
    return Channel(
        "email", apprise_url, _minimum(env, "email", settings.ENV_ALERT_EMAIL_MIN_SEVERITY), secrets
    )


def channels_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    on_invalid: Callable[[str, ValueError], None] | None = None,
) -> tuple[Channel, ...]:
    """The configured channels. An invalid setting raises ValueError naming its variable (never a secret); with
    `on_invalid`, that channel is instead reported as (kind, error) and left out, and the others are kept."""
    env = os.environ if environ is None else environ
    builders: tuple[tuple[str, Callable[[], Channel | None]], ...] = (
        ("slack", partial(_webhook_channel, env, "slack", *_SLACK_SETTINGS)),
        ("discord", partial(_webhook_channel, env, "discord", *_DISCORD_SETTINGS)),
        ("email", partial(_email_channel, env)),
    )
    channels: list[Channel] = []
    for kind, build in builders:
        try:
            channel = build()
        except ValueError as exc:
            if on_invalid is None:
                raise
            on_invalid(kind, exc)
            continue
        if channel is not None:
            channels.append(channel)
    return tuple(channels)


# --- Delivery ---------------------------------------------------------------------------------------------------


class _RedactFilter(logging.Filter):
    """Rewrites records (message and traceback) of the delivery loggers through `redact` with our secrets."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = redact(message, self._secrets), ()
        return True


def env_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every secret the environment gives the platform's senders, longest first: the webhook URLs and the
    heartbeat URL (each with its path, token segments and query, as an HTTP error quotes them), the SMTP password
    and the Meta access token."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    urls = (settings.ENV_ALERT_SLACK_WEBHOOK, settings.ENV_ALERT_DISCORD_WEBHOOK, settings.ENV_HEARTBEAT_URL)
    for name in urls:
        url = (env.get(name) or "").strip()
        if url:
            found.update((url, *webhook_secrets(url)))
            parts = urlsplit(url)
            if parts.query:
                found.update((f"{parts.path}?{parts.query}", parts.query))
    found.update(env.get(name) or "" for name in (settings.ENV_ALERT_SMTP_PASSWORD, settings.ENV_TOKEN))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def redacted_logs(secrets: Iterable[str | None]) -> AbstractContextManager[None]:
    """While inside, the records of the delivery loggers (apprise, urllib3) have `secrets` redacted: for any
    request to a secret URL, such as the watchdog's heartbeat."""
    return _redacted_logs(tuple(sorted({s for s in secrets if s}, key=len, reverse=True)))


@contextmanager
def _redacted_logs(secrets: tuple[str, ...]) -> Iterator[None]:
    log_filter = _RedactFilter(secrets)
    loggers = [logging.getLogger(name) for name in DELIVERY_LOGGERS]
    for each in loggers:
        each.addFilter(log_filter)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(log_filter)


def _render(kind: str, *, severity_label: str, title: str, body: str) -> tuple[str, str]:
    """(title, body) as the channel shows them; chat messages carry the title in their only text field."""
    if kind == "email":
        return f"[kpi_platform {severity_label}] {title}", body
    if kind == "discord":
        text = f"**[{severity_label}] {title}**\n{body}"
        return "", text if len(text) <= DISCORD_MAX_CHARS else text[: DISCORD_MAX_CHARS - 1] + "…"
    text = f"*[{severity_label}] {title}*\n{body}"
    return "", text if len(text) <= SLACK_MAX_CHARS else text[: SLACK_MAX_CHARS - 1] + "…"


# --- The notifier -----------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Sends alerts to the channels whose minimum severity they reach, once per problem until it is resolved.

    The open problems live in `alert_state`, so de-duplication holds across runs, sensors and processes; each
    state change is one conditional statement, so two processes raising the same problem notify once. Sending
    never raises: a failing channel logs a redacted warning and the others still get the message.
    """

    def __init__(
        self,
        warehouse: Warehouse | sa.Engine,
        *,
        channels: Sequence[Channel],
        clock: Clock = _utcnow,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self._engine = warehouse.engine if isinstance(warehouse, Warehouse) else warehouse
        self._channels = tuple(channels)
        self._clock = clock
        all_secrets = {s for s in secrets if s} | {s for c in self._channels for s in c.secrets if s}
        # Longest first, so a URL is replaced whole before its path or token would be.
        self._secrets = tuple(sorted(all_secrets, key=len, reverse=True))

    @classmethod
    def from_env(
        cls,
        warehouse: Warehouse | sa.Engine,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock = _utcnow,
        log: logging.Logger = logger,
    ) -> Notifier:
        """Channels from the KPI_ALERT_* variables; the Meta access token is redacted from messages too.

        A channel with an invalid setting is logged as an error on `log` (channel and variable, never a secret)
        and left out: one typo must not fail the caller or silence the other channels."""
        env = os.environ if environ is None else environ
        secret_variables = (
            settings.ENV_ALERT_SLACK_WEBHOOK,
            settings.ENV_ALERT_DISCORD_WEBHOOK,
            settings.ENV_ALERT_SMTP_PASSWORD,
            settings.ENV_TOKEN,
            settings.ENV_HEARTBEAT_URL,
        )
        # The errors quote only non-secret values (a severity, a port, a TLS mode); redacting keeps it that way.
        secrets = [env.get(name) for name in secret_variables]

        def report(kind: str, error: ValueError) -> None:
            log.error("alert channel %s is off, its settings are invalid: %s", kind, redact(error, secrets))

        channels = channels_from_env(env, on_invalid=report)
        return cls(warehouse, channels=channels, clock=clock, secrets=env_secrets(env))

    def __repr__(self) -> str:
        channels = ", ".join(f"{c.kind}>={c.min_severity.name}" for c in self._channels)
        return f"Notifier({channels or 'no channels'})"

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    # --- problems ---

    def raise_alert(self, alert: Alert) -> bool:
        """Record the problem and notify its channels if it is new, came back after being resolved, got more
        severe, or could not be delivered before. True if at least one channel got it now."""
        table = schema.alert_state
        now = self._clock()
        alert = replace(
            alert, title=redact(alert.title, self._secrets), body=redact(alert.body, self._secrets)
        )
        lower = [s.name for s in Severity if s < alert.severity]
        with self._engine.begin() as conn:
            claimed = self._insert_new(conn, alert, now)
            if not claimed:
                claimed = self._update(
                    conn,
                    alert.key,
                    table.c.resolved_at.is_not(None),
                    severity=alert.severity.name,
                    title=alert.title,
                    first_seen=now,
                    last_seen=now,
                    notified_at=now,
                    resolved_at=None,
                )
            if not claimed:
                claimed = self._update(
                    conn,
                    alert.key,
                    table.c.resolved_at.is_(None),
                    sa.or_(table.c.notified_at.is_(None), table.c.severity.in_(lower)),
                    severity=alert.severity.name,
                    title=alert.title,
                    last_seen=now,
                    notified_at=now,
                )
            if not claimed:
                self._update(conn, alert.key, last_seen=now)
                return False
        sent = self._deliver(
            severity=alert.severity, label=alert.severity.name, title=alert.title, body=alert.body
        )
        if not sent:
            # Nobody heard of it: the next raise tries again.
            with self._engine.begin() as conn:
                self._update(conn, alert.key, table.c.notified_at == now, notified_at=None)
        return sent

    def resolve(self, key: str) -> bool:
        """Mark the problem `key` resolved; send a "resolved" message, once, to the channels that were told of
        it. False if it was not open, was never delivered, or no channel took the message."""
        return self._resolve(key)[1]

    def _resolve(self, key: str) -> tuple[bool, bool]:
        """(closed by this call, "resolved" message sent)."""
        now = self._clock()
        row = self._close(key, now)
        if row is None or row.notified_at is None:
            return row is not None, False
        first_seen = as_utc(row.first_seen)
        body = (
            f"Resolved: the problem `{key}` is no longer present.\n"
            f"First seen {first_seen:%Y-%m-%d %H:%M} UTC, resolved {now:%Y-%m-%d %H:%M} UTC."
        )
        sent = self._deliver(
            severity=Severity.parse(row.severity), label="RESOLVED", title=row.title, body=body, resolved=True
        )
        return True, sent

    def sync(self, current_problems: Iterable[Alert], scope_prefix: str) -> SyncResult:
        """Make the open problems whose key starts with `scope_prefix` equal `current_problems`: new ones are
        notified, open ones stay silent, those no longer present are resolved. Every current key must start with
        the (non-empty) prefix, so one checker never resolves another's problems."""
        if not scope_prefix:
            raise ValueError("scope_prefix must not be empty")
        current = list(current_problems)
        keys = [a.key for a in current]
        outside = [k for k in keys if not k.startswith(scope_prefix)]
        if outside:
            raise ValueError(f"alert keys {outside} are outside the scope {scope_prefix!r}")
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"alert keys given more than once: {duplicates}")
        notified = tuple(a.key for a in current if self.raise_alert(a))
        present = set(keys)
        resolved = []
        for problem in self.open_problems(scope_prefix=scope_prefix):
            if problem.key not in present and self._resolve(problem.key)[0]:
                resolved.append(problem.key)
        return SyncResult(notified=notified, resolved=tuple(resolved), open=tuple(keys))

    def open_problems(self, *, scope_prefix: str = "") -> list[OpenProblem]:
        """Unresolved problems (whose key starts with `scope_prefix`), most severe first, then by key."""
        table = schema.alert_state
        query = sa.select(table).where(table.c.resolved_at.is_(None))
        if scope_prefix:
            query = query.where(table.c.key.startswith(scope_prefix, autoescape=True))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        problems = [
            OpenProblem(
                key=r.key,
                severity=Severity.parse(r.severity),
                title=r.title,
                first_seen=as_utc(r.first_seen),
                last_seen=as_utc(r.last_seen),
                notified_at=as_utc(r.notified_at),
            )
            for r in rows
        ]
        return sorted(problems, key=lambda p: (-p.severity, p.key))

    # --- SQL ---

    def _close(self, key: str, now: datetime) -> sa.Row | None:
        """Set resolved_at on the open row `key`; the row as it was, None if it was not open."""
        table = schema.alert_state
        with self._engine.begin() as conn:
            return conn.execute(
                table.update()
                .where(table.c.key == key, table.c.resolved_at.is_(None))
                .values(resolved_at=now)
                .returning(table.c.severity, table.c.title, table.c.first_seen, table.c.notified_at)
            ).first()

    @staticmethod
    def _insert_new(conn: sa.Connection, alert: Alert, now: datetime) -> bool:
        table = schema.alert_state
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(table)
            .values(
                key=alert.key,
                severity=alert.severity.name,
                title=alert.title,
                first_seen=now,
                last_seen=now,
                notified_at=now,
                resolved_at=None,
            )
            .on_conflict_do_nothing(index_elements=[table.c.key])
        )
        return conn.execute(statement).rowcount == 1

    @staticmethod
    def _update(conn: sa.Connection, key: str, *conditions: Any, **values: Any) -> bool:
        table = schema.alert_state
        return (
            conn.execute(table.update().where(table.c.key == key, *conditions).values(**values)).rowcount == 1
        )

    # --- sending ---

    def _deliver(
        self, *, severity: Severity, label: str, title: str, body: str, resolved: bool = False
    ) -> bool:
        """Send to every channel accepting `severity`; True if at least one took it. Never raises."""
        title, body = redact(title, self._secrets), redact(body, self._secrets)
        results: dict[str, bool] = {}
        for channel in self._channels:
            if channel.accepts(severity):
                results[channel.kind] = self._send(
                    channel, severity=severity, label=label, title=title, body=body, resolved=resolved
                )
        return any(results.values())

    def _send(
        self, channel: Channel, *, severity: Severity, label: str, title: str, body: str, resolved: bool
    ) -> bool:
        shown_title, shown_body = _render(channel.kind, severity_label=label, title=title, body=body)
        notify_type = _notify_type(severity, resolved=resolved)
        try:
            with _redacted_logs(self._secrets):
                import apprise
                from apprise.common import NotifyFormat, PersistentStoreMode

                # A new apprise object per message: its plugins pace repeated sends from one object (5.5 s for
                # email), and nothing is persisted to disk.
                sender = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode=PersistentStoreMode.MEMORY))
                if not sender.add(channel.apprise_url):
                    logger.warning(
                        "alert channel %s: apprise refused its URL; check its settings", channel.kind
                    )
                    return False
                sent = bool(
                    sender.notify(
                        body=shown_body,
                        title=shown_title,
                        notify_type=notify_type,
                        body_format=NotifyFormat.TEXT,
                    )
                )
        except Exception as exc:  # noqa: BLE001 - an alert channel must never break the caller
            logger.warning(
                "alert channel %s failed for '%s': %s: %s",
                channel.kind,
                title,
                type(exc).__name__,
                redact(exc, self._secrets),
            )
            return False
        if not sent:
            logger.warning(
                "alert channel %s did not accept '%s' (see the apprise log above)", channel.kind, title
            )
        return sent


# --- Alerts of the platform's own state -----------------------------------------------------------------------

BREAKER_ALERT_PREFIX = "breaker_open:"


def breaker_alerts(states: Iterable[BreakerState]) -> list[Alert]:
    """One CRITICAL alert per open circuit breaker; sync them with scope `BREAKER_ALERT_PREFIX`."""
    alerts = []
    for state in states:
        if state.state != OPEN:
            continue
        alerts.append(
            Alert(
                key=f"{BREAKER_ALERT_PREFIX}{state.name}",
                severity=Severity.CRITICAL,
                title=f"Meta API circuit breaker {state.name} is open",
                body=(
                    f"Runs for {state.scope} fail fast without calling Meta since "
                    f"{state.opened_at:%Y-%m-%d %H:%M} UTC, after {state.fail_counter} consecutive failures "
                    f"(expected: 0 open breakers). A trial call is let through from "
                    f"{state.half_open_at:%Y-%m-%d %H:%M} UTC.\n"
                    f"Last error: {state.last_error or 'not recorded'}\n"
                    "What to do: check https://metastatus.com; if Meta is down or throttling, wait — the trial "
                    "call closes the breaker. If the cause is ours (network, proxy, API URL), fix it and reset "
                    f"the breaker. See {RUNBOOK} › Circuit breaker open."
                ),
            )
        )
    return alerts
