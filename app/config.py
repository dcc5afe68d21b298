"""Settings from TERMPULSE_* environment variables (documented in the README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent  # the folder holding `app`: the source tree, or site-packages


def bundled_dir(name: str) -> Path:
    """The top-level folder `name` (migrations, templates, static), found through the package.

    An installed wheel carries it inside the package as `app/_<name>` (see setup.py); a source
    tree or an editable install keeps it beside the package. Never found from the working directory.
    """
    shipped = PACKAGE_DIR / f"_{name}"
    return shipped if shipped.is_dir() else PROJECT_ROOT / name


DEFAULT_SECRET_KEY = "change-me-in-production"

# Where checks may connect unless TERMPULSE_ALLOWED_NETWORKS says otherwise: the private and
# CGNAT ranges (stores' networks). The network profiles' hosts are allowed by name besides
# (app.checks.guard); loopback, link-local and the metadata addresses only when listed.
DEFAULT_ALLOWED_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
MIN_SECRET_KEY_LENGTH = 32


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TERMPULSE_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./termpulse.db"
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = DEFAULT_SECRET_KEY
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")

    # Checking engine
    allowed_networks: Annotated[list[str], NoDecode] = list(DEFAULT_ALLOWED_NETWORKS)
    dns_nameservers: Annotated[list[str], NoDecode] = []
    dns_port: int = 53
    # Answers that mean "blocked by the store's DNS filter" besides 0.0.0.0 and :: (a filter's
    # block page address): such answers are the diagnosis dns_blocked.
    dns_block_addresses: Annotated[list[str], NoDecode] = []
    tls_expiry_warn_days: int = 21  # a TLS check warns (still up) when a certificate expires sooner
    trusted_ca_file: Path | None = None  # extra CA bundle for TLS/HTTPS checks (e.g. a corporate CA)
    check_interval_s: int = 60
    check_timeout_s: float = 5.0
    worker_concurrency: int = 1000
    claim_batch: int = 500
    lease_s: int = 10  # renewed every lease_s/3 while the worker lives: a dead one's run again soon
    result_retention_days: int = 14  # raw results (failures, changes, manual checks)
    # A scheduled result is folded into its monitor's day
    # (app.monitoring.compact); true keeps every result as a row instead (a plain success
    # without its steps: ~250 KB per monitor per day at 60 s).
    keep_plain_results: bool = False
    # Totals over long periods (summaries, a year's CSV) from stored daily uptime with running
    # totals (app.history.daily), the same figures as the exact computation: the worker keeps
    # the days filled. False: no stored days, everything computed from the state changes.
    stored_daily_uptime: bool = True

    # Alerts (app.alerts)
    base_url: str = "http://127.0.0.1:8000"  # links in notifications point here (store pages)
    alert_evaluate_every_s: float = 2.0
    alert_deliver_every_s: float = 1.0
    alert_quiet_period_s: float = 120.0  # all up this long before an incident resolves (flapping)
    alert_fleet_stores: int = 10  # more than this many stores failing within the window: one fleet incident
    alert_fleet_cause_stores: int = 5  # this many stores failing of the same cause: one fleet incident
    alert_fleet_window_s: float = 300.0
    alert_group_wait_s: float = 10.0  # a new store incident waits this long for a fleet-wide event
    alert_stalled_after_s: float = 180.0  # checks overdue this long: "TermPulse cannot check"
    alert_lease_s: float = 60.0  # a claimed delivery not finished by then is claimed by another worker
    alert_send_timeout_s: float = 20.0
    alert_max_attempts: int = 8
    alert_retry_base_s: float = 5.0  # backoff: 5 s, 10 s, 20 s ... capped at alert_retry_max_s
    alert_retry_max_s: float = 600.0

    # Access (app.auth): sessions end after this long unused, and at the latest this long after
    # the login; cookies are Secure over HTTPS or always with cookie_secure (behind a proxy
    # that does not say it served HTTPS); HTTP Basic with a password only when turned on
    # (API clients use tokens: Authorization: Bearer).
    session_idle_h: float = Field(default=8.0, gt=0)
    session_max_days: float = Field(default=7.0, gt=0)
    cookie_secure: bool = False
    basic_auth: bool = False
    # When set, /metrics answers only `Authorization: Bearer <metrics_token>` (else no login).
    metrics_token: str = ""
    # Check connection presses (page and API) per user and minute; more are a 429 saying when.
    check_per_user_per_minute: int = Field(default=20, gt=0)
    # Calls per API token and minute (every process together on PostgreSQL); more are a 429.
    api_per_token_per_minute: int = Field(default=600, gt=0)
    # The largest request body taken (a CSV import, a JSON call): larger ones are a 413.
    upload_max_mb: float = Field(default=20.0, gt=0)
    page_concurrency: int = Field(default=8, ge=1)  # pages worked on at once per web process

    # Provider API hosts (host or host:port) a provider account may call besides the official
    # ones (app.providers.hosts): a key is never sent anywhere else.
    provider_hosts: Annotated[list[str], NoDecode] = []

    # Single sign-on with OpenID Connect (app.auth.oidc), on when oidc_issuer is set. The role
    # comes from the groups in oidc_groups_claim through oidc_role_map ("group=role" pairs, the
    # highest wins; no mapped group, no login). oidc_only: "non-admins" keeps password login
    # for admins only, "all" for nobody. Calls go only to the issuer's host and oidc_hosts.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid profile email"
    oidc_groups_claim: str = "groups"
    oidc_role_map: Annotated[list[str], NoDecode] = []
    oidc_only: str = Field(default="off", pattern="^(off|non-admins|all)$")
    oidc_hosts: Annotated[list[str], NoDecode] = []

    templates_dir: Path = bundled_dir("templates")
    static_dir: Path = bundled_dir("static")

    _split = field_validator(
        "allowed_networks",
        "dns_nameservers",
        "dns_block_addresses",
        "provider_hosts",
        "oidc_role_map",
        "oidc_hosts",
        mode="before",
    )(_split_list)


def weak_secret_key(settings: Settings) -> str | None:
    """Why the secret key must not guard a real fleet (None if it may): it signs the session
    cookies and encrypts the stored provider keys, so a known or short one gives both away."""
    key = settings.secret_key
    if key == DEFAULT_SECRET_KEY:
        return "TERMPULSE_SECRET_KEY is not set (the default is public)"
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"TERMPULSE_SECRET_KEY is {len(key)} characters long (at least {MIN_SECRET_KEY_LENGTH} needed)"
    if len(set(key)) < 8:
        return "TERMPULSE_SECRET_KEY repeats too few characters to be secret"
    return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
