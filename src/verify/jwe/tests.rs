//! JWE unit tests: RFC 7516, 7518 and 7520 vectors, tampering, kid-less keys, mangled input.

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::sign::SigningKey;
use crate::verify::Alg;

const ALGS: [&str; 2] = ["RSA-OAEP", "RSA-OAEP-256"];
const ENCS: [&str; 6] = [
    "A128CBC-HS256",
    "A192CBC-HS384",
    "A256CBC-HS512",
    "A128GCM",
    "A192GCM",
    "A256GCM",
];
const JWS: &str = "eyJhbGciOiJSUzUxMiIsImtpZCI6InAifQ.eyJpc3MiOiJwb3J0YWwifQ.c2lnbmF0dXJl";

/// An RSA key of 1024 bits, made once with `openssl genpkey` for this test only: too
/// weak to be accepted.
const RSA_1024: &str = "-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAKyNb37RKvdLWo/W
WOEBEvTlmF84ZBhSg3LdI+onenrVN0wHIjteGXFg0ZuL7g7BgmmvKK0a9Nr/D9Yy
GWcY/lB7UilFEkTZdtHmp9STa58A+NTl/ylw1zczyRJeRlGT3h64IirHvonhvc7t
bpaPZ0Xn9tt6uV/ryWKsi9wdIH/xAgMBAAECgYB+3cqBKlb11XBzWvykCj8e0gQy
1mo5u8kr1c3HJlmWIFf0zTXtAmWgh7f1Lm/MZ5h0DbXReIVY0rmZGeK1e5nW63Fl
fD6/Au3QPqpf15zcSXjgcTAkPd21OsJEBxLbq6ShgswF6J3fPJ76GqFQS9O7JcOJ
s2v6rGrf820MWQjkVQJBANigeQFmfjEqBtpr5WDSKECCrXYrq5IqaSNZYoRPv1tb
YFRkoIhWoHIy0PBRQGMLaujyzsbne+jSNxSiE6QGTxsCQQDL6jUDZm/Bum2n5cSL
zc0l0GS0T6KKA9GCgCyBUvaOg33z+JKfZlcMRsFZkRPc3iHUcLSocQKd6Xzbdfw6
/8HjAkEAgxAcBgffw5kcylvLTNf5uIYXss5bILT+JX/4BftF2F0hnA3BvptCubUb
CrruDL6ksUnuZxM4ubUt1BL3dR7IDwJBAJUB1i9f4XZ9VrgD7LYEc06Yk543Ox0D
YUutgdgW2diWOanYELyuOhncclmS7CLPp4Tnvvv/aNwfzH9KHkC2t+UCQA31hMRW
CbkQS6bdTKdLzvAQEdFC+ZyrlSQtDMDK8rsM30l/GTPOx/GPjEm86JAl2q4k2HPv
yJ2AlfebKhrNQJI=
-----END PRIVATE KEY-----
";

/// Two RSA keys, "a" and "b", made once.
fn pems() -> &'static [(Vec<u8>, String)] {
    static PEMS: OnceLock<Vec<(Vec<u8>, String)>> = OnceLock::new();
    PEMS.get_or_init(|| {
        ["a", "b"]
            .iter()
            .map(|kid| {
                let pem = SigningKey::generate(Alg::RS256, 2048)
                    .unwrap()
                    .to_pem()
                    .unwrap();
                (pem.into_bytes(), kid.to_string())
            })
            .collect()
    })
}

fn keys() -> DecryptionKeys {
    DecryptionKeys::from_pems(pems()).unwrap()
}

fn jwk(keys: &DecryptionKeys, kid: &str) -> Value {
    keys.public_jwks()
        .into_iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
}

/// `kid` "a", RSA-OAEP, A128CBC-HS256: what the producers seen send.
fn token(keys: &DecryptionKeys) -> String {
    encrypt_for(&jwk(keys, "a"), "a", "RSA-OAEP", "A128CBC-HS256", JWS).unwrap()
}

/// A header of `alg` RSA-OAEP, `enc` and, when given, `kid`.
fn header(enc: &str, kid: Option<&str>) -> Map<String, Value> {
    let mut header = Map::new();
    header.insert("alg".into(), Value::from("RSA-OAEP"));
    header.insert("enc".into(), Value::from(enc));
    if let Some(kid) = kid {
        header.insert("kid".into(), Value::from(kid));
    }
    header
}

/// A token encrypted to key `to` with `header` exactly as given.
fn with_header(
    keys: &DecryptionKeys,
    to: &str,
    header: &Map<String, Value>,
    payload: &[u8],
) -> String {
    encrypt_with_header(&jwk(keys, to), header, payload).unwrap()
}

/// Replace segment `i` with `f(decoded bytes)`, re-encoded.
fn mangle(token: &str, i: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut segments: Vec<String> = token.split('.').map(String::from).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&segments[i]).unwrap();
    f(&mut bytes);
    segments[i] = URL_SAFE_NO_PAD.encode(bytes);
    segments.join(".")
}

/// Rewrite the protected header's JSON (which is also the AAD).
fn rewrite_header(token: &str, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    mangle(token, 0, |bytes| {
        let mut header: Map<String, Value> = serde_json::from_slice(bytes).unwrap();
        f(&mut header);
        *bytes = serde_json::to_vec(&header).unwrap();
    })
}

/// The error, checked to hold neither plaintext nor key material.
fn refused(keys: &DecryptionKeys, token: &str) -> JweError {
    let err = keys.decrypt(token).expect_err("must be refused");
    let text = err.to_string();
    assert!(
        !text.contains(JWS) && !text.contains("c2lnbmF0dXJl"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE") && !text.contains("MII"), "{text}");
    err
}

fn is_decrypt(err: &JweError) -> bool {
    matches!(err, JweError::Decrypt)
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// A PKCS#8 PEM private key made from a private RSA JWK (n, e, d, p, q, dp, dq, qi), as
/// the RFC examples give their keys.
fn pem_from_jwk(jwk: &Value) -> Vec<u8> {
    let field = |name: &str| b64(jwk[name].as_str().unwrap());
    let components = KeyPairComponents {
        public_key: PublicKeyComponents {
            n: field("n"),
            e: field("e"),
        },
        d: field("d"),
        p: field("p"),
        q: field("q"),
        dP: field("dp"),
        dQ: field("dq"),
        qInv: field("qi"),
    };
    let pair = RsaKeyPair::from_components(&components).unwrap();
    let der = pair.as_der().unwrap();
    let body = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem.into_bytes()
}

#[test]
fn round_trip_every_alg_and_enc() {
    let keys = keys();
    for kid in ["a", "b"] {
        for alg in ALGS {
            for enc in ENCS {
                let jwe = encrypt_for(&jwk(&keys, kid), kid, alg, enc, JWS).unwrap();
                assert!(is_jwe(&jwe));
                assert_eq!(keys.decrypt(&jwe).unwrap(), JWS, "{kid} {alg} {enc}");
            }
        }
    }
}

/// RFC 7516 Appendix A.1: RSAES-OAEP and AES GCM, the complete compact token and the
/// private key of A.1.1, byte for byte. The header has no kid: the one key is tried.
#[test]
fn rfc7516_a1_rsa_oaep_a256gcm() {
    let key = serde_json::json!({
        "kty": "RSA",
        "n": "oahUIoWw0K0usKNuOR6H4wkf4oBUXHTxRvgb48E-BVvxkeDNjbC4he8rUWcJoZmds2h7M70imEVhRU5djINXtqllXI4DFqcI1DgjT9LewND8MW2Krf3Spsk_ZkoFnilakGygTwpZ3uesH-PFABNIUYpOiN15dsQRkgr0vEhxN92i2asbOenSZeyaxziK72UwxrrKoExv6kc5twXTq4h-QChLOln0_mtUZwfsRaMStPs6mS6XrgxnxbWhojf663tuEQueGC-FCMfra36C9knDFGzKsNa7LZK2djYgyD3JR_MB_4NUJW_TqOQtwHYbxevoJArm-L5StowjzGy-_bq6Gw",
        "e": "AQAB",
        "d": "kLdtIj6GbDks_ApCSTYQtelcNttlKiOyPzMrXHeI-yk1F7-kpDxY4-WY5NWV5KntaEeXS1j82E375xxhWMHXyvjYecPT9fpwR_M9gV8n9Hrh2anTpTD93Dt62ypW3yDsJzBnTnrYu1iwWRgBKrEYY46qAZIrA2xAwnm2X7uGR1hghkqDp0Vqj3kbSCz1XyfCs6_LehBwtxHIyh8Ripy40p24moOAbgxVw3rxT_vlt3UVe4WO3JkJOzlpUf-KTVI2Ptgm-dARxTEtE-id-4OJr0h-K-VFs3VSndVTIznSxfyrj8ILL6MG_Uv8YAu7VILSB3lOW085-4qE3DzgrTjgyQ",
        "p": "1r52Xk46c-LsfB5P442p7atdPUrxQSy4mti_tZI3Mgf2EuFVbUoDBvaRQ-SWxkbkmoEzL7JXroSBjSrK3YIQgYdMgyAEPTPjXv_hI2_1eTSPVZfzL0lffNn03IXqWF5MDFuoUYE0hzb2vhrlN_rKrbfDIwUbTrjjgieRbwC6Cl0",
        "q": "wLb35x7hmQWZsWJmB_vle87ihgZ19S8lBEROLIsZG4ayZVe9Hi9gDVCOBmUDdaDYVTSNx_8Fyw1YYa9XGrGnDew00J28cRUoeBB_jKI1oma0Orv1T9aXIWxKwd4gvxFImOWr3QRL9KEBRzk2RatUBnmDZJTIAfwTs0g68UZHvtc",
        "dp": "ZK-YwE7diUh0qR1tR7w8WHtolDx3MZ_OTowiFvgfeQ3SiresXjm9gZ5KLhMXvo-uz-KUJWDxS5pFQ_M0evdo1dKiRTjVw_x4NyqyXPM5nULPkcpU827rnpZzAJKpdhWAgqrXGKAECQH0Xt4taznjnd_zVpAmZZq60WPMBMfKcuE",
        "dq": "Dq0gfgJ1DdFGXiLvQEZnuKEN0UUmsJBxkjydc3j4ZYdBiMRAy86x0vHCjywcMlYYg4yoC4YZa9hNVcsjqA3FeiL19rk8g6Qn29Tt0cj8qqyFpz9vNDBUfCAiJVeESOjJDZPYHdHY8v1b-o-Z2X5tvLx-TCekf7oxyeKDUqKWjis",
        "qi": "VIMpMYbPf47dT1w_zDUXfPimsSegnMOA1zTaX7aGk_8urY6R8-ZW1FxU7AlWAyLWybqq6t16VFd7hQd0y6flUK4SlOydB61gwanOsXGOAOv82cHq0E3eL4HrtZkUuKvnPrMnsUUFlfUdybVzxyjz9JF_XyaY14ardLSjf4L_FNY",
    });
    let compact = concat!(
        "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.",
        "OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe",
        "ipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDb",
        "Sv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaV",
        "mqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je8",
        "1860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi",
        "6UklfCpIMfIjf7iGdXKHzg.",
        "48V1_ALb6US04U3b.",
        "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji",
        "SdiwkIr3ajwQzaBtQD_A.",
        "XFBoMYUZodetZdvTiFvSkQ",
    );
    let keys = DecryptionKeys::from_pems(&[(pem_from_jwk(&key), "rfc7516".into())]).unwrap();
    assert_eq!(keys.public_jwks()[0]["n"], key["n"]);
    assert_eq!(
        keys.open(compact).unwrap(),
        b"The true sign of intelligence is not knowledge but imagination."
    );
    // The guard wants a JWS inside; this plaintext is not one.
    assert!(matches!(keys.decrypt(compact), Err(JweError::NotJws)));
    // Each segment changed by one bit: refused, the same way whichever it was.
    for i in 0..5 {
        let bad = mangle(compact, i, |b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x02;
        });
        let err = keys.open(&bad).unwrap_err();
        assert!(is_decrypt(&err) || i == 0, "segment {i}: {err}");
    }
}

/// RFC 7520 5.2: RSA-OAEP with AES-GCM, the 4096-bit key of 5.2.1 and the compact
/// serialization of 5.2.5, byte for byte; the header carries its kid.
#[test]
fn rfc7520_5_2_rsa_oaep_a256gcm() {
    let key = serde_json::json!({
        "kty": "RSA",
        "n": "wbdxI55VaanZXPY29Lg5hdmv2XhvqAhoxUkanfzf2-5zVUxa6prHRrI4pP1AhoqJRlZfYtWWd5mmHRG2pAHIlh0ySJ9wi0BioZBl1XP2e-C-FyXJGcTy0HdKQWlrfhTm42EW7Vv04r4gfao6uxjLGwfpGrZLarohiWCPnkNrg71S2CuNZSQBIPGjXfkmIy2tl_VWgGnL22GplyXj5YlBLdxXp3XeStsqo571utNfoUTU8E4qdzJ3U1DItoVkPGsMwlmmnJiwA7sXRItBCivR4M5qnZtdw-7v4WuR4779ubDuJ5nalMv2S66-RPcnFAzWSKxtBDnFJJDGIUe7Tzizjg1nms0Xq_yPub_UOlWn0ec85FCft1hACpWG8schrOBeNqHBODFskYpUc2LC5JA2TaPF2dA67dg1TTsC_FupfQ2kNGcE1LgprxKHcVWYQb86B-HozjHZcqtauBzFNV5tbTuB-TpkcvJfNcFLlH3b8mb-H_ox35FjqBSAjLKyoeqfKTpVjvXhd09knwgJf6VKq6UC418_TOljMVfFTWXUxlnfhOOnzW6HSSzD1c9WrCuVzsUMv54szidQ9wf1cYWf3g5qFDxDQKis99gcDaiCAwM3yEBIzuNeeCa5dartHDb1xEB_HcHSeYbghbMjGfasvKn0aZRsnTyC0xhWBlsolZE",
        "e": "AQAB",
        "d": "n7fzJc3_WG59VEOBTkayzuSMM780OJQuZjN_KbH8lOZG25ZoA7T4Bxcc0xQn5oZE5uSCIwg91oCt0JvxPcpmqzaJZg1nirjcWZ-oBtVk7gCAWq-B3qhfF3izlbkosrzjHajIcY33HBhsy4_WerrXg4MDNE4HYojy68TcxT2LYQRxUOCf5TtJXvM8olexlSGtVnQnDRutxEUCwiewfmmrfveEogLx9EA-KMgAjTiISXxqIXQhWUQX1G7v_mV_Hr2YuImYcNcHkRvp9E7ook0876DhkO8v4UOZLwA1OlUX98mkoqwc58A_Y2lBYbVx1_s5lpPsEqbbH-nqIjh1fL0gdNfihLxnclWtW7pCztLnImZAyeCWAG7ZIfv-Rn9fLIv9jZ6r7r-MSH9sqbuziHN2grGjD_jfRluMHa0l84fFKl6bcqN1JWxPVhzNZo01yDF-1LiQnqUYSepPf6X3a2SOdkqBRiquE6EvLuSYIDpJq3jDIsgoL8Mo1LoomgiJxUwL_GWEOGu28gplyzm-9Q0U0nyhEf1uhSR8aJAQWAiFImWH5W_IQT9I7-yrindr_2fWQ_i1UgMsGzA7aOGzZfPljRy6z-tY_KuBG00-28S_aWvjyUc-Alp8AUyKjBZ-7CWH32fGWK48j1t-zomrwjL_mnhsPbGs0c9WsWgRzI-K8gE",
        "p": "7_2v3OQZzlPFcHyYfLABQ3XP85Es4hCdwCkbDeltaUXgVy9l9etKghvM4hRkOvbb01kYVuLFmxIkCDtpi-zLCYAdXKrAK3PtSbtzld_XZ9nlsYa_QZWpXB_IrtFjVfdKUdMz94pHUhFGFj7nr6NNxfpiHSHWFE1zD_AC3mY46J961Y2LRnreVwAGNw53p07Db8yD_92pDa97vqcZOdgtybH9q6uma-RFNhO1AoiJhYZj69hjmMRXx-x56HO9cnXNbmzNSCFCKnQmn4GQLmRj9sfbZRqL94bbtE4_e0Zrpo8RNo8vxRLqQNwIy85fc6BRgBJomt8QdQvIgPgWCv5HoQ",
        "q": "zqOHk1P6WN_rHuM7ZF1cXH0x6RuOHq67WuHiSknqQeefGBA9PWs6ZyKQCO-O6mKXtcgE8_Q_hA2kMRcKOcvHil1hqMCNSXlflM7WPRPZu2qCDcqssd_uMbP-DqYthH_EzwL9KnYoH7JQFxxmcv5An8oXUtTwk4knKjkIYGRuUwfQTus0w1NfjFAyxOOiAQ37ussIcE6C6ZSsM3n41UlbJ7TCqewzVJaPJN5cxjySPZPD3Vp01a9YgAD6a3IIaKJdIxJS1ImnfPevSJQBE79-EXe2kSwVgOzvt-gsmM29QQ8veHy4uAqca5dZzMs7hkkHtw1z0jHV90epQJJlXXnH8Q",
        "dp": "19oDkBh1AXelMIxQFm2zZTqUhAzCIr4xNIGEPNoDt1jK83_FJA-xnx5kA7-1erdHdms_Ef67HsONNv5A60JaR7w8LHnDiBGnjdaUmmuO8XAxQJ_ia5mxjxNjS6E2yD44USo2JmHvzeeNczq25elqbTPLhUpGo1IZuG72FZQ5gTjXoTXC2-xtCDEUZfaUNh4IeAipfLugbpe0JAFlFfrTDAMUFpC3iXjxqzbEanflwPvj6V9iDSgjj8SozSM0dLtxvu0LIeIQAeEgT_yXcrKGmpKdSO08kLBx8VUjkbv_3Pn20Gyu2YEuwpFlM_H1NikuxJNKFGmnAq9LcnwwT0jvoQ",
        "dq": "S6p59KrlmzGzaQYQM3o0XfHCGvfqHLYjCO557HYQf72O9kLMCfd_1VBEqeD-1jjwELKDjck8kOBl5UvohK1oDfSP1DleAy-cnmL29DqWmhgwM1ip0CCNmkmsmDSlqkUXDi6sAaZuntyukyflI-qSQ3C_BafPyFaKrt1fgdyEwYa08pESKwwWisy7KnmoUvaJ3SaHmohFS78TJ25cfc10wZ9hQNOrIChZlkiOdFCtxDqdmCqNacnhgE3bZQjGp3n83ODSz9zwJcSUvODlXBPc2AycH6Ci5yjbxt4Ppox_5pjm6xnQkiPgj01GpsUssMmBN7iHVsrE7N2iznBNCeOUIQ",
        "qi": "FZhClBMywVVjnuUud-05qd5CYU0dK79akAgy9oX6RX6I3IIIPckCciRrokxglZn-omAY5CnCe4KdrnjFOT5YUZE7G_Pg44XgCXaarLQf4hl80oPEf6-jJ5Iy6wPRx7G2e8qLxnh9cOdf-kRqgOS3F48Ucvw3ma5V6KGMwQqWFeV31XtZ8l5cVI-I3NzBS7qltpUVgz2Ju021eyc7IlqgzR98qKONl27DuEES0aK0WE97jnsyO27Yp88Wa2RiBrEocM89QZI1seJiGDizHRUP4UZxw9zsXww46wy0P6f9grnYp7t8LkyDDk8eoI4KX6SNMNVcyVS9IWjlq8EzqZEKIA",
    });
    let compact = concat!(
        "eyJhbGciOiJSU0EtT0FFUCIsImtpZCI6InNhbXdpc2UuZ2FtZ2VlQGhvYmJpdG",
        "9uLmV4YW1wbGUiLCJlbmMiOiJBMjU2R0NNIn0",
        ".",
        "rT99rwrBTbTI7IJM8fU3Eli7226HEB7IchCxNuh7lCiud48LxeolRdtFF4nzQibeYO",
        "l5S_PJsAXZwSXtDePz9hk-BbtsTBqC2UsPOdwjC9NhNupNNu9uHIVftDyucvI6hvALe",
        "Z6OGnhNV4v1zx2k7O1D89mAzfw-_kT3tkuorpDU-CpBENfIHX1Q58-Aad3FzMuo3Fn9b",
        "uEP2yXakLXYa15BUXQsupM4A1GD4_H4Bd7V3u9h8Gkg8BpxKdUV9ScfJQTcYm6eJEBz3",
        "aSwIaK4T3-dwWpuBOhROQXBosJzS1asnuHtVMt2pKIIfux5BC6huIvmY7kzV7W7aIUrp",
        "Ym_3H4zYvyMeq5pGqFmW2k8zpO878TRlZx7pZfPYDSXZyS0CfKKkMozT_qiCwZTSz4du",
        "Ynt8hS4Z9sGthXn9uDqd6wycMagnQfOTs_lycTWmY-aqWVDKhjYNRf03NiwRtb5BE-tO",
        "dFwCASQj3uuAgPGrO2AWBe38UjQb0lvXn1SpyvYZ3WFc7WOJYaTa7A8DRn6MC6T-xDmM",
        "uxC0G7S2rscw5lQQU06MvZTlFOt0UvfuKBa03cxA_nIBIhLMjY2kOTxQMmpDPTr6Cbo8",
        "aKaOnx6ASE5Jx9paBpnNmOOKH35j_QlrQhDWUN6A2Gg8iFayJ69xDEdHAVCGRzN3woEI",
        "2ozDRs",
        ".",
        "-nBoKLH0YkLZPSI9",
        ".",
        "o4k2cnGN8rSSw3IDo1YuySkqeS_t2m1GXklSgqBdpACm6UJuJowOHC5ytjqYgRL-I-",
        "soPlwqMUf4UgRWWeaOGNw6vGW-xyM01lTYxrXfVzIIaRdhYtEMRBvBWbEwP7ua1DRf",
        "vaOjgZv6Ifa3brcAM64d8p5lhhNcizPersuhw5f-pGYzseva-TUaL8iWnctc-sSwy7",
        "SQmRkfhDjwbz0fz6kFovEgj64X1I5s7E6GLp5fnbYGLa1QUiML7Cc2GxgvI7zqWo0Y",
        "IEc7aCflLG1-8BboVWFdZKLK9vNoycrYHumwzKluLWEbSVmaPpOslY2n525DxDfWaV",
        "FUfKQxMF56vn4B9QMpWAbnypNimbM8zVOw",
        ".",
        "UCGiqJxhBI3IFVdPalHHvA",
    );
    let kid = "samwise.gamgee@hobbiton.example";
    let pem = pem_from_jwk(&key);
    let keys = DecryptionKeys::from_pems(&[(pem.clone(), kid.into())]).unwrap();
    let plaintext = "You can trust us to stick with you through thick and thin\u{2013}to the \
                     bitter end. And you can trust us to keep any secret of yours\u{2013}closer \
                     than you keep it yourself. But you cannot trust us to let you face \
                     trouble alone, and go off without a word. We are your friends, Frodo.";
    assert_eq!(keys.open(compact).unwrap(), plaintext.as_bytes());
    // The kid selects: the same key under another kid is never tried.
    let renamed = DecryptionKeys::from_pems(&[(pem, "frodo".into())]).unwrap();
    assert!(matches!(
        renamed.open(compact),
        Err(JweError::UnknownKid(_))
    ));
    // The tag, the IV, the ciphertext, the encrypted key, the header: each refused.
    for i in 1..5 {
        let bad = mangle(compact, i, |b| b[0] ^= 0x80);
        assert!(is_decrypt(&keys.open(&bad).unwrap_err()), "segment {i}");
    }
    let bad = rewrite_header(compact, |h| {
        h.insert("cty".into(), Value::from("JWT"));
    });
    assert!(is_decrypt(&keys.open(&bad).unwrap_err()));
}

/// RFC 7516 Appendix A.3's content encryption (A128CBC-HS256; its key management, AES
/// key wrap, is not one the guard accepts): the CEK of A.3.2 opens the ciphertext of
/// A.3.7 under the header of A.3.1 as AAD.
#[test]
fn rfc7516_a3_cbc_hmac_content() {
    let cek = [
        4, 211, 31, 197, 84, 157, 252, 254, 11, 100, 157, 250, 63, 170, 106, 206, 107, 124, 212,
        45, 111, 107, 9, 219, 200, 177, 0, 240, 143, 156, 44, 207,
    ];
    let header = "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0";
    let iv = b64("AxY8DCtDaGlsbGljb3RoZQ");
    let ciphertext = b64("KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY");
    let tag = b64("U0m_YmjN04DJvceFICbCVQ");
    let enc = Enc::from_name("A128CBC-HS256").unwrap();
    let open = |aad: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]| {
        enc.open(&cek, aad, iv, ciphertext, tag)
    };
    assert_eq!(
        open(header.as_bytes(), &iv, &ciphertext, &tag).unwrap(),
        b"Live long and prosper."
    );
    let flip = |bytes: &[u8], at: usize| {
        let mut bytes = bytes.to_vec();
        bytes[at] ^= 1;
        bytes
    };
    assert!(is_decrypt(
        &open(&flip(header.as_bytes(), 3), &iv, &ciphertext, &tag).unwrap_err()
    ));
    assert!(is_decrypt(
        &open(header.as_bytes(), &flip(&iv, 15), &ciphertext, &tag).unwrap_err()
    ));
    assert!(is_decrypt(
        &open(header.as_bytes(), &iv, &flip(&ciphertext, 31), &tag).unwrap_err()
    ));
    assert!(is_decrypt(
        &open(header.as_bytes(), &iv, &ciphertext, &flip(&tag, 0)).unwrap_err()
    ));
    let mut wrong = cek;
    wrong[31] ^= 1;
    assert!(is_decrypt(
        &enc.open(&wrong, header.as_bytes(), &iv, &ciphertext, &tag)
            .unwrap_err()
    ));
}

/// RFC 7518 Appendix B.1-B.3: AES_CBC_HMAC_SHA2 test cases (K, P, IV, A, E, T).
#[test]
fn rfc7518_b_cbc_hmac_vectors() {
    let p = hex("41 20 63 69 70 68 65 72 20 73 79 73 74 65 6d 20
         6d 75 73 74 20 6e 6f 74 20 62 65 20 72 65 71 75
         69 72 65 64 20 74 6f 20 62 65 20 73 65 63 72 65
         74 2c 20 61 6e 64 20 69 74 20 6d 75 73 74 20 62
         65 20 61 62 6c 65 20 74 6f 20 66 61 6c 6c 20 69
         6e 74 6f 20 74 68 65 20 68 61 6e 64 73 20 6f 66
         20 74 68 65 20 65 6e 65 6d 79 20 77 69 74 68 6f
         75 74 20 69 6e 63 6f 6e 76 65 6e 69 65 6e 63 65");
    let iv = hex("1a f3 8c 2d c2 b9 6f fd d8 66 94 09 23 41 bc 04");
    let a = hex("54 68 65 20 73 65 63 6f 6e 64 20 70 72 69 6e 63
         69 70 6c 65 20 6f 66 20 41 75 67 75 73 74 65 20
         4b 65 72 63 6b 68 6f 66 66 73");
    assert_eq!(a, b"The second principle of Auguste Kerckhoffs");
    let cases = [
        (
            "A128CBC-HS256",
            "c8 0e df a3 2d df 39 d5 ef 00 c0 b4 68 83 42 79
             a2 e4 6a 1b 80 49 f7 92 f7 6b fe 54 b9 03 a9 c9
             a9 4a c9 b4 7a d2 65 5c 5f 10 f9 ae f7 14 27 e2
             fc 6f 9b 3f 39 9a 22 14 89 f1 63 62 c7 03 23 36
             09 d4 5a c6 98 64 e3 32 1c f8 29 35 ac 40 96 c8
             6e 13 33 14 c5 40 19 e8 ca 79 80 df a4 b9 cf 1b
             38 4c 48 6f 3a 54 c5 10 78 15 8e e5 d7 9d e5 9f
             bd 34 d8 48 b3 d6 95 50 a6 76 46 34 44 27 ad e5
             4b 88 51 ff b5 98 f7 f8 00 74 b9 47 3c 82 e2 db",
            "65 2c 3f a3 6b 0a 7c 5b 32 19 fa b3 a3 0b c1 c4",
        ),
        (
            "A192CBC-HS384",
            "ea 65 da 6b 59 e6 1e db 41 9b e6 2d 19 71 2a e5
             d3 03 ee b5 00 52 d0 df d6 69 7f 77 22 4c 8e db
             00 0d 27 9b dc 14 c1 07 26 54 bd 30 94 42 30 c6
             57 be d4 ca 0c 9f 4a 84 66 f2 2b 22 6d 17 46 21
             4b f8 cf c2 40 0a dd 9f 51 26 e4 79 66 3f c9 0b
             3b ed 78 7a 2f 0f fc bf 39 04 be 2a 64 1d 5c 21
             05 bf e5 91 ba e2 3b 1d 74 49 e5 32 ee f6 0a 9a
             c8 bb 6c 6b 01 d3 5d 49 78 7b cd 57 ef 48 49 27
             f2 80 ad c9 1a c0 c4 e7 9c 7b 11 ef c6 00 54 e3",
            "84 90 ac 0e 58 94 9b fe 51 87 5d 73 3f 93 ac 20
             75 16 80 39 cc c7 33 d7",
        ),
        (
            "A256CBC-HS512",
            "4a ff aa ad b7 8c 31 c5 da 4b 1b 59 0d 10 ff bd
             3d d8 d5 d3 02 42 35 26 91 2d a0 37 ec bc c7 bd
             82 2c 30 1d d6 7c 37 3b cc b5 84 ad 3e 92 79 c2
             e6 d1 2a 13 74 b7 7f 07 75 53 df 82 94 10 44 6b
             36 eb d9 70 66 29 6a e6 42 7e a7 5c 2e 08 46 a1
             1a 09 cc f5 37 0d c8 0b fe cb ad 28 c7 3f 09 b3
             a3 b7 5e 66 2a 25 94 41 0a e4 96 b2 e2 e6 60 9e
             31 e6 e0 2c c8 37 f0 53 d2 1f 37 ff 4f 51 95 0b
             be 26 38 d0 9d d7 a4 93 09 30 80 6d 07 03 b1 f6",
            "4d d3 b4 c0 88 a7 f4 5c 21 68 39 64 5b 20 12 bf
             2e 62 69 a8 c5 6a 81 6d bc 1b 26 77 61 95 5b c5",
        ),
    ];
    for (name, e, t) in cases {
        let enc = Enc::from_name(name).unwrap();
        // K is 00 01 02 ... of the key length: MAC_KEY its first half, ENC_KEY the rest.
        let k: Vec<u8> = (0..enc.key_len() as u8).collect();
        let (e, t) = (hex(e), hex(t));
        assert_eq!(t.len(), enc.tag_len(), "{name}");
        assert_eq!(enc.open(&k, &a, &iv, &e, &t).unwrap(), p, "{name}");
        let Enc::CbcHmac { mac, half, .. } = enc else {
            panic!("{name} is CBC");
        };
        assert_eq!(
            &cbc_hmac(mac, &k[..half], &a, &iv, &e).as_ref()[..half],
            &t[..]
        );
        // The tag is checked before decryption: a wrong tag is refused even though the
        // ciphertext and its padding are intact, and each changed input is refused.
        let mut bad_t = t.clone();
        bad_t[t.len() - 1] ^= 1;
        assert!(is_decrypt(&enc.open(&k, &a, &iv, &e, &bad_t).unwrap_err()));
        let mut bad_e = e.clone();
        bad_e[0] ^= 1;
        assert!(is_decrypt(&enc.open(&k, &a, &iv, &bad_e, &t).unwrap_err()));
        assert!(is_decrypt(&enc.open(&k, &a[1..], &iv, &e, &t).unwrap_err()));
        let mut bad_iv = iv.clone();
        bad_iv[0] ^= 1;
        assert!(is_decrypt(&enc.open(&k, &a, &bad_iv, &e, &t).unwrap_err()));
        let mut bad_k = k.clone();
        bad_k[enc.key_len() - 1] ^= 1;
        assert!(is_decrypt(&enc.open(&bad_k, &a, &iv, &e, &t).unwrap_err()));
    }
}

/// A forged CBC ciphertext whose last block has bad padding, authenticated or not: both
/// are refused at the tag before any block is decrypted, as the same error.
#[test]
fn cbc_padding_is_never_reached_without_a_good_tag() {
    let enc = Enc::from_name("A128CBC-HS256").unwrap();
    let k = [7u8; 32];
    let iv = [1u8; 16];
    // Random blocks: once decrypted, their padding is almost surely invalid.
    let forged = [0x5au8; 32];
    let wrong_tag = [0u8; 16];
    assert!(is_decrypt(
        &enc.open(&k, b"aad", &iv, &forged, &wrong_tag).unwrap_err()
    ));
    // With a correct tag for the same blocks, the tag passes and only then the padding
    // is looked at (it is bad for these bytes): still the same error.
    let Enc::CbcHmac { mac, half, .. } = enc else {
        unreachable!()
    };
    let tag = cbc_hmac(mac, &k[..half], b"aad", &iv, &forged);
    let result = enc.open(&k, b"aad", &iv, &forged, &tag.as_ref()[..half]);
    assert!(is_decrypt(&result.unwrap_err()));
}

/// RFC 7516 11.5: an encrypted key that does not decrypt, or decrypts to a key of the
/// wrong length, fails exactly like a bad tag.
#[test]
fn a_bad_content_key_fails_like_a_bad_tag() {
    let keys = keys();
    let public = PublicEncryptingKey::from_der(&rsa_spki(
        &b64(jwk(&keys, "a")["n"].as_str().unwrap()),
        &b64("AQAB"),
    ))
    .unwrap();
    let public = OaepPublicEncryptingKey::new(public).unwrap();
    let good = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", "A256GCM", JWS).unwrap();
    // A 16-byte CEK where A256GCM needs 32, properly RSA-OAEP encrypted.
    let mut out = vec![0u8; public.ciphertext_size()];
    let short = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, &[9u8; 16], &mut out, None)
        .unwrap()
        .to_vec();
    let wrong_length = mangle(&good, 1, |b| *b = short.clone());
    // Not RSA-OAEP at all: random bytes of the modulus' size.
    let garbage = mangle(&good, 1, |b| {
        b.iter_mut().for_each(|x| *x = x.wrapping_add(1))
    });
    // A good CEK under the other OAEP hash.
    let other_hash = rewrite_header(&good, |h| {
        h.insert("alg".into(), Value::from("RSA-OAEP-256"));
    });
    let bad_tag = mangle(&good, 4, |b| b[0] ^= 1);
    for token in [wrong_length, garbage, other_hash, bad_tag] {
        let err = refused(&keys, &token);
        assert!(is_decrypt(&err), "{err}");
        assert_eq!(err.to_string(), "decryption failed with every key tried");
    }
}

#[test]
fn public_jwks_are_rsa_oaep_encryption_keys() {
    let keys = keys();
    assert!(!keys.is_empty());
    let jwks = keys.public_jwks();
    assert_eq!(jwks.len(), 2);
    for (jwk, kid) in jwks.iter().zip(["a", "b"]) {
        let mut names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["kid"], kid);
        assert_eq!(jwk["use"], "enc");
        assert_eq!(jwk["alg"], "RSA-OAEP");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(b64(jwk["n"].as_str().unwrap()).len(), 256);
    }
    // The same material as the signing view of the key.
    let signing = SigningKey::from_pem(&pems()[0].0)
        .unwrap()
        .public_jwk("a", None);
    assert_eq!(jwks[0]["n"], signing["n"]);
    assert!(!format!("{keys:?}").contains("MII"));
}

#[test]
fn loading_refuses_bad_keys_and_kids() {
    let empty = DecryptionKeys::from_pems(&[]).unwrap();
    assert!(empty.is_empty());
    assert!(empty.public_jwks().is_empty());
    assert!(matches!(
        empty.decrypt(&token(&keys())),
        Err(JweError::UnknownKid(_))
    ));
    let kidless = with_header(&keys(), "a", &header("A128GCM", None), JWS.as_bytes());
    assert!(matches!(empty.decrypt(&kidless), Err(JweError::Decrypt)));

    let pem = pems()[0].0.clone();
    let twice = [
        (pem.clone(), "x".to_string()),
        (pem.clone(), "x".to_string()),
    ];
    assert!(
        DecryptionKeys::from_pems(&twice)
            .unwrap_err()
            .contains("twice")
    );
    assert!(DecryptionKeys::from_pems(&[(pem, String::new())]).is_err());
    assert!(DecryptionKeys::from_pems(&[(b"not a pem".to_vec(), "x".into())]).is_err());

    let ec = SigningKey::generate(Alg::ES256, 0)
        .unwrap()
        .to_pem()
        .unwrap();
    let err = DecryptionKeys::from_pems(&[(ec.into_bytes(), "x".into())]).unwrap_err();
    assert!(!err.contains("MII"), "{err}");
    let err = DecryptionKeys::from_pems(&[(RSA_1024.as_bytes().to_vec(), "x".into())]).unwrap_err();
    assert!(err.contains("2048"), "{err}");
    assert!(!err.contains("MII"), "{err}");
}

#[test]
fn only_the_named_key_is_tried() {
    let keys = keys();
    // Encrypted to b, but naming a: a is tried and fails; b is never tried.
    let jwe = encrypt_for(&jwk(&keys, "b"), "a", "RSA-OAEP", "A128GCM", JWS).unwrap();
    assert!(is_decrypt(&refused(&keys, &jwe)));
    let jwe = encrypt_for(&jwk(&keys, "a"), "c", "RSA-OAEP", "A128GCM", JWS).unwrap();
    assert!(matches!(refused(&keys, &jwe), JweError::UnknownKid(_)));
    // A key loaded alone under another kid does not decrypt for a.
    let only_b = DecryptionKeys::from_pems(&pems()[1..]).unwrap();
    assert!(matches!(
        refused(&only_b, &token(&keys)),
        JweError::UnknownKid(_)
    ));
}

/// Without a kid (the GIDS and Koppeltaal PoC portals send none), each key is tried.
#[test]
fn without_a_kid_every_key_is_tried() {
    let keys = keys();
    for enc in ENCS {
        for to in ["a", "b"] {
            let jwe = with_header(&keys, to, &header(enc, None), JWS.as_bytes());
            assert_eq!(keys.decrypt(&jwe).unwrap(), JWS, "{enc} to {to}");
        }
    }
    // Encrypted to a key the module does not hold: every key fails, one error.
    let stranger = SigningKey::generate(Alg::RS256, 2048)
        .unwrap()
        .public_jwk("s", None);
    let jwe =
        encrypt_with_header(&stranger, &header("A128CBC-HS256", None), JWS.as_bytes()).unwrap();
    assert!(is_decrypt(&refused(&keys, &jwe)));
    // A kid-less token tampered with is refused by every key alike.
    let good = with_header(&keys, "b", &header("A256GCM", None), JWS.as_bytes());
    for i in 1..5 {
        let bad = mangle(&good, i, |b| b[0] ^= 0x10);
        assert!(is_decrypt(&refused(&keys, &bad)), "segment {i}");
    }
}

#[test]
fn odd_kids_are_refused() {
    let keys = keys();
    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("kid".into(), Value::from(1));
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("kid".into(), Value::Null);
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
    let long = "k".repeat(500);
    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("kid".into(), Value::from(format!("{long}\n")));
    });
    let text = refused(&keys, &jwe).to_string();
    assert!(text.len() < 100 && !text.contains('\n'), "{text}");
}

#[test]
fn tampering_is_refused() {
    let keys = keys();
    for enc in ENCS {
        let jwe = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
        // Encrypted key, IV, ciphertext, tag.
        for i in 1..5 {
            for at in [0, 5] {
                let bad = mangle(&jwe, i, |b| {
                    let at = at.min(b.len() - 1);
                    b[at] ^= 0x01;
                });
                assert!(is_decrypt(&refused(&keys, &bad)), "{enc} {i}");
            }
        }
        // The protected header is the AAD.
        let bad = rewrite_header(&jwe, |h| {
            h.insert("x".into(), Value::from(1));
        });
        assert!(is_decrypt(&refused(&keys, &bad)), "{enc} aad");
        // Segments moved between two tokens for the same key.
        let other = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
        let (a, b): (Vec<&str>, Vec<&str>) = (jwe.split('.').collect(), other.split('.').collect());
        for i in 1..5 {
            let mut mixed = a.clone();
            mixed[i] = b[i];
            assert!(
                is_decrypt(&refused(&keys, &mixed.join("."))),
                "{enc} swap {i}"
            );
        }
        // The right kid, the wrong key's ciphertext.
        let to_b = encrypt_for(&jwk(&keys, "b"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
        assert!(is_decrypt(&refused(&keys, &to_b)), "{enc} wrong key");
    }
}

#[test]
fn unsupported_algorithms_are_refused_before_any_key_is_used() {
    let keys = keys();
    for alg in [
        "RSA1_5",
        "RSA-OAEP-384",
        "RSA-OAEP-512",
        "dir",
        "A128KW",
        "ECDH-ES",
        "none",
    ] {
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("alg".into(), Value::from(alg));
        });
        match refused(&keys, &jwe) {
            JweError::UnsupportedAlg(got) => assert_eq!(got, format!("{alg:?}")),
            other => panic!("{alg}: {other}"),
        }
    }
    for alg in [Value::from("rsa-oaep"), Value::from(1), Value::Null] {
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("alg".into(), alg);
        });
        assert!(matches!(refused(&keys, &jwe), JweError::UnsupportedAlg(_)));
    }
    let jwe = rewrite_header(&token(&keys), |h| {
        h.remove("alg");
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
    // encrypt_with_header makes none of them either, nor a token without alg or enc.
    let mut h = header("A128GCM", Some("a"));
    h.insert("alg".into(), Value::from("RSA1_5"));
    assert!(encrypt_with_header(&jwk(&keys, "a"), &h, JWS.as_bytes()).is_err());
    for missing in ["alg", "enc"] {
        let mut h = header("A128GCM", None);
        h.remove(missing);
        assert!(encrypt_with_header(&jwk(&keys, "a"), &h, JWS.as_bytes()).is_err());
    }
}

#[test]
fn unsupported_enc_zip_crit_and_cty_are_refused() {
    let keys = keys();
    for enc in [
        Value::from("A128CBC+HS256"),
        Value::from("XC20P"),
        Value::from("a128gcm"),
        Value::from(true),
    ] {
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("enc".into(), enc);
        });
        assert!(matches!(refused(&keys, &jwe), JweError::UnsupportedEnc(_)));
    }
    let jwe = rewrite_header(&token(&keys), |h| {
        h.remove("enc");
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));

    // A real DEF-compressed token would decrypt to deflated bytes: refused before that.
    let mut zipped = header("A128GCM", Some("a"));
    zipped.insert("zip".into(), Value::from("DEF"));
    let jwe = with_header(&keys, "a", &zipped, JWS.as_bytes());
    assert!(matches!(refused(&keys, &jwe), JweError::Compressed));

    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("crit".into(), serde_json::json!(["exp"]));
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Critical));

    for (cty, ok) in [
        ("JWT", true),
        ("jwt", true),
        ("Jwt", true),
        ("JSON", false),
        ("application/jwt", false),
    ] {
        let mut h = header("A256GCM", Some("a"));
        h.insert("cty".into(), Value::from(cty));
        let jwe = with_header(&keys, "a", &h, JWS.as_bytes());
        match keys.decrypt(&jwe) {
            Ok(jws) => assert!(ok && jws == JWS, "{cty}"),
            Err(e) => assert!(!ok && matches!(e, JweError::ContentType(_)), "{cty}: {e}"),
        }
    }
    let jwe = with_header(&keys, "a", &header("A256GCM", Some("a")), JWS.as_bytes());
    assert_eq!(keys.decrypt(&jwe).unwrap(), JWS, "cty may be absent");
}

#[test]
fn content_must_be_a_compact_jws() {
    let keys = keys();
    let h = header("A128CBC-HS256", Some("a"));
    for payload in [
        &b"secret plaintext"[..],
        b"a.b",
        b"a.b.c.d",
        b"\xff.\xfe.\xfd",
    ] {
        let jwe = with_header(&keys, "a", &h, payload);
        let err = refused(&keys, &jwe);
        assert!(matches!(err, JweError::NotJws), "{err}");
        assert!(!err.to_string().contains("secret"));
    }
    // An empty content is one padding block for CBC: it decrypts, and is no JWS.
    let jwe = with_header(&keys, "a", &h, b"");
    assert!(matches!(refused(&keys, &jwe), JweError::NotJws));
    // A JWE inside a JWE is not unwrapped twice.
    let inner = token(&keys);
    let jwe = with_header(&keys, "a", &h, inner.as_bytes());
    assert!(matches!(refused(&keys, &jwe), JweError::NotJws));
}

#[test]
fn segment_shapes_are_checked_before_any_key() {
    let keys = keys();
    for enc in ENCS {
        let jwe = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", enc, JWS).unwrap();
        let segments: Vec<&str> = jwe.split('.').collect();
        for i in 1..5 {
            let mut s = segments.clone();
            s[i] = "";
            let err = refused(&keys, &s.join("."));
            assert!(
                matches!(err, JweError::Malformed(_)),
                "{enc} empty {i}: {err}"
            );
        }
        for (i, len) in [(2, 8), (2, 32), (4, 8), (4, 64)] {
            let bad = mangle(&jwe, i, |b| b.resize(len, 0));
            assert!(
                matches!(refused(&keys, &bad), JweError::Malformed(_)),
                "{enc} {i} {len}"
            );
        }
        if enc.contains("CBC") {
            let bad = mangle(&jwe, 3, |b| b.truncate(b.len() - 1));
            assert!(
                matches!(refused(&keys, &bad), JweError::Malformed(_)),
                "{enc} block"
            );
        }
        for i in 0..5 {
            let mut s = segments.clone();
            let padded = format!("{}=", s[i]);
            s[i] = &padded;
            assert!(matches!(
                refused(&keys, &s.join(".")),
                JweError::Malformed(_)
            ));
        }
    }
    for shape in [
        "",
        ".",
        "....",
        "a.b.c.d",
        "a.b.c.d.e.f",
        "e30.e30.e30.e30.e30",
    ] {
        assert!(
            matches!(refused(&keys, shape), JweError::Malformed(_)),
            "{shape:?}"
        );
    }
    let huge = format!("{}....", "A".repeat(MAX_TOKEN_LEN));
    assert!(matches!(refused(&keys, &huge), JweError::TooLong(_)));
}

#[test]
fn jwe_shape() {
    assert!(is_jwe("a.b.c.d.e"));
    assert!(is_jwe("...."));
    assert!(!is_jwe("a.b.c"));
    assert!(!is_jwe("a.b.c.d"));
    assert!(!is_jwe("a.b.c.d.e.f"));
    assert!(!is_jwe(""));
}

/// The SubjectPublicKeyInfo built from n and e is the one the library itself writes.
#[test]
fn spki_from_n_and_e_matches_the_library() {
    use aws_lc_rs::encoding::AsDer;
    for (pem, kid) in pems() {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).unwrap();
        let private = PrivateDecryptingKey::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let expected = private.public_key().as_der().unwrap();
        let keys = DecryptionKeys::from_pems(&[(pem.clone(), kid.clone())]).unwrap();
        let jwk = &keys.public_jwks()[0];
        let built = rsa_spki(
            &b64(jwk["n"].as_str().unwrap()),
            &b64(jwk["e"].as_str().unwrap()),
        );
        assert_eq!(built, expected.as_ref());
    }
}

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn text(&mut self, len: usize, alphabet: &[u8]) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }
}

#[test]
fn mangled_and_random_input_never_panics_or_decrypts() {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let keys = keys();
    let mut noise = Noise(0x5eed_1234_abcd_0001);
    let mut tokens: Vec<String> = ENCS
        .iter()
        .map(|enc| encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", enc, JWS).unwrap())
        .collect();
    // Kid-less ones too, which every key tries.
    tokens.extend(
        ["A128CBC-HS256", "A256GCM"]
            .iter()
            .map(|enc| with_header(&keys, "b", &header(enc, None), JWS.as_bytes())),
    );
    for round in 0..3000 {
        let base = &tokens[round % tokens.len()];
        let candidate = match noise.below(6) {
            // Random text over base64url, dots and a few others.
            0 => {
                let len = noise.below(400);
                noise.text(len, b"ABCxyz019-_.=+/ \"{}\\\x00\xc3")
            }
            // One segment replaced by random base64url of random length.
            1 => {
                let mut s: Vec<String> = base.split('.').map(String::from).collect();
                let i = noise.below(5);
                let len = noise.below(600);
                s[i] = noise.text(len, B64);
                s.join(".")
            }
            // A few characters changed anywhere.
            2 => {
                let mut bytes = base.clone().into_bytes();
                for _ in 0..=noise.below(4) {
                    let at = noise.below(bytes.len());
                    bytes[at] = B64[noise.below(B64.len())];
                }
                String::from_utf8(bytes).unwrap()
            }
            // Cut anywhere, or a segment duplicated.
            3 => base[..noise.below(base.len())].to_string(),
            4 => {
                let mut s: Vec<&str> = base.split('.').collect();
                let i = noise.below(5);
                s.insert(i, s[i]);
                s.truncate(5);
                s.join(".")
            }
            // A random decoded segment of any length, including the header as JSON.
            _ => {
                let i = noise.below(5);
                let len = noise.below(300);
                mangle(base, i, |b| {
                    b.clear();
                    b.extend((0..len).map(|_| noise.next() as u8));
                })
            }
        };
        if candidate == *base {
            continue;
        }
        if let Ok(jws) = keys.decrypt(&candidate) {
            // Only the unchanged ciphertext can decrypt (e.g. a changed character in
            // the unused bits of a final base64 character is refused as non-canonical).
            panic!("mangled token decrypted: {candidate} -> {jws}");
        }
    }
}
