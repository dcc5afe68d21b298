"""Who answers at a terminal's LAN address: the device identity a check compares.

A terminal is known by what it presents: its TLS certificate (fingerprint and subject) and,
where its local API says it, the POIID or serial it reports. The first healthy check records
it (the monitor's params["identity"], written by app.inventory.identity from the check's
"identity" step); every later check compares, so a DHCP address given to another device is
named (`device_changed`, `not_terminal`) instead of read as that device's 401 or TLS error.

Terminal monitors carry params {"poiid": ...} (and {"local_api": "adyen_local"} for Adyen's
local Terminal API, whose certificate's common name must be
`{POIID}.{test|live}.terminal.adyen.com`).
"""

from __future__ import annotations

import re
from typing import Any

from app.checks.result import ProbeFailure, Run
from app.poiid import normalise_poiid

STEP = "identity"
ADYEN_CN = re.compile(r"^(?P<poiid>.+)\.(?P<env>test|live)\.terminal\.adyen\.com$", re.IGNORECASE)
_STEP_RE = re.compile(
    r"^(?P<renewed>renewed )?sha256=(?P<fingerprint>[0-9a-f]*) device=(?P<device>\S*)"
    r" subject=(?P<subject>.*)$"
)


def common_name(subject: str | None) -> str | None:
    """The CN of an RFC 4514 subject ("CN=A920-1,O=Paynt" -> "A920-1")."""
    for part in re.split(r"(?<!\\),", subject or ""):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN":
            return value.strip().replace("\\", "")
    return None


def is_terminal(params: dict[str, Any]) -> bool:
    """A terminal's own LAN check (the EPOS probe says so itself with {"terminal": true})."""
    return bool(params.get("poiid") or params.get("terminal"))


def _where(run: Run) -> str:
    ctx = run.context
    return f"{ctx.get('host')}:{ctx.get('port')}" if ctx.get("port") else str(ctx.get("host"))


def _expected(params: dict[str, Any]) -> str:
    learned = params.get("identity") or {}
    return str(
        learned.get("device") or params.get("poiid") or common_name(learned.get("subject")) or "the terminal"
    )


def changed(run: Run, params: dict[str, Any], seen: str, why: str) -> ProbeFailure:
    run.add(STEP, False, 0.0, why)
    return ProbeFailure(
        "device_changed", why, device_at=_where(run), known_as=_expected(params), answers_as=seen
    )


def not_terminal(run: Run, params: dict[str, Any], seen: str, why: str) -> ProbeFailure:
    run.add(STEP, False, 0.0, why)
    return ProbeFailure(
        "not_terminal", why, device_at=_where(run), known_as=_expected(params), answers_as=seen
    )


def check_certificate(
    run: Run, params: dict[str, Any], fingerprint: str, subject: str, *, api_reports_later: bool = False
) -> ProbeFailure | None:
    """Compare the certificate with what the terminal is known by; raises device_changed or
    not_terminal. Before any HTTP finding: another device's 401 is not this terminal's.

    With `api_reports_later` (the EPOS API may still report the POIID it learned), a new
    certificate under the same name is returned, not raised: the caller raises it unless the
    API then reports the learned device (the same terminal, its certificate renewed)."""
    if not is_terminal(params):
        return None
    poiid = normalise_poiid(str(params.get("poiid") or ""))
    cn = common_name(subject) or subject
    if params.get("local_api") == "adyen_local" and poiid:
        match = ADYEN_CN.match(cn)
        if match is None:
            raise not_terminal(
                run, params, f"a certificate for {cn}", f"certificate for {cn}, not an Adyen terminal's"
            )
        if normalise_poiid(match["poiid"]).upper() != poiid.upper():
            raise changed(run, params, match["poiid"], f"certificate for {cn}, expected {poiid}")
    learned = params.get("identity") or {}
    if not learned.get("fingerprint") or learned["fingerprint"] == fingerprint:
        return None
    same_name = cn == common_name(learned.get("subject"))
    why = f"certificate sha256 {fingerprint}, learned {learned['fingerprint']} ({subject})"
    seen = f"another certificate (sha256 {fingerprint[:16]}…)" if same_name else cn
    if api_reports_later and same_name and learned.get("device"):
        return ProbeFailure(
            "device_changed", why, device_at=_where(run), known_as=_expected(params), answers_as=seen
        )
    raise changed(run, params, seen, why)


def renewed(run: Run, params: dict[str, Any], pending: ProbeFailure, reported: str | None) -> bool:
    """After a deferred certificate change: True when the API reports the learned device (the
    same terminal, a renewed certificate); else the change is raised."""
    learned = (params.get("identity") or {}).get("device")
    if reported and learned and normalise_poiid(reported).upper() == normalise_poiid(str(learned)).upper():
        return True
    run.add(STEP, False, 0.0, pending.detail)
    raise pending


def check_reported(run: Run, params: dict[str, Any], reported: str | None) -> None:
    """The POIID or serial the local API reports, against the terminal's."""
    if not params.get("poiid") or not reported:
        return
    known = {normalise_poiid(str(params["poiid"])).upper()}
    learned = (params.get("identity") or {}).get("device")
    if learned:
        known.add(normalise_poiid(str(learned)).upper())
    if normalise_poiid(reported).upper() not in known:
        raise changed(run, params, reported, f"the API reports {reported}")


def record(
    run: Run,
    params: dict[str, Any],
    fingerprint: str,
    subject: str,
    device: str | None,
    *,
    renewed: bool = False,
) -> None:
    """The identity step of a terminal check: what a first healthy check is learned from (and,
    marked renewed, what replaces a learned certificate the terminal itself renewed)."""
    if is_terminal(params):
        mark = "renewed " if renewed else ""
        run.add(STEP, True, 0.0, f"{mark}sha256={fingerprint} device={device or '-'} subject={subject}")


def parse_step(detail: str) -> dict[str, str] | None:
    """{"fingerprint", "subject"[, "device"]} from an identity step's detail."""
    match = _STEP_RE.match(detail or "")
    if match is None or not match["fingerprint"]:
        return None
    found = {"fingerprint": match["fingerprint"], "subject": match["subject"]}
    if match["device"] and match["device"] != "-":
        found["device"] = match["device"]
    if match["renewed"]:
        found["renewed"] = "yes"  # the learned device, with a new certificate
    return found
