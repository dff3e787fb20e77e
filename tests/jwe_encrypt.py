#!/usr/bin/env python3
"""Encrypt an inner JWS as an HTI:jwe token with jwcrypto, a library independent of hti-guard.

    jwe_encrypt.py PUBLIC_JWK_JSON ALG ENC KID INNER_JWS

PUBLIC_JWK_JSON is the module's public RSA key as published (a JSON object, not a file).
An empty KID leaves kid out of the header, as the GIDS and Koppeltaal PoC portals do.
Prints the compact JWE (protected header: alg, enc, kid, cty "JWT") and exits 0, or prints
why and exits 1.
Needs: pip install jwcrypto
"""

import json
import sys

from jwcrypto import jwe, jwk


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(1)
    jwk_json, alg, enc, kid, inner = sys.argv[1:]
    try:
        key = jwk.JWK.from_json(jwk_json)
        if key.has_private:
            raise ValueError("the JWK has a private part; pass the public key")
        header = {"alg": alg, "enc": enc, "cty": "JWT"}
        if kid:
            header["kid"] = kid
        token = jwe.JWE(inner.encode("ascii"), protected=json.dumps(header))
        token.add_recipient(key)
        print(token.serialize(compact=True))
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"jwe_encrypt: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
