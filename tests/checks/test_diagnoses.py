"""The catalogue: every code has its texts, names the target, and marks our own failures."""

from pathlib import Path

from app.checks.diagnoses import CATALOGUE, explain, is_ours

REQUIRED = {
    "dns_nxdomain",
    "dns_servfail",
    "dns_timeout",
    "dns_no_answer",
    "tcp_refused",
    "tcp_timeout",
    "host_unreachable",
    "tcp_reset",
    "tls_handshake_failed",
    "tls_untrusted",
    "tls_expired",
    "tls_wrong_host",
    "tls_fingerprint_mismatch",
    "http_status",
    "http_401",
    "http_5xx",
    "stalled",
    "target_refused",
    "internal_error",
    "cloud_disconnected",
    "cloud_not_enabled",
    "provider_auth_rejected",
    "provider_rate_limited",
    "provider_unavailable",
    # issue 11: DNS filters, TLS to the processors, the device at a terminal's address
    "dns_blocked",
    "tls_intercepted",
    "tls_stalled",
    "tls_expiring_soon",
    "device_changed",
    "not_terminal",
    "ping_lost",
    "ws_rejected",
    "ws_handshake_failed",
}
OURS = {
    "agent_offline",
    "agent_unreachable",
    "target_refused",
    "internal_error",
    "checker_overloaded",
    "result_stale",
    "provider_auth_rejected",
    "provider_rate_limited",
    "provider_unavailable",
    "ping_not_permitted",  # the checker's system allows no ICMP socket
}


def test_every_code_is_catalogued_with_texts():
    assert set(CATALOGUE) >= REQUIRED
    for code in CATALOGUE:
        d = explain(code, host="h.example", port=1, target="h.example:1", status=500)
        assert d.code == code and d.title and d.cause and d.fix
        assert "{" not in d.cause + d.fix + d.title, code


def test_ours_means_unknown_never_down():
    assert {c for c in CATALOGUE if is_ours(c)} == OURS
    assert not is_ours(None)


def test_texts_name_the_concrete_target():
    d = explain("tcp_timeout", host="temterminalsnar01.icloud.ingenico.com", port=7003)
    assert d.cause.startswith("Port 7003 to temterminalsnar01.icloud.ingenico.com is filtered")
    assert "allow outbound TCP 7003" in d.fix
    assert (
        "temterminalsnar01.icloud.ingenico.com"
        in explain("dns_nxdomain", name="temterminalsnar01.icloud.ingenico.com").cause
    )
    assert "Re-pair" in explain("http_401", target="https://127.1.2.1:8080/payntpos/1.0.0").fix
    assert "Contoso" in explain("tls_untrusted", host="x", issuer="CN=Contoso SSL Inspection CA").cause


def test_missing_context_still_reads_and_unknown_code_is_ours():
    assert "the host" in explain("tcp_refused").cause
    d = explain("no_such_code")
    assert d.code == "internal_error" and d.ours and "no_such_code" in d.cause


def test_the_readme_lists_every_diagnosis():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Diagnoses", 1)[1].split("\n## ", 1)[0]
    missing = [code for code in CATALOGUE if f"`{code}`" not in section]
    assert not missing, f"README's Diagnoses section lacks {missing}"
