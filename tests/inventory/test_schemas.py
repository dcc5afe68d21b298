import pytest
from pydantic import ValidationError

from app.inventory.schemas import StoreIn, TerminalIn, field_errors, normalise_mac
from app.poiid import normalise_poiid


@pytest.mark.parametrize("dash", ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212"])
def test_poiid_dashes_become_hyphen(dash):
    assert normalise_poiid(f"  P400Plus{dash}275039202 ") == "P400Plus-275039202"


@pytest.mark.parametrize("raw", ["02-00-00-01-01-5C", "0200.0001.015c", "020000:01015c", "02:00:00:01:01:5c"])
def test_mac_normalised(raw):
    assert normalise_mac(raw) == "02:00:00:01:01:5c"


def _errors(model, **data) -> dict:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return field_errors(caught.value)


def test_terminal_errors_name_their_column():
    errors = _errors(
        TerminalIn,
        store_code="S-1",
        poiid="A-1",
        integration="local",
        local_api="tcp",
        lan_host="not a host",
        lan_port="99999",
        mac="xyz",
        cloud_enabled="maybe",
    )
    assert set(errors) == {"lan_host", "lan_port", "mac", "cloud_enabled"}


def test_local_api_needs_an_address():
    assert _errors(
        TerminalIn, store_code="S-1", poiid="A-1", integration="local", local_api="paynt_epos"
    ) == {"lan_host": "required when local_api is paynt_epos"}


def test_adyen_local_defaults_to_port_8443():
    t = TerminalIn(
        store_code="S-1", poiid="A-1", integration="both", local_api="adyen_local", lan_host="127.0.0.2"
    )
    assert t.lan_port == 8443


def test_store_validation():
    errors = _errors(StoreIn, code="S 1", name="", timezone="Mars/Olympus", network_profile="wifi")
    assert set(errors) == {"code", "name", "timezone", "network_profile"}
    assert StoreIn(code="S-1", name="x", tags=" a ; b;;").tags == "a;b"
