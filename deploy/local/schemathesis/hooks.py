"""Schemathesis hooks for partners-engine's API (SCHEMATHESIS_HOOKS).

The spec uses custom string formats for what OpenAPI 3.0 cannot express
(schemas/openapi/openapi.yaml, info.description); the server checks them
(control-plane/adminapi Formats). These strategies generate values of each
format, so positive test cases are valid and negative ones are the rest.
"""
import base64
import datetime

import schemathesis
from hypothesis import strategies as st

# Printable: letters, marks, numbers, punctuation, symbols and the space —
# no control, format (bidi, zero width), separator or unassigned characters.
_printable = st.characters(categories=["L", "M", "N", "P", "S"])
_text = st.text(alphabet=st.one_of(_printable, st.just(" ")), min_size=0, max_size=98)

schemathesis.openapi.format(
    "partner-name",
    st.builds(lambda a, mid, b: a + mid + b if mid is not None else a, _printable, st.one_of(st.none(), _text), _printable)
    .map(lambda s: s[:100]),
)
schemathesis.openapi.format("printable", st.builds(lambda a, rest: (a + rest)[:256], _printable, _text))

# JWKS documents with one RSA key of 2048 bits for RS256.
_N = base64.urlsafe_b64encode(b"\xc1" + bytes(range(255))).rstrip(b"=").decode()
schemathesis.openapi.format(
    "jwks",
    st.sampled_from(["sig", None]).map(
        lambda use: '{"keys":[{"kty":"RSA","alg":"RS256",%s"kid":"k1","n":"%s","e":"AQAB"}]}'
        % ('"use":"%s",' % use if use else "", _N)
    ),
)

_durations = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(min_value=0, max_value=999_999), st.sampled_from(["h", "m", "s", "ms", "us", "ns"])
)
_times = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31), timezones=st.just(datetime.timezone.utc)
).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
schemathesis.openapi.format("time-or-ago", st.one_of(_durations, _times))

schemathesis.openapi.format(
    "page-token",
    st.builds(
        lambda ns, key: base64.urlsafe_b64encode(f"{ns}|{key}".encode()).rstrip(b"=").decode(),
        st.integers(min_value=0, max_value=2**62),
        st.text(alphabet="abcdef0123456789_", max_size=40),
    ),
)


def _valid_mapping_names(body):
    """OpenAPI 3.0 cannot constrain map keys: mapping field names are dotted
    paths without empty segments, and no name is both a value and an object
    (the spec's Mapping description). Keep positive bodies that respect it."""
    if not isinstance(body, dict):
        return True
    for ep in body.get("endpoints") or []:
        m = (ep or {}).get("mapping") if isinstance(ep, dict) else None
        fields = (m or {}).get("fields") if isinstance(m, dict) else None
        if not isinstance(fields, dict):
            continue
        names = sorted(fields)
        for n in names:
            parts = n.split(".")
            if not n or len(n) > 256 or len(parts) > 16 or any(p == "" for p in parts):
                return False
        for a, b in zip(names, names[1:]):
            if b.startswith(a + "."):
                return False
    return True


def _enterprise_only(body):
    """jwt and client_identities are enterprise only (the spec's descriptions):
    a create of another tier with them is a 400, a patch a 409 (the tenant's
    tier is state); keep positive bodies that respect it."""
    if not isinstance(body, dict):
        return True
    if body.get("jwt") is None and not body.get("client_identities"):
        return True
    return body.get("tier") == "enterprise"


@schemathesis.hook
def filter_body(ctx, body):
    label = ctx.operation.label if ctx.operation is not None else ""
    if label == "PATCH /api/v1/tenants/{id}":
        return _valid_mapping_names(body)
    if label == "POST /api/v1/tenants":
        return _enterprise_only(body)
    return True
