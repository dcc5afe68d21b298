import pytest
from pydantic import ValidationError

from app.inventory.schemas import StoreIn, TerminalIn, field_errors, normalise_mac, validate_host
from app.poiid import normalise_poiid


@pytest.mark.parametrize("dash", ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212"])
def test_poiid_dashes_become_hyphen(dash):
    assert normalise_poiid(f"  P400Plus{dash}275039202 ") == "P400Plus-275039202"


@pytest.mark.parametrize(
    "raw", ["02-00-00-01-01-5C", "0200.0001.015c", "020000:01015c", "02:00:00:01:01:5c", "02:00:00:01:01:5C"]
)
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
    # The profile's name syntax here; that the record exists is checked when the store is written.
    errors = _errors(StoreIn, code="S 1", name="", timezone="Mars/Olympus", network_profile="wi fi")
    assert set(errors) == {"code", "name", "timezone", "network_profile"}
    assert StoreIn(code="S-1", name="x", tags=" a ; b;;").tags == "a;b"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("127.1.1.1", "127.1.1.1"),
        ("255.255.255.255", "255.255.255.255"),
        (" 10.0.0.9 ", "10.0.0.9"),
        ("::1", "::1"),
        ("FE80::0001", "fe80::1"),
        ("Till-1.Store.Local.", "till-1.store.local"),
    ],
)
def test_hosts_normalised(raw, normal):
    assert validate_host(raw) == normal


@pytest.mark.parametrize("raw", ["01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", "\u0661.2.3.4", "a b"])
def test_bad_hosts_rejected(raw):
    with pytest.raises(ValueError, match="not an IP address or host name"):
        validate_host(raw)


@pytest.mark.parametrize("raw", ["02:00:00:01:01:5c0", "02:00:00:01:01", "02:00:00:01:01:5g", ""])
def test_bad_macs_rejected(raw):
    with pytest.raises(ValueError, match="not a MAC address"):
        normalise_mac(raw)


@pytest.mark.parametrize("space", [" ", "\t", "\u00a0", "\u2003", "\u3000"])
def test_poiid_with_any_space_rejected(space):
    assert _errors(TerminalIn, store_code="S-1", poiid=f"A{space}1") == {
        "poiid": "must not be empty or contain spaces"
    }


def test_poiid_ascii_and_not():
    assert normalise_poiid(" P400Plus-1 ") == "P400Plus-1"
    assert normalise_poiid("\uff30400\u2011\uff11") == "P400-1"  # full-width letters and digits: NFKC
