#!/usr/bin/env python3
"""Verify an HTI launch token with PyJWT, a library independent of hti-guard.

    pyjwt_verify.py JWKS_FILE TOKEN_FILE --alg ALG --aud AUD --iss ISS \
        --claim sub=Practitioner/1 --claim resource=Task/1 [--lifetime SECONDS]

Picks the key by the token's kid from the JWKS file, verifies the signature with
jwt.PyJWK and jwt.decode(..., algorithms=[ALG], audience=AUD, issuer=ISS), then checks the
HTI 2.0 claims. Prints "ok ALG" and exits 0, or prints why and exits 1.
Needs: pip install pyjwt cryptography
"""

import argparse
import json
import re
import sys

import jwt


def fail(message):
    print(f"pyjwt_verify: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("jwks_file")
    parser.add_argument("token_file")
    parser.add_argument("--alg", required=True)
    parser.add_argument("--aud", required=True)
    parser.add_argument("--iss", required=True)
    parser.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--lifetime", type=int, default=300)
    args = parser.parse_args()

    with open(args.jwks_file, encoding="utf-8") as f:
        jwks = json.load(f)
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()

    header = jwt.get_unverified_header(token)
    if header.get("alg") != args.alg:
        fail(f"header alg {header.get('alg')!r}, expected {args.alg!r}")
    kid = header.get("kid")
    matching = [k for k in jwks.get("keys", []) if k.get("kid") == kid]
    if len(matching) != 1:
        fail(f"{len(matching)} keys with kid {kid!r} in {args.jwks_file}")
    jwk = matching[0]
    if jwk.get("use", "sig") != "sig":
        fail(f"key use {jwk.get('use')!r}")
    if "alg" in jwk and jwk["alg"] != args.alg:
        fail(f"JWK alg {jwk['alg']!r}, expected {args.alg!r}")
    key = jwt.PyJWK(jwk, algorithm=args.alg)

    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[args.alg],
            audience=args.aud,
            issuer=args.iss,
            options={"require": ["iss", "aud", "sub", "jti", "iat", "exp"]},
        )
    except jwt.PyJWTError as e:
        fail(f"PyJWT refused the token: {type(e).__name__}: {e}")

    for item in args.claim:
        name, _, value = item.partition("=")
        if claims.get(name) != value:
            fail(f"claim {name} = {claims.get(name)!r}, expected {value!r}")
    if claims.get("hti-version") != "2.0":
        fail(f"hti-version {claims.get('hti-version')!r}")
    if not re.fullmatch(r"[0-9a-f]{32}", str(claims.get("jti"))):
        fail(f"jti {claims.get('jti')!r} is not 128 random bits in hex")
    if claims["exp"] - claims["iat"] != args.lifetime:
        fail(f"exp - iat = {claims['exp'] - claims['iat']}, expected {args.lifetime}")
    print(f"ok {args.alg}")


if __name__ == "__main__":
    main()
