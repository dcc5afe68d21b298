"""Validation of provider accounts: one definition for the API and the forms."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.inventory.schemas import choice, parse_bool, printable, text
from app.providers.models import ENVIRONMENTS, PROVIDER_KINDS


def _url(value: object) -> str | None:
    value = text(value).strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL, e.g. https://device-api-test.adyen.com/v1")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query or a fragment")
    return value.rstrip("/")


class AccountFields(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")
    _printable = field_validator("*")(printable)

    name: str = Field(min_length=1, max_length=100)
    kind: str
    environment: str = "test"
    region: str = Field("", max_length=16)
    merchant_account: str = Field("", max_length=100)
    api_base_url: str | None = None
    management_base_url: str | None = None
    use_legacy_api: bool = False
    requests_per_second: float = Field(10.0, ge=0.1, le=1000)
    poll_interval_s: int = Field(60, ge=10, le=3600)

    _urls = field_validator("api_base_url", "management_base_url", mode="before")(_url)

    _kind = field_validator("kind", mode="before")(choice(PROVIDER_KINDS))
    _environment = field_validator("environment", mode="before")(choice(ENVIRONMENTS, "test"))
    _legacy = field_validator("use_legacy_api", mode="before")(parse_bool)

    @model_validator(mode="after")
    def _adyen_needs_merchant(self) -> AccountFields:
        if self.kind == "adyen" and not self.merchant_account:
            raise ValueError(
                "merchant_account: required for Adyen (the merchant account the terminals belong to)"
            )
        if self.kind == "stripe" and self.use_legacy_api:
            self.use_legacy_api = False
        return self


class AccountIn(AccountFields):
    """Creating an account: the key is required."""

    api_key: str = Field(min_length=8, max_length=500)


class AccountUpdate(AccountFields):
    """Editing an account: leave the key out (or blank) to keep the stored one."""

    api_key: str | None = Field(None, max_length=500)

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key")
    @classmethod
    def _length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 8:
            raise ValueError("looks too short for an API key")
        return value


class KeyIn(BaseModel):
    api_key: str = Field(min_length=8, max_length=500)

    _printable = field_validator("*")(printable)


class AccountOut(BaseModel):
    """What the API returns: never the key, only its masked hint."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    environment: str
    region: str
    merchant_account: str
    api_base_url: str | None
    management_base_url: str | None
    use_legacy_api: bool
    requests_per_second: float
    poll_interval_s: int
    api_key_hint: str
    has_api_key: bool
    last_error: str | None
