//! HTI:jwe: an encrypted launch token (compact JWE wrapping the signed JWS), decrypted with
//! the module's own RSA keys. The crypto is aws-lc-rs, the library the guard already uses for
//! TLS and signatures: RSA-OAEP(-256) unwraps the content key, then AES-GCM, or AES-CBC with
//! HMAC-SHA2 (RFC 7518 5.2, tag checked before any block is decrypted), opens the content.
//! The header is judged before any key is used, and every cryptographic failure is the same
//! error (RFC 7516 11.5), so that neither a log line nor a timing says which step failed.
//! A key is parsed once (`DecryptionKey`, at config load) and kept; `verify` maps a
//! `JweError` to the reason `undecryptable`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey,
};
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Map, Value};

use crate::jose::jwk::thumbprint;
use crate::jose::jws::MAX_TOKEN_LEN;

/// Why a JWE was not decrypted. Every variant is the reason `undecryptable`; the Display is a
/// log detail: header values are quoted and cut short, and never key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    #[error("encrypted token of {0} bytes is too long")]
    TooLong(usize),
    #[error("malformed JWE: {0}")]
    Malformed(&'static str),
    #[error("no decryption key has kid {0}")]
    UnknownKid(String),
    #[error("JWE alg {0} is not accepted (RSA-OAEP, RSA-OAEP-256)")]
    UnsupportedAlg(String),
    #[error("JWE enc {0} is not accepted")]
    UnsupportedEnc(String),
    #[error("compressed JWE (zip) is refused")]
    Compressed,
    #[error("JWE header has crit, which is refused")]
    Critical,
    #[error("JWE cty {0} is not JWT")]
    ContentType(String),
    /// No key tried opened it: a wrong key, or a changed encrypted key, IV, ciphertext, tag or
    /// header. One variant for every step, so the failure says nothing about which.
    #[error("decryption failed with every key tried")]
    Decrypt,
    #[error("the decrypted content is not a compact JWS")]
    NotJws,
}

/// A header value for a log line: debug-quoted (no control characters) and cut short.
fn excerpt(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.len() <= 40 {
        return text;
    }
    let mut end = 40;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", text.get(..end).unwrap_or_default())
}

/// An accepted key management algorithm (RFC 7518 4.3).
fn oaep(alg: &str) -> Option<&'static OaepAlgorithm> {
    match alg {
        "RSA-OAEP" => Some(&OAEP_SHA1_MGF1SHA1),
        "RSA-OAEP-256" => Some(&OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

/// An accepted content encryption (RFC 7518 5.2, 5.3).
#[derive(Clone, Copy)]
enum Enc {
    /// AES-CBC + HMAC-SHA2: the first `half` of the key is the MAC key, the second the AES
    /// key; the tag is the first `half` bytes of the HMAC.
    CbcHmac {
        aes: &'static cipher::Algorithm,
        mac: hmac::Algorithm,
        half: usize,
    },
    Gcm {
        aead: &'static aead::Algorithm,
        key_len: usize,
    },
}

impl Enc {
    fn from_name(name: &str) -> Option<Enc> {
        let cbc = |aes, mac, half| Enc::CbcHmac { aes, mac, half };
        let gcm = |aead, key_len| Enc::Gcm { aead, key_len };
        Some(match name {
            "A128CBC-HS256" => cbc(&cipher::AES_128, hmac::HMAC_SHA256, 16),
            "A192CBC-HS384" => cbc(&cipher::AES_192, hmac::HMAC_SHA384, 24),
            "A256CBC-HS512" => cbc(&cipher::AES_256, hmac::HMAC_SHA512, 32),
            "A128GCM" => gcm(&aead::AES_128_GCM, 16),
            "A192GCM" => gcm(&aead::AES_192_GCM, 24),
            "A256GCM" => gcm(&aead::AES_256_GCM, 32),
            _ => return None,
        })
    }

    fn key_len(self) -> usize {
        match self {
            Enc::CbcHmac { half, .. } => 2 * half,
            Enc::Gcm { key_len, .. } => key_len,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Enc::CbcHmac { .. } => 16,
            Enc::Gcm { .. } => 12,
        }
    }

    fn tag_len(self) -> usize {
        match self {
            Enc::CbcHmac { half, .. } => half,
            Enc::Gcm { .. } => 16,
        }
    }

    /// Decrypt and authenticate `ciphertext` with the content key `cek`. Every failure is
    /// [`JweError::Decrypt`].
    fn open(
        self,
        cek: &[u8],
        aad: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<Vec<u8>, JweError> {
        let failed = |_| JweError::Decrypt;
        match self {
            Enc::CbcHmac { aes, mac, half } => {
                let (mac_key, aes_key) = cek.split_at_checked(half).ok_or(JweError::Decrypt)?;
                let full = cbc_hmac(mac, mac_key, aad, iv, ciphertext);
                let expected = full.as_ref().get(..half).ok_or(JweError::Decrypt)?;
                // In constant time, and before a single block is decrypted: whatever the
                // padding of a forged ciphertext, it is never looked at.
                constant_time::verify_slices_are_equal(expected, tag).map_err(failed)?;
                let iv: [u8; 16] = iv.try_into().map_err(|_| JweError::Decrypt)?;
                let key = UnboundCipherKey::new(aes, aes_key)
                    .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
                    .map_err(failed)?;
                let mut buffer = ciphertext.to_vec();
                let len = key
                    .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(failed)?
                    .len();
                buffer.truncate(len);
                Ok(buffer)
            }
            Enc::Gcm { aead, .. } => {
                let key = UnboundKey::new(aead, cek).map_err(failed)?;
                let nonce = Nonce::try_assume_unique_for_key(iv).map_err(failed)?;
                let mut buffer = Vec::with_capacity(ciphertext.len() + tag.len());
                buffer.extend_from_slice(ciphertext);
                buffer.extend_from_slice(tag);
                let len = LessSafeKey::new(key)
                    .open_in_place(nonce, Aad::from(aad), &mut buffer)
                    .map_err(failed)?
                    .len();
                buffer.truncate(len);
                Ok(buffer)
            }
        }
    }

    /// Encrypt `plaintext` with `cek` and a fresh IV.
    fn seal(self, cek: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, String> {
        let crypto = |_| "the crypto library failed".to_string();
        let mut iv = vec![0u8; self.iv_len()];
        SystemRandom::new().fill(&mut iv).map_err(crypto)?;
        let mut buffer = plaintext.to_vec();
        match self {
            Enc::CbcHmac { aes, mac, half } => {
                let (mac_key, aes_key) = cek.split_at_checked(half).ok_or("short key")?;
                let block: [u8; 16] = iv.as_slice().try_into().map_err(|_| "IV length")?;
                UnboundCipherKey::new(aes, aes_key)
                    .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
                    .and_then(|key| {
                        key.less_safe_encrypt(
                            &mut buffer,
                            EncryptionContext::Iv128(FixedLength::from(block)),
                        )
                    })
                    .map_err(crypto)?;
                let full = cbc_hmac(mac, mac_key, aad, &iv, &buffer);
                let tag = full.as_ref().get(..half).ok_or("short HMAC")?.to_vec();
                Ok(Sealed {
                    iv,
                    ciphertext: buffer,
                    tag,
                })
            }
            Enc::Gcm { aead, .. } => {
                let key = UnboundKey::new(aead, cek).map_err(crypto)?;
                let nonce = Nonce::try_assume_unique_for_key(&iv).map_err(crypto)?;
                let tag = LessSafeKey::new(key)
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buffer)
                    .map_err(crypto)?;
                Ok(Sealed {
                    iv,
                    ciphertext: buffer,
                    tag: tag.as_ref().to_vec(),
                })
            }
        }
    }
}

/// What [`Enc::seal`] makes: the three segments after the encrypted key.
struct Sealed {
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

/// RFC 7518 5.2.2.1: HMAC over AAD || IV || ciphertext || AL, AL being the AAD's length in
/// bits as a 64-bit big-endian number.
fn cbc_hmac(
    mac: hmac::Algorithm,
    mac_key: &[u8],
    aad: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> hmac::Tag {
    let key = hmac::Key::new(mac, mac_key);
    let mut context = hmac::Context::with_key(&key);
    context.update(aad);
    context.update(iv);
    context.update(ciphertext);
    let bits = u64::try_from(aad.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(8);
    context.update(&bits.to_be_bytes());
    context.sign()
}

/// `len` random bytes.
fn random(len: usize) -> Result<Vec<u8>, JweError> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| JweError::Decrypt)?;
    Ok(bytes)
}

/// A compact JWE whose header is acceptable and whose segments have the right shape for its
/// `enc`; nothing in it has been checked cryptographically yet.
struct Parsed<'t> {
    /// The protected header exactly as sent (base64url): the AAD.
    aad: &'t [u8],
    kid: Option<String>,
    oaep: &'static OaepAlgorithm,
    enc: Enc,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

/// Read a compact JWE: bounded by [`MAX_TOKEN_LEN`], no slicing, every header and segment
/// rule checked before any key is used.
fn parse(compact: &str) -> Result<Parsed<'_>, JweError> {
    if compact.len() > MAX_TOKEN_LEN {
        return Err(JweError::TooLong(compact.len()));
    }
    let mut segments = compact.split('.');
    let (Some(header_b64), Some(key_b64), Some(iv_b64), Some(ciphertext_b64), Some(tag_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JweError::Malformed("not five segments"));
    };
    let decode = |segment: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| JweError::Malformed(what))
    };
    let header_json = decode(header_b64, "header is not base64url")?;
    let header: Map<String, Value> = serde_json::from_slice(&header_json)
        .map_err(|_| JweError::Malformed("header is not a JSON object"))?;

    if header.contains_key("crit") {
        return Err(JweError::Critical);
    }
    if header.contains_key("zip") {
        return Err(JweError::Compressed);
    }
    let alg = header
        .get("alg")
        .ok_or(JweError::Malformed("header has no alg"))?;
    let oaep = alg
        .as_str()
        .and_then(oaep)
        .ok_or_else(|| JweError::UnsupportedAlg(excerpt(alg)))?;
    let enc = header
        .get("enc")
        .ok_or(JweError::Malformed("header has no enc"))?;
    let enc = enc
        .as_str()
        .and_then(Enc::from_name)
        .ok_or_else(|| JweError::UnsupportedEnc(excerpt(enc)))?;
    match header.get("cty") {
        None => {}
        Some(Value::String(cty)) if cty.eq_ignore_ascii_case("JWT") => {}
        Some(other) => return Err(JweError::ContentType(excerpt(other))),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JweError::Malformed("kid is not a string")),
    };

    let encrypted_key = decode(key_b64, "encrypted key is not base64url")?;
    if encrypted_key.is_empty() {
        return Err(JweError::Malformed("encrypted key is empty"));
    }
    let iv = decode(iv_b64, "IV is not base64url")?;
    if iv.len() != enc.iv_len() {
        return Err(JweError::Malformed("IV has the wrong length for enc"));
    }
    let ciphertext = decode(ciphertext_b64, "ciphertext is not base64url")?;
    // A JWS is never empty; CBC works on whole blocks.
    let cbc = matches!(enc, Enc::CbcHmac { .. });
    if ciphertext.is_empty() || (cbc && ciphertext.len() % 16 != 0) {
        return Err(JweError::Malformed(
            "ciphertext has the wrong length for enc",
        ));
    }
    let tag = decode(tag_b64, "tag is not base64url")?;
    if tag.len() != enc.tag_len() {
        return Err(JweError::Malformed("tag has the wrong length for enc"));
    }
    Ok(Parsed {
        aad: header_b64.as_bytes(),
        kid,
        oaep,
        enc,
        encrypted_key,
        iv,
        ciphertext,
        tag,
    })
}

/// Why a PEM file is not a JWE decryption key. The library's messages about a key are
/// generic; none repeats the key.
#[derive(Debug, thiserror::Error)]
pub enum DecryptionKeyError {
    #[error("not a PKCS#8 private key in PEM: {0}")]
    Pem(String),
    #[error("not an RSA key of 2048 bits or more: {0}")]
    NotRsa(String),
    #[error("RSA keys of fewer than 2048 bits are refused")]
    TooSmall,
    #[error("the key cannot decrypt RSA-OAEP")]
    NotOaep,
}

/// One RSA decryption key (PKCS#8, 2048 bits or more), parsed once.
pub struct DecryptionKey {
    private: OaepPrivateDecryptingKey,
    /// The public key's `n` and `e`, base64url.
    n: String,
    e: String,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecryptionKey(RSA {})", self.private.key_size_bits())
    }
}

impl DecryptionKey {
    /// Read a PKCS#8 PEM RSA private key of at least 2048 bits.
    pub fn from_pem(pem: &[u8]) -> Result<DecryptionKey, DecryptionKeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|e| DecryptionKeyError::Pem(e.to_string()))?;
        let refused = |e: aws_lc_rs::error::KeyRejected| DecryptionKeyError::NotRsa(e.to_string());
        let private = PrivateDecryptingKey::from_pkcs8(der.secret_pkcs8_der()).map_err(refused)?;
        if private.key_size_bits() < 2048 {
            return Err(DecryptionKeyError::TooSmall);
        }
        let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(refused)?;
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let private =
            OaepPrivateDecryptingKey::new(private).map_err(|_| DecryptionKeyError::NotOaep)?;
        Ok(DecryptionKey { private, n, e })
    }

    /// The public JWK: kty RSA, n, e, `kid`, use "enc", alg "RSA-OAEP".
    pub fn public_jwk(&self, kid: &str) -> Value {
        serde_json::json!({
            "kty": "RSA",
            "n": self.n,
            "e": self.e,
            "kid": kid,
            "use": "enc",
            "alg": "RSA-OAEP",
        })
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn thumbprint(&self) -> String {
        thumbprint(&format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            self.e, self.n
        ))
    }

    /// Unwrap the content key and open the content. A content key that does not decrypt, or
    /// has the wrong length, is replaced by a random one of the right length (RFC 7516 11.5),
    /// so that it fails at the tag like any other change, in about the same time.
    fn open(&self, jwe: &Parsed<'_>) -> Result<Vec<u8>, JweError> {
        let len = jwe.enc.key_len();
        let mut buffer = vec![0u8; self.private.min_output_size()];
        let cek = match self
            .private
            .decrypt(jwe.oaep, &jwe.encrypted_key, &mut buffer, None)
        {
            Ok(cek) if cek.len() == len => cek.to_vec(),
            _ => random(len)?,
        };
        jwe.enc
            .open(&cek, jwe.aad, &jwe.iv, &jwe.ciphertext, &jwe.tag)
    }
}

/// A decryption key under its kid.
struct Entry {
    kid: String,
    key: Arc<DecryptionKey>,
    public_jwk: Value,
}

/// The module's JWE decryption keys (RSA, PKCS#8 PEM), each with its kid.
#[derive(Default)]
pub struct DecryptionKeys {
    keys: Vec<Entry>,
    by_kid: HashMap<String, usize>,
}

impl fmt::Debug for DecryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("DecryptionKeys")
            .field("kids", &kids)
            .finish()
    }
}

impl DecryptionKeys {
    /// `keys`: (PEM bytes, kid). An empty list is allowed (then every JWE is undecryptable).
    /// RSA keys of at least 2048 bits only; kids must be non-empty and distinct.
    pub fn from_pems(keys: &[(Vec<u8>, String)]) -> Result<DecryptionKeys, String> {
        let mut loaded = DecryptionKeys::default();
        for (i, (pem, kid)) in keys.iter().enumerate() {
            let which = loaded.admit(i, kid)?;
            let key = DecryptionKey::from_pem(pem).map_err(|e| format!("{which}: {e}"))?;
            loaded.push(kid, Arc::new(key));
        }
        Ok(loaded)
    }

    /// Keys already parsed (at config load), each with its kid; kids must be non-empty and
    /// distinct.
    pub fn new(
        keys: impl IntoIterator<Item = (String, Arc<DecryptionKey>)>,
    ) -> Result<DecryptionKeys, String> {
        let mut loaded = DecryptionKeys::default();
        for (i, (kid, key)) in keys.into_iter().enumerate() {
            loaded.admit(i, &kid)?;
            loaded.push(&kid, key);
        }
        Ok(loaded)
    }

    /// Check the kid of the `i`th key and claim it; the key's name for messages.
    fn admit(&mut self, i: usize, kid: &str) -> Result<String, String> {
        let which = format!("decryption key {} (kid {kid:?})", i + 1);
        if kid.is_empty() {
            return Err(format!("decryption key {}: empty kid", i + 1));
        }
        if self.by_kid.insert(kid.to_owned(), i).is_some() {
            return Err(format!("{which}: the kid is used twice"));
        }
        Ok(which)
    }

    fn push(&mut self, kid: &str, key: Arc<DecryptionKey>) {
        self.keys.push(Entry {
            kid: kid.to_owned(),
            public_jwk: key.public_jwk(kid),
            key,
        });
    }

    /// Public JWKs for publishing: kty RSA, n, e, kid, use "enc", alg "RSA-OAEP".
    pub fn public_jwks(&self) -> Vec<Value> {
        self.keys.iter().map(|k| k.public_jwk.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Decrypt a compact JWE and return the inner compact JWS. A header `kid` selects the one
    /// key tried; without one (as the GIDS test portal and the Koppeltaal PoC portal send)
    /// every key is tried in configured order. `alg` RSA-OAEP or RSA-OAEP-256; `enc`
    /// A128CBC-HS256, A192CBC-HS384, A256CBC-HS512, A128GCM, A192GCM or A256GCM; no `zip`,
    /// no `crit`; `cty`, when present, is JWT (any case).
    pub fn decrypt(&self, compact: &str) -> Result<String, JweError> {
        let plaintext = self.open(compact)?;
        let jws = String::from_utf8(plaintext).map_err(|_| JweError::NotJws)?;
        if jws.split('.').count() != 3 {
            return Err(JweError::NotJws);
        }
        Ok(jws)
    }

    /// The decrypted content, whatever it is.
    fn open(&self, compact: &str) -> Result<Vec<u8>, JweError> {
        let jwe = parse(compact)?;
        match &jwe.kid {
            Some(kid) => {
                let key = self
                    .by_kid
                    .get(kid)
                    .and_then(|&i| self.keys.get(i))
                    .ok_or_else(|| JweError::UnknownKid(excerpt(&Value::String(kid.clone()))))?;
                key.key.open(&jwe)
            }
            None => self
                .keys
                .iter()
                .find_map(|entry| entry.key.open(&jwe).ok())
                .ok_or(JweError::Decrypt),
        }
    }
}

/// Whether a token has the five-segment JWE shape (four dots).
pub fn is_jwe(token: &str) -> bool {
    // `matches` finds the dots with memchr; a byte-by-byte count cost a quarter of a
    // microsecond on every launch token.
    token.matches('.').count() == 4
}

/// For tests and the demo: encrypt `inner_jws` to the RSA public JWK `public_jwk` (as
/// published by [`DecryptionKeys::public_jwks`]; its `alg` and `kid` are ignored) with
/// header `kid`, `alg` (RSA-OAEP or RSA-OAEP-256), `enc` and `cty: JWT`.
pub fn encrypt_for(
    public_jwk: &Value,
    kid: &str,
    alg: &str,
    enc: &str,
    inner_jws: &str,
) -> Result<String, String> {
    let mut header = Map::new();
    header.insert("alg".into(), Value::from(alg));
    header.insert("enc".into(), Value::from(enc));
    header.insert("cty".into(), Value::from("JWT"));
    header.insert("kid".into(), Value::from(kid));
    encrypt_with_header(public_jwk, &header, inner_jws.as_bytes())
}

/// For tests: encrypt `payload` to `public_jwk` under exactly `header` (its `alg` and `enc`
/// choose the algorithms; nothing is added, so a header without `kid` stays without).
pub fn encrypt_with_header(
    public_jwk: &Value,
    header: &Map<String, Value>,
    payload: &[u8],
) -> Result<String, String> {
    let field = |name: &str| {
        public_jwk[name]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or_else(|| format!("the JWK has no base64url {name}"))
    };
    if public_jwk["kty"] != "RSA" {
        return Err("the JWK is not an RSA key".into());
    }
    let public = PublicEncryptingKey::from_der(&rsa_spki(&field("n")?, &field("e")?))
        .map_err(|e| format!("the JWK is not a usable RSA public key: {e}"))?;
    let public = OaepPublicEncryptingKey::new(public).map_err(|e| e.to_string())?;
    let text = |name: &str| header.get(name).and_then(Value::as_str).unwrap_or_default();
    let alg = text("alg");
    let oaep = oaep(alg).ok_or_else(|| format!("alg {alg} is not RSA-OAEP or RSA-OAEP-256"))?;
    let enc_name = text("enc");
    let enc = Enc::from_name(enc_name).ok_or_else(|| format!("enc {enc_name} is not supported"))?;

    let cek = random(enc.key_len()).map_err(|e| e.to_string())?;
    let mut encrypted_key = vec![0u8; public.ciphertext_size()];
    let encrypted_key = public
        .encrypt(oaep, &cek, &mut encrypted_key, None)
        .map_err(|e| e.to_string())?;
    let header_json = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let header_b64 = URL_SAFE_NO_PAD.encode(header_json);
    let sealed = enc.seal(&cek, header_b64.as_bytes(), payload)?;
    Ok([
        header_b64,
        URL_SAFE_NO_PAD.encode(encrypted_key),
        URL_SAFE_NO_PAD.encode(sealed.iv),
        URL_SAFE_NO_PAD.encode(sealed.ciphertext),
        URL_SAFE_NO_PAD.encode(sealed.tag),
    ]
    .join("."))
}

/// DER of an RSA SubjectPublicKeyInfo from a JWK's `n` and `e`: the form aws-lc-rs reads a
/// public encryption key from.
fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            let len = body.len().to_be_bytes();
            let significant: Vec<u8> = len.iter().copied().skip_while(|&b| b == 0).collect();
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(&significant);
        }
        out.extend_from_slice(body);
        out
    }
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut body: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
        if body.first().is_none_or(|&b| b & 0x80 != 0) {
            body.insert(0, 0);
        }
        tlv(0x02, &body)
    }
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }.
    const RSA_ENCRYPTION: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let rsa_public_key = tlv(0x30, &[integer(n), integer(e)].concat());
    let bit_string = tlv(0x03, &[&[0u8][..], &rsa_public_key].concat());
    tlv(0x30, &[&RSA_ENCRYPTION[..], &bit_string].concat())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
