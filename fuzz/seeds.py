#!/usr/bin/env python3
"""Write the seed corpora under fuzz/corpus/<target>/ (run from anywhere; idempotent: every
file is named by its content's hash, so rerunning adds only what changed).

Tokens are made the way the tests make them (tests/common/mint.rs `hti_claims`, signed with
the fixed keys in fuzz/keys/ through jwcrypto, an implementation independent of the guard),
at the targets' fixed now (hti_guard::fuzzing::NOW). RFC vectors: RFC 7515 A.1/A.3 and
A.5-style, RFC 7516 A.1 and RFC 7520 5.2 (copied from src/jose/jwe/vectors.rs), RFC 7517
A.1's EC key. Configuration: config.toml and the TOML strings of src/config/tests.rs.
Needs: pip install jwcrypto cryptography."""

import base64
import hashlib
import json
import pathlib
import re

from jwcrypto import jwe, jwk, jws

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
NOW = 1_767_225_600  # hti_guard::fuzzing::NOW
ISS = "https://portal.example"
AUD = "Device/fuzz"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key(name):
    return jwk.JWK.from_pem((FUZZ / "keys" / name).read_bytes())


ES256, ES384, RSA, RFC7516 = (key(n) for n in ["es256.pem", "es384.pem", "rsa2048.pem", "rfc7516_a1.pem"])


def sign(claims, alg="ES256", kid="es256", k=ES256, extra=None):
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    header.update(extra or {})
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(k, alg=None, protected=json.dumps(header))
    return token.serialize(compact=True)


def hti_claims(**over):
    c = {
        "iss": ISS,
        "aud": AUD,
        "sub": "Practitioner/123",
        "resource": "Task/abc",
        "jti": "0123456789abcdef0123456789abcdef",
        "iat": NOW,
        "exp": NOW + 300,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


FULL = hti_claims(patient="Patient/42", definition="ActivityDefinition/mindfulness", intent="plan")
FULL["hti-version"] = "2.0"

# ---- jws -------------------------------------------------------------------------------
tokens = [
    sign(hti_claims()),
    sign(FULL),
    sign(FULL, "ES384", "es384", ES384),
    sign(FULL, "RS256", "rs256", RSA),
    sign(FULL, "PS256", "rs256", RSA),
    sign(hti_claims(aud=[AUD, "Device/other"], nbf=NOW - 5), extra={"x5u": "https://evil.example/x"}),
    b64('{"alg":"ES256","kid":"es256","crit":["exp"],"exp":1}') + "." + b64(json.dumps(FULL)) + ".AAAA",
    sign(hti_claims(exp=NOW - 100, iat=NOW - 400)),
    sign(hti_claims(jti="short")),
    # RFC 7515 A.1 (HS256: refused), A.3 (ES256), and an A.5-style unsecured JWS.
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    b64('{"alg":"ES256","kid":"es256","alg":"none"}') + "." + b64(json.dumps(FULL)) + ".AAAA",
    b64('{"alg":"RS256","kid":7}') + "." + b64("[1,2]") + ".AAAA",
]
for t in tokens:
    write("jws", t)

# ---- jwe -------------------------------------------------------------------------------
vectors = (ROOT / "src/jose/jwe/vectors.rs").read_text()
for block in re.findall(r"concat!\((.*?)\)", vectors, re.S):
    parts = re.findall(r'"([^"]*)"', block)
    compact = "".join(parts)
    if compact.count(".") == 4:
        write("jwe", compact)
for enc in ["A256GCM", "A128GCM", "A128CBC-HS256", "A256CBC-HS512"]:
    for alg, kid in [("RSA-OAEP", "module"), ("RSA-OAEP-256", None)]:
        header = {"alg": alg, "enc": enc, "cty": "JWT"}
        if kid:
            header["kid"] = kid
        e = jwe.JWE(tokens[1].encode(), protected=json.dumps(header))
        e.add_recipient(RSA)
        write("jwe", e.serialize(compact=True))
e = jwe.JWE(b"not a JWS", protected=json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "module"}))
e.add_recipient(RSA)
write("jwe", e.serialize(compact=True))

# ---- launch_form -----------------------------------------------------------------------
for form in [
    f"token={tokens[0]}",
    f"token={tokens[1]}&state=a1b2c3",
    f"launch={tokens[1]}&token={tokens[1]}",
    f"token={tokens[1]}&launch={tokens[0]}",
    "token=&launch=%20abc%20&x=1+2&x=%F0%9F%98%80",
    "a=1&&b&=c&token",
    "state=abc&code=xyz&error=access_denied",
    "token=a%ZZb&%=%&+=+",
]:
    write("launch_form", form)

# ---- session_cookie --------------------------------------------------------------------
session = {
    "issuer": ISS,
    "claims": {
        "iss": ISS, "sub": "Practitioner/1", "resource": "Task/t-9", "patient": "Patient/p2",
        "definition": "https://x.example/ActivityDefinition/ad-1|2.0", "intent": "plan",
        "jti": "0123456789abcdef0123", "exp": NOW + 300, "iat": NOW,
    },
    "claims_json": b64(json.dumps({"sub": "Practitioner/1"})),
    "created": NOW - 30,
    "renewed": NOW - 30,
    "binding": "Device/fuzz",
}
for change in [{}, {"renewed": NOW - 120}, {"created": NOW - 7200}, {"binding": "Device/other"},
               {"issuer": None, "claims_json": "!!"}]:
    s = dict(session)
    s.update(change)
    write("session_cookie", b"\x01" + json.dumps(s).encode())
write("session_cookie", b"\x01" + json.dumps({**session, "claims": {**session["claims"], "sub": "a\r\nb"}}).encode())
for header in [
    "hti_guard_session=AAAA; theme=dark",
    "theme=dark; hti_guard_session=\"Zm9vYmFy\"; hti_guard_session=x",
    "hti_guard_session=" + "A" * 80 + "\nother=1; hti_guard_session=",
    ";;; =; hti_guard_session",
]:
    write("session_cookie", b"\x00" + header.encode())

# ---- jwks ------------------------------------------------------------------------------
def pub(k, kid, alg=None, use="sig"):
    d = json.loads(k.export_public())
    d.update({"kid": kid, "use": use})
    if alg:
        d["alg"] = alg
    return d


rfc7517_ec = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "use": "enc", "kid": "1"}
for doc in [
    {"keys": [pub(ES256, "es256", "ES256"), pub(ES384, "es384", "ES384"), pub(RSA, "rs256", "RS256")]},
    {"keys": [rfc7517_ec, pub(RFC7516, "2011-04-29", "RS256")]},
    {"keys": [{**rfc7517_ec, "use": "sig", "alg": "ES256"}, {"kty": "oct", "k": "AAAA", "kid": "h"},
              {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "small"}, {"kty": "EC", "crv": "P-521", "x": "", "y": ""},
              {"kid": "no-kty"}, 7]},
    {"keys": []},
    {"keys": [pub(RSA, "dup"), pub(ES256, "dup")]},
]:
    write("jwks", json.dumps(doc))

# ---- introspection ---------------------------------------------------------------------
token_claims = hti_claims(jti="0123456789abcdef0123456789abcdef", iat=NOW - 10, exp=NOW + 200)
for answer in [
    {"active": False},
    {**token_claims, "active": True},
    {"active": True, "scope": "launch", "client_id": "portal", "username": "u", "token_type": "Bearer",
     "patient": "Patient/42", "intent": "plan"},
    {"active": True, "iss": "https://another-portal.example"},
    {"active": True, "jti": "another-jti-0123456789"},
    {"active": True, "aud": "Device/someone-else"},
    {"active": True, "exp": NOW + 3600},
    {"active": True, "sub": "not-a-reference"},
    {"active": "true"},
    {"error": "boom"},
]:
    write("introspection", json.dumps(answer))
write("introspection", "<html>maintenance</html>")

# ---- token_response --------------------------------------------------------------------
def id_token(**over):
    c = {"iss": "https://auth.example", "aud": "module-fuzz", "azp": "module-fuzz",
         "sub": "Practitioner/7", "iat": NOW, "exp": NOW + 300, "nonce": "nonce-fuzz"}
    c.update(over)
    return sign({k: v for k, v in c.items() if v is not None}, "RS256", "auth-1", RSA)


context = {"iss": ISS, "resource": "Task/123", "patient": "Patient/42",
           "definition": "ActivityDefinition/ad", "intent": "plan", "jti": "launch-jti-0123456789",
           "exp": NOW + 300}
for response in [
    {"access_token": "NOOP", "token_type": "Bearer", "expires_in": 300, "scope": "launch openid",
     "id_token": id_token(), **context},
    {"id_token": id_token(aud=["another-client", "module-fuzz"], nbf=NOW - 1), **context, "sub": "Patient/1"},
    {"id_token": id_token(iss="https://other-auth.example"), **context},
    {"id_token": id_token(nonce=None), **context},
    {"id_token": id_token(exp=NOW - 600, iat=NOW - 1200), **context},
    {"id_token": id_token(), "iss": ISS, "jti": "j"},
    {"id_token": id_token(sub=None), **context, "resource": "Task/1\r\nX: y"},
    {"access_token": "NO"},
    {"id_token": ""},
]:
    write("token_response", json.dumps(response))

# ---- smart_configuration ---------------------------------------------------------------
base = "https://fhir.example/fhir"
for doc in [
    {"issuer": "https://auth.example", "authorization_endpoint": base + "/oauth2/authorize",
     "introspection_endpoint": base + "/oauth2/introspect", "token_endpoint": base + "/oauth2/token",
     "jwks_uri": base + "/.well-known/jwks.json"},
    {"issuer": "http://fhir.local:8080", "introspection_endpoint": "http://fhir.local:8080/introspect",
     "token_endpoint": "http://evil.example/token", "authorization_endpoint": "ftp://x/",
     "jwks_uri": "http://fhir.local:8080/jwks"},
    {"introspection_endpoint": "https://auth.example/i", "token_endpoint": None, "issuer": 7},
    {"introspection_endpoint": "not a url"},
    [1, 2, 3],
]:
    write("smart_configuration", "max-age=60\n" + json.dumps(doc))
write("smart_configuration", "no-cache, max-age=99999999999999999999\n{}")

# ---- config_toml -----------------------------------------------------------------------
write("config_toml", (ROOT / "config.toml").read_text())
tests = (ROOT / "src/config/tests.rs").read_text()
for text in re.findall(r'r#"(.*?)"#', tests, re.S):
    write("config_toml", text.replace("generate = true", 'signing_key_files = ["keys/rsa2048.pem"]'))
minimal = '''upstream = "http://127.0.0.1:3000"
[launch]
audience = "Device/1"
[[issuers]]
iss = "https://portal.example"
jwks_url = "https://portal.example/jwks"
'''
for extra in [
    'trusted_proxies = ["10.0.0.0/8", "::ffff:1.2.3.4", "fd00::/8"]\n',
    '[replay]\nstore = "redis"\nredis_url = "redis://127.0.0.1:6379"\n',
    '[session]\nenabled = true\nprotected = ["/app/"]\npublic = ["/app/static/"]\nttl = "2h"\nidle_timeout = "10m"\n',
    '[limits]\nmax_memory = "512MiB"\nmax_connections = 100\n',
    '[[issuers]]\niss = "portal-client-id"\nintrospect = true\n[introspection]\nendpoint = "https://auth.example/introspect"\n'
    'token_endpoint = "https://auth.example/token"\n[module]\nclient_id = "m"\nsigning_key_files = ["keys/rsa2048.pem"]\n',
    '[module]\ndecryption_key_files = [{ file = "keys/rsa2048.pem", kid = "enc-1" }]\n',
]:
    write("config_toml", minimal + extra)
print("seeds written under", CORPUS)
