"""Validation of stores and terminals: one definition for the API, the forms and the CSV import.

Field names are the CSV column names, so an error names the column the user has to fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.inventory.models import INTEGRATIONS, LOCAL_APIS, PROVIDERS
from app.inventory.profiles import DESTINATION_CHECKS
from app.poiid import normalise_poiid

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?$", re.I)
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# Fast paths for the common, already-normal values (a 50,000-row import validates each).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # ASCII digits, no leading zero
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_MAC_NORMAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_MAC_SEPARATORS = re.compile(r"[\s:.\-]")
_MAC_DIGITS = re.compile(r"[0-9a-f]{12}")
_SPACE = re.compile(r"\s")  # the characters str.isspace() is true for
_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off", ""}


def normalise_mac(value: str) -> str:
    if _MAC_NORMAL.fullmatch(value):
        return value
    digits = _MAC_SEPARATORS.sub("", value).lower()
    if not _MAC_DIGITS.fullmatch(digits):
        raise ValueError("not a MAC address (expected 12 hex digits, e.g. 02:00:00:01:01:5c)")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def validate_host(value: str) -> str:
    value = value.strip()
    if _IPV4.fullmatch(value):  # dotted quad without leading zeros: ip_address would keep it as is
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", value) or not _HOSTNAME.match(value):
        raise ValueError("not an IP address or host name")
    return value.lower().rstrip(".")


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected yes or no")


def text(value: object) -> str:
    """Raw input that must be text (None: blank): a number, a list or an object is refused,
    not turned into its Python spelling."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def choice(options: tuple[str, ...], default: str = "") -> Callable[[object], str]:
    """A before-validator: the value, trimmed and lower-cased (blank = `default`), one of `options`."""

    def check(value: object) -> str:
        value = text(value).strip().lower() or default
        if value not in options:
            raise ValueError(f"must be one of: {', '.join(options)}")
        return value

    return check


def _blank_to_none(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


# C0 control characters but tab and line breaks, and DEL: no name, code, URL or note holds
# one, and PostgreSQL cannot store a NUL (SQLite would, silently).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


NO_CONTROL = "must not contain control characters (such as NUL)"


def has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def printable(value: object) -> object:
    """An after-validator for every field of an input model (`field_validator("*")`): text,
    or a list of texts, holding a control character is refused, naming the field."""
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(t, str) and has_control(t) for t in texts):
        raise ValueError(NO_CONTROL)
    return value


def as_stored(value: object) -> object:
    """`printable`'s stand-in in an output model made from an input one: what is stored is
    shown as it is (a value from before the rule, too), never refused with a 500."""
    return value


class _Input(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")

    _printable = field_validator("*")(printable)


class _CheckValues(_Input):
    """Interval, timeout and down/up thresholds at one level (a store, a region, a network
    profile); None: this level leaves it to the next (app.inventory.monitors)."""

    check_interval_s: int | None = Field(None, ge=10, le=86_400, description="seconds between checks")
    check_timeout_s: float | None = Field(None, gt=0, le=60, description="seconds a check may take")
    down_after: int | None = Field(None, ge=1, le=100, description="failed checks in a row before down")
    up_after: int | None = Field(None, ge=1, le=100, description="passed checks in a row before up again")

    _check_blanks = field_validator(
        "check_interval_s", "check_timeout_s", "down_after", "up_after", mode="before"
    )(_blank_to_none)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> _CheckValues:
        if self.check_interval_s and self.check_timeout_s and self.check_timeout_s >= self.check_interval_s:
            raise ValueError("check_timeout_s: must be shorter than the check interval")
        return self


class CheckSettingsIn(_CheckValues):
    """A region's or a network profile's check settings (the API and the Stores admin page)."""


class StoreIn(_CheckValues):
    code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    region: str = Field("", max_length=100)
    timezone: str = "UTC"
    adyen_store_id: str | None = Field(None, max_length=100)
    stripe_location_id: str | None = Field(None, max_length=100)
    network_profile: str | None = None
    tags: str = Field("", max_length=500)

    _blanks = field_validator("adyen_store_id", "stripe_location_id", "network_profile", mode="before")(
        _blank_to_none
    )

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _CODE.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.' (e.g. S-0042)")
        return value

    @field_validator("timezone", mode="before")
    @classmethod
    def _timezone(cls, value: object) -> str:
        value = str(value or "").strip() or "UTC"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/London)"
            ) from None
        return value

    @field_validator("network_profile")
    @classmethod
    def _profile(cls, value: str | None) -> str | None:
        # Its syntax; that the profile exists is checked against the records when it is written
        # (app.inventory.service, app.inventory.csvimport with the line).
        if value is not None and not _CODE.match(value):
            raise ValueError("not a network profile name (letters, digits, '-', '_' or '.')")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> str:
        if isinstance(value, list) and not all(isinstance(t, str) for t in value):
            raise ValueError("must be text, or a list of texts")
        items = value if isinstance(value, list) else text(value).split(";")
        return ";".join(t.strip() for t in items if t.strip())


class TerminalIn(_Input):
    store_code: str = Field(min_length=1, max_length=64)
    poiid: str = Field(min_length=1, max_length=100)
    model: str = Field("", max_length=64)
    serial: str = Field("", max_length=64)
    label: str = Field("", max_length=100)
    provider: str = "generic"
    provider_terminal_id: str | None = Field(None, max_length=100)
    integration: str = "cloud"
    lan_host: str | None = None
    lan_port: int | None = None
    local_api: str | None = None
    mac: str | None = None
    cloud_enabled: bool = False
    epos_token: str | None = Field(None, max_length=200)
    tcp_ports: str = Field("", description="its other ports, each checked with a TCP connect: 2000;5001")

    _blanks = field_validator(
        "provider_terminal_id", "lan_host", "lan_port", "local_api", "mac", "epos_token", mode="before"
    )(_blank_to_none)

    @field_validator("poiid")
    @classmethod
    def _poiid(cls, value: str) -> str:
        value = normalise_poiid(value)
        if not value or _SPACE.search(value):
            raise ValueError("must not be empty or contain spaces")
        return value

    _provider = field_validator("provider", mode="before")(choice(PROVIDERS, "generic"))
    _integration = field_validator("integration", mode="before")(choice(INTEGRATIONS))

    @field_validator("local_api")
    @classmethod
    def _local_api(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in LOCAL_APIS:
            raise ValueError(f"must be empty or one of: {', '.join(LOCAL_APIS)}")
        return value.lower() if value else None

    @field_validator("lan_host")
    @classmethod
    def _lan_host(cls, value: str | None) -> str | None:
        return validate_host(value) if value is not None else None

    @field_validator("lan_port", mode="before")
    @classmethod
    def _lan_port(cls, value: object) -> object:
        value = _blank_to_none(value)
        if isinstance(value, str) and not value.isdigit():
            raise ValueError("must be a whole number from 1 to 65535")
        return value

    @field_validator("lan_port")
    @classmethod
    def _port_range(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 65535:
            raise ValueError("must be from 1 to 65535")
        return value

    @field_validator("tcp_ports", mode="before")
    @classmethod
    def _tcp_ports(cls, value: object) -> str:
        items = value if isinstance(value, list) else re.split(r"[;,\s]+", str(value or ""))
        ports = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            if not item.isdigit() or not 1 <= int(item) <= 65535:
                raise ValueError(f"{item!r} is not a port (whole numbers from 1 to 65535, separated by ;)")
            ports.append(int(item))
        if len(set(ports)) > 20:
            raise ValueError("at most 20 ports")
        return ";".join(str(p) for p in sorted(set(ports)))

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return normalise_mac(value) if value is not None else None

    @field_validator("cloud_enabled", mode="before")
    @classmethod
    def _cloud_enabled(cls, value: object) -> bool:
        return parse_bool(value)

    @model_validator(mode="after")
    def _lan_needed(self) -> TerminalIn:
        if self.local_api == "adyen_local" and self.lan_port is None:
            self.lan_port = 8443  # Adyen's local Terminal API port
        for column, reason in _connection_problems(
            self.integration, self.local_api, self.lan_host, self.lan_port, self.tcp_ports
        ).items():
            raise ValueError(f"{column}: {reason}")
        return self

    @classmethod
    def cross_field_problems(cls, raw: Mapping[str, object]) -> dict[str, str]:
        """The same checks on raw input, so a row with other errors reports these too."""
        text = {
            k: str(raw.get(k) or "").strip()
            for k in ("integration", "local_api", "lan_host", "lan_port", "tcp_ports")
        }
        local_api = text["local_api"].lower() or None
        port = text["lan_port"] or ("8443" if local_api == "adyen_local" else None)
        return _connection_problems(
            text["integration"].lower(), local_api, text["lan_host"] or None, port, text["tcp_ports"]
        )


def _connection_problems(
    integration: str,
    local_api: str | None,
    lan_host: str | None,
    lan_port: int | str | None,
    tcp_ports: str = "",
) -> dict[str, str]:
    problems = {}
    if local_api and not lan_host:
        problems["lan_host"] = f"required when local_api is {local_api}"
    if local_api and not lan_port:
        problems["lan_port"] = f"required when local_api is {local_api}"
    if tcp_ports and not lan_host:
        problems["lan_host"] = "required when tcp_ports are given"
    if tcp_ports and integration == "cloud":
        problems["integration"] = "is cloud but tcp_ports are given; use local or both"
    if integration == "cloud" and local_api:
        problems["integration"] = f"is cloud but local_api is {local_api}; use both"
    return problems


def field_errors(
    exc: ValidationError, raw: Mapping[str, object] | None = None, model: type[BaseModel] | None = None
) -> dict[str, str]:
    """{column: reason} from a ValidationError, for forms, the API and import reports. With the
    raw input and the model, the cross-field checks the failed validation skipped are added."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        column = str(err["loc"][0]) if err["loc"] else ""
        if not column and ": " in message:  # model-level checks name their column first
            column, message = message.split(": ", 1)
        errors.setdefault(column or "row", message)
    if raw is not None and model is not None and hasattr(model, "cross_field_problems"):
        for column, reason in model.cross_field_problems(raw).items():
            errors.setdefault(column, reason)
    return errors


# --- network profiles


class DestinationIn(_Input):
    """One destination of a network profile: where the store's network must reach, and how."""

    host: str = Field(description="a host name (or address) the store's network must reach")
    port: int = Field(ge=1, le=65535)
    checks: list[str] = Field(
        default_factory=lambda: ["dns", "tcp"],
        description=f"what to check: {', '.join(DESTINATION_CHECKS)}",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return validate_host(value)

    @field_validator("checks")
    @classmethod
    def _checks(cls, value: list[str]) -> list[str]:
        asked = {c.strip().lower() for c in value if c.strip()}
        unknown = sorted(asked - set(DESTINATION_CHECKS))
        if unknown:
            raise ValueError(f"unknown check {unknown[0]!r} (use: {', '.join(DESTINATION_CHECKS)})")
        if not asked:
            raise ValueError(f"name at least one check ({', '.join(DESTINATION_CHECKS)})")
        return [c for c in DESTINATION_CHECKS if c in asked]

    @model_validator(mode="after")
    def _dns_of_a_name(self) -> DestinationIn:
        if "dns" in self.checks and _is_address(self.host):
            raise ValueError(f"checks: dns needs a host name, {self.host} is an address")
        return self


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class NetworkProfileIn(_Input):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=500)
    destinations: list[DestinationIn] = Field(default_factory=list, max_length=50)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CODE.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.' (e.g. torgsoft-store)")
        return value

    @field_validator("destinations")
    @classmethod
    def _distinct(cls, value: list[DestinationIn]) -> list[DestinationIn]:
        seen: set[tuple[str, int]] = set()
        for d in value:
            if (d.host, d.port) in seen:
                raise ValueError(f"{d.host} port {d.port} is listed twice")
            seen.add((d.host, d.port))
        return value


def profile_errors(
    exc: ValidationError, label: Callable[[int], str] = lambda i: f"destination {i + 1}"
) -> dict[str, str]:
    """{field: reason} for a profile; a destination's error names it (`label` of its index:
    "destination 2: port: ..."; the page says "line 2")."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        loc = err["loc"]
        if loc and loc[0] == "destinations" and len(loc) > 1 and isinstance(loc[1], int):
            where = ": ".join(str(p) for p in loc[2:] if not isinstance(p, int))
            message = f"{label(loc[1])}: {where + ': ' if where else ''}{message}"
        errors.setdefault(str(loc[0]) if loc else "row", message)
    return errors
