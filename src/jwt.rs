//! HS256 JSON Web Tokens as the Engine API uses them: the shared secret, verification of a beacon
//! node's `Authorization` header, and signing of tokens for upstream execution clients and proxies.
//!
//! The rules come from execution-apis `src/engine/authentication.md`: HS256 is the one algorithm
//! (`none` MUST be rejected), the secret is a hex-encoded 256-bit key read from a file, the `iat`
//! claim is required and accepted within ±60 s of now, `id` and `clv` are optional, and claims
//! that are not recognised are ignored. The encoding is deliberately strict: base64url without
//! padding, exactly three segments, an integer `iat`, no member named twice. Everything is pure: the caller reads the
//! clock and passes `now_unix_secs`. The module does not log, and nothing it returns or formats
//! contains the secret or a token, so its errors are safe to log. It does no I/O other than
//! [`Secret::load`], and it does not decide what an HTTP answer looks like (that is `401` with a
//! JSON-RPC error, built by the caller).

use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// Largest accepted distance between a token's `iat` and now, as the Engine API spec requires.
pub const MAX_IAT_DRIFT_SECS: u64 = 60;

/// Longest token (the text after `Bearer `) that is decoded at all.
///
/// A beacon node's token is about 120 bytes (`{"iat":…}` only); with `id`, `clv` and a few more
/// claims it stays under 400. 2 KiB leaves five times that for clients we have not seen, while it
/// bounds the base64 decoding, JSON parsing and hashing an unauthenticated peer can make us do,
/// and lets both decoded segments live in stack buffers.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// Longest `id` claim that is kept as a beacon node's identity.
///
/// The identity appears in every log line and metric label about that node; 64 bytes holds any
/// host name, container name or UUID an operator would choose.
pub const MAX_ID_BYTES: usize = 64;

/// Largest JWT secret file that is read.
///
/// A secret is 64 hex characters, with an optional `0x` and a newline; anything near 4 KiB is a
/// wrong path (a binary, `/dev/zero`), and reading it whole would only waste memory at startup.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// The shared HS256 key: 32 bytes, never printed.
#[derive(Clone)]
pub struct Secret([u8; SECRET_BYTES]);

impl Secret {
    /// Parses 64 hex characters, optionally prefixed with `0x`, ignoring surrounding whitespace.
    ///
    /// Only a lower-case `0x` prefix is accepted, as geth and Lighthouse do; upper- and lower-case
    /// hex digits are both accepted.
    pub fn from_hex(text: &str) -> Result<Secret, SecretError> {
        let trimmed = text.trim();
        let hex = trimmed.strip_prefix("0x").unwrap_or(trimmed);
        // Checking the characters first makes `hex_chars` an honest count of hex digits.
        if !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(SecretError::NotHex);
        }
        if hex.len() != SECRET_HEX_CHARS {
            return Err(SecretError::WrongLength {
                hex_chars: hex.len(),
            });
        }
        let mut bytes = [0u8; SECRET_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            if let [high, low] = *pair {
                *byte = (hex_digit_value(high) << 4) | hex_digit_value(low);
            }
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret file (as written by every EL and BN: `jwt.hex`) and parses it.
    pub fn load(path: &Path) -> Result<Secret, SecretFileError> {
        let file = File::open(path).map_err(|error| SecretFileError::Io(error.kind()))?;
        let mut content = Vec::new();
        file.take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_end(&mut content)
            .map_err(|error| SecretFileError::Io(error.kind()))?;
        if content.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(SecretFileError::Io(io::ErrorKind::FileTooLarge));
        }
        let text = std::str::from_utf8(&content)
            .map_err(|_| SecretFileError::Secret(SecretError::NotHex))?;
        Secret::from_hex(text).map_err(SecretFileError::Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a text is not a JWT secret; never contains the text itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// A character other than a hex digit (after trimming and an optional `0x`).
    NotHex,
    /// Hex digits only, but not 64 of them.
    WrongLength { hex_chars: usize },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::NotHex => f.write_str(
                "JWT secret is not hex: expected 64 hex characters (32 bytes), optionally prefixed with 0x",
            ),
            SecretError::WrongLength { hex_chars } => write!(
                f,
                "JWT secret has {hex_chars} hex characters, expected 64 (32 bytes)"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// Why a secret file could not be used; names the problem, never the file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFileError {
    /// The file could not be opened or read; `FileTooLarge` above [`MAX_SECRET_FILE_BYTES`].
    Io(io::ErrorKind),
    /// The file was read but does not hold a secret.
    Secret(SecretError),
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFileError::Io(io::ErrorKind::FileTooLarge) => write!(
                f,
                "JWT secret file is larger than {MAX_SECRET_FILE_BYTES} bytes"
            ),
            SecretFileError::Io(kind) => write!(f, "cannot read JWT secret file: {kind}"),
            SecretFileError::Secret(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for SecretFileError {}

/// The claims of a verified token that the proxy uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Issued-at, Unix seconds.
    pub iat: u64,
    /// The `id` claim, kept only when it is a safe label (see [`verify`]).
    pub id: Option<Box<str>>,
}

/// Why an `Authorization` header was refused; short and safe to log (no token, no secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No `Authorization` header.
    Missing,
    /// The scheme is not `Bearer`.
    NotBearer,
    /// Not three base64url segments of JSON objects, too long, or a forbidden header field.
    Malformed,
    /// The header or the claims name a member twice (`iat` twice): parsers disagree on which
    /// one counts, so the token is ambiguous.
    RepeatedMember,
    /// The header's `alg` is missing or is not exactly `HS256`.
    UnsupportedAlg,
    /// The signature was not made with this secret over this header and payload.
    BadSignature,
    /// The payload has no `iat`, or it is not a non-negative integer.
    MissingIat,
    /// `iat` is more than [`MAX_IAT_DRIFT_SECS`] away from now.
    Stale { iat: u64, now: u64 },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Missing => f.write_str("no Authorization header"),
            VerifyError::NotBearer => f.write_str("Authorization is not a Bearer token"),
            VerifyError::Malformed => f.write_str("malformed JWT"),
            VerifyError::RepeatedMember => f.write_str("JWT names a member twice"),
            VerifyError::UnsupportedAlg => f.write_str("JWT alg is not HS256"),
            VerifyError::BadSignature => f.write_str("JWT signature does not match the secret"),
            VerifyError::MissingIat => f.write_str("JWT has no integer iat claim"),
            VerifyError::Stale { iat, now } => write!(
                f,
                "JWT iat {iat} is more than {MAX_IAT_DRIFT_SECS} s from now ({now})"
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks an `Authorization` header value: `Bearer <HS256 JWT>` signed with `secret`, fresh at
/// `now_unix_secs`.
///
/// The scheme is case-insensitive and may be followed by several spaces. The header must be a
/// JSON object with `alg` exactly `"HS256"`; `typ` is not checked, and `crit` is refused because
/// no extension is understood (RFC 7515 §4.1.11). Segments are base64url without padding and with
/// zero trailing bits. The signature is checked (in constant time, by `hmac`) before the payload
/// is parsed, so only holders of the secret reach the JSON parser with a payload. `iat` must be a
/// JSON integer in `0..=u64::MAX`: strings, negatives and numbers with a fraction or exponent are
/// refused, which RFC 7519 would allow but no consensus client sends. `id` is kept when
/// [`is_valid_id`] accepts it; any other `id` is dropped and the caller falls back to another
/// identity.
pub fn verify(
    authorization: Option<&str>,
    secret: &Secret,
    now_unix_secs: u64,
) -> Result<Claims, VerifyError> {
    let value = authorization.ok_or(VerifyError::Missing)?;
    let token = bearer_token(value)?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::Malformed);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(VerifyError::Malformed);
    };
    check_header(header_b64)?;
    check_signature(header_b64, payload_b64, signature_b64, secret)?;
    let claims = parse_claims(payload_b64)?;
    if claims.iat.abs_diff(now_unix_secs) > MAX_IAT_DRIFT_SECS {
        return Err(VerifyError::Stale {
            iat: claims.iat,
            now: now_unix_secs,
        });
    }
    Ok(claims)
}

/// Whether `id` is kept as an `id` claim: 1..=[`MAX_ID_BYTES`] printable ASCII characters other
/// than `"` and `\`, so it can go into logs and metric labels without escaping.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
}

/// Makes `Authorization` values for one secret, re-signing only when the second changes.
pub struct Signer {
    /// Keyed once; cloned for each token so the key's pads are not derived again.
    mac: HmacSha256,
    /// The `id` claim as a JSON string literal, escaped once at construction.
    id_json: Option<Box<str>>,
    /// Scratch for the payload JSON, kept to avoid an allocation per token.
    payload: String,
    /// The current `Bearer <token>` value.
    bearer: String,
    /// The `iat` of `bearer`; `None` before the first token.
    signed_at_unix_secs: Option<u64>,
}

impl Signer {
    /// A signer whose tokens carry `{"iat":<now>}` only, as beacon nodes send.
    pub fn new(secret: Secret) -> Signer {
        Signer::build(&secret, None)
    }

    /// A signer whose tokens also carry an `id` claim, so a downstream proxy can tell us apart.
    ///
    /// An id that [`is_valid_id`] refuses is left out rather than sent: [`verify`] would drop it,
    /// and a long one could push the token past [`MAX_TOKEN_BYTES`]. Validate it at startup.
    pub fn with_id(secret: Secret, id: &str) -> Signer {
        let id_json = is_valid_id(id).then(|| Value::from(id).to_string().into_boxed_str());
        Signer::build(&secret, id_json)
    }

    /// The `Authorization` value (`Bearer <token>`) with `iat` = `now_unix_secs`.
    ///
    /// The token is cached: calls within the same second return it without hashing again.
    pub fn bearer(&mut self, now_unix_secs: u64) -> &str {
        if self.signed_at_unix_secs != Some(now_unix_secs) {
            self.sign(now_unix_secs);
        }
        &self.bearer
    }

    fn build(secret: &Secret, id_json: Option<Box<str>>) -> Signer {
        Signer {
            mac: keyed_mac(secret),
            id_json,
            payload: String::new(),
            bearer: String::new(),
            signed_at_unix_secs: None,
        }
    }

    fn sign(&mut self, now_unix_secs: u64) {
        self.payload.clear();
        write!(self.payload, "{{\"iat\":{now_unix_secs}").expect("writing to a String cannot fail");
        if let Some(id_json) = &self.id_json {
            self.payload.push_str(",\"id\":");
            self.payload.push_str(id_json);
        }
        self.payload.push('}');

        self.bearer.clear();
        self.bearer.push_str(BEARER_PREFIX);
        self.bearer.push_str(HEADER_B64);
        self.bearer.push('.');
        URL_SAFE_NO_PAD.encode_string(&self.payload, &mut self.bearer);
        let mut mac = self.mac.clone();
        mac.update(&self.bearer.as_bytes()[BEARER_PREFIX.len()..]);
        let tag = mac.finalize().into_bytes();
        self.bearer.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_slice(), &mut self.bearer);
        self.signed_at_unix_secs = Some(now_unix_secs);
    }
}

impl fmt::Debug for Signer {
    // The key and the current token (replayable for a minute) are left out on purpose.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("id", &self.id_json)
            .field("signed_at_unix_secs", &self.signed_at_unix_secs)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

const SECRET_BYTES: usize = 32;
const SECRET_HEX_CHARS: usize = 2 * SECRET_BYTES;
const SIGNATURE_BYTES: usize = 32;
/// 32 bytes in unpadded base64: ⌈32 × 4 / 3⌉.
const SIGNATURE_B64_CHARS: usize = 43;
/// Room for any segment of a token within [`MAX_TOKEN_BYTES`] once decoded.
const MAX_DECODED_BYTES: usize = MAX_TOKEN_BYTES.div_ceil(4) * 3;
const BEARER_PREFIX: &str = "Bearer ";
/// base64url of `{"alg":"HS256","typ":"JWT"}`, the header we sign with and most clients send.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The token after the `Bearer` scheme, or why there is none.
fn bearer_token(value: &str) -> Result<&str, VerifyError> {
    // Header values may carry optional whitespace around them (RFC 9110 §5.5).
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(VerifyError::NotBearer);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(VerifyError::Malformed);
    }
    Ok(token)
}

fn check_header(header_b64: &str) -> Result<(), VerifyError> {
    // Our own header (and Lodestar's) skips the JSON parse; the bytes are the same either way.
    if header_b64 == HEADER_B64 {
        return Ok(());
    }
    let mut buf = [0u8; MAX_DECODED_BYTES];
    let header = decode_json_object(header_b64, &mut buf)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        _ => return Err(VerifyError::UnsupportedAlg),
    }
    if header.contains_key("crit") {
        return Err(VerifyError::Malformed);
    }
    Ok(())
}

fn check_signature(
    header_b64: &str,
    payload_b64: &str,
    signature_b64: &str,
    secret: &Secret,
) -> Result<(), VerifyError> {
    // Any other length cannot be an HS256 tag; rejecting it early reveals nothing about ours.
    if signature_b64.len() != SIGNATURE_B64_CHARS {
        return Err(VerifyError::BadSignature);
    }
    let mut tag = [0u8; SIGNATURE_BYTES];
    let tag_bytes = URL_SAFE_NO_PAD
        .decode_slice(signature_b64, &mut tag)
        .map_err(|_| VerifyError::Malformed)?;
    if tag_bytes != SIGNATURE_BYTES {
        return Err(VerifyError::BadSignature);
    }
    let mut mac = keyed_mac(secret);
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    mac.verify_slice(&tag)
        .map_err(|_| VerifyError::BadSignature)
}

fn parse_claims(payload_b64: &str) -> Result<Claims, VerifyError> {
    let mut buf = [0u8; MAX_DECODED_BYTES];
    let claims = decode_json_object(payload_b64, &mut buf)?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::MissingIat)?;
    let id = match claims.get("id") {
        Some(Value::String(id)) if is_valid_id(id) => Some(Box::from(id.as_str())),
        _ => None,
    };
    Ok(Claims { iat, id })
}

fn decode_json_object(
    segment_b64: &str,
    buf: &mut [u8; MAX_DECODED_BYTES],
) -> Result<Map<String, Value>, VerifyError> {
    let len = URL_SAFE_NO_PAD
        .decode_slice(segment_b64, buf)
        .map_err(|_| VerifyError::Malformed)?;
    let json = buf.get(..len).ok_or(VerifyError::Malformed)?;
    let map = match serde_json::from_slice(json) {
        Ok(Value::Object(map)) => map,
        _ => return Err(VerifyError::Malformed),
    };
    // serde_json keeps the last of repeated members and drops the others: a map smaller than
    // the object's member count means a name (after unescaping) appeared twice.
    if member_count(json)? != map.len() {
        return Err(VerifyError::RepeatedMember);
    }
    Ok(map)
}

/// How many members a JSON object has, repeated names included.
fn member_count(json: &[u8]) -> Result<usize, VerifyError> {
    crate::rpc::object_member_count(json).ok_or(VerifyError::Malformed)
}

fn keyed_mac(secret: &Secret) -> HmacSha256 {
    HmacSha256::new_from_slice(&secret.0).expect("HMAC accepts keys of any length")
}

/// Value of an ASCII hex digit; callers have checked `is_ascii_hexdigit`.
fn hex_digit_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of the ASCII text `secret-key-for-sync-proxy-tests.`.
    const SECRET_HEX: &str = "7365637265742d6b65792d666f722d73796e632d70726f78792d74657374732e";
    const KNOWN_IAT: u64 = 1_700_000_000;
    /// Computed with Python's `hmac`, `hashlib.sha256` and `base64.urlsafe_b64encode` (padding
    /// stripped) over header `{"alg":"HS256","typ":"JWT"}` and payload `{"iat":1700000000}`.
    const KNOWN_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDB9.mXoFvOZWlRdvrfK1_FUWlfxYAINuvsI2DzHpenzPlJY";
    /// As [`KNOWN_TOKEN`], with payload `{"iat":1700000000,"id":"bn-2"}`.
    const KNOWN_TOKEN_WITH_ID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImlkIjoiYm4tMiJ9.2eARUP7k_kVGt_bVPkDc83mHfxdisExLFaQzAet3DRw";
    const OTHER_SECRET_HEX: &str =
        "0000000000000000000000000000000000000000000000000000000000000001";

    fn secret() -> Secret {
        Secret::from_hex(SECRET_HEX).expect("test secret is valid")
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token over arbitrary header and payload text, signed with `secret`.
    fn token(header_json: &str, payload_json: &str, secret: &Secret) -> String {
        signed(
            &b64(header_json.as_bytes()),
            &b64(payload_json.as_bytes()),
            secret,
        )
    }

    /// A token whose first two segments are taken as they are (valid base64 or not) and signed.
    fn signed(header_b64: &str, payload_b64: &str, secret: &Secret) -> String {
        let mut mac = keyed_mac(secret);
        mac.update(format!("{header_b64}.{payload_b64}").as_bytes());
        let tag = b64(&mac.finalize().into_bytes());
        format!("{header_b64}.{payload_b64}.{tag}")
    }

    fn bearer_of_payload(payload_json: &str) -> String {
        format!(
            "Bearer {}",
            token(r#"{"alg":"HS256","typ":"JWT"}"#, payload_json, &secret())
        )
    }

    fn verify_at(header: &str, now: u64) -> Result<Claims, VerifyError> {
        verify(Some(header), &secret(), now)
    }

    // Secret parsing.

    #[test]
    fn secret_plain_hex_parses_to_bytes() {
        let secret = secret();
        assert_eq!(&secret.0, b"secret-key-for-sync-proxy-tests.");
    }

    #[test]
    fn secret_with_0x_prefix_parses() {
        let secret = Secret::from_hex(&format!("0x{SECRET_HEX}")).expect("valid");
        assert_eq!(&secret.0, b"secret-key-for-sync-proxy-tests.");
    }

    #[test]
    fn secret_with_surrounding_whitespace_and_newline_parses() {
        for text in [
            format!("{SECRET_HEX}\n"),
            format!("  0x{SECRET_HEX}\r\n"),
            format!("\t{SECRET_HEX} \n\n"),
        ] {
            let secret = Secret::from_hex(&text).expect("valid");
            assert_eq!(&secret.0, b"secret-key-for-sync-proxy-tests.");
        }
    }

    #[test]
    fn secret_upper_case_hex_parses() {
        let secret = Secret::from_hex(&SECRET_HEX.to_ascii_uppercase()).expect("valid");
        assert_eq!(&secret.0, b"secret-key-for-sync-proxy-tests.");
    }

    #[test]
    fn secret_63_or_65_chars_is_wrong_length() {
        assert_eq!(
            Secret::from_hex(&SECRET_HEX[..63]).map(|_| ()),
            Err(SecretError::WrongLength { hex_chars: 63 })
        );
        assert_eq!(
            Secret::from_hex(&format!("0x{SECRET_HEX}0")).map(|_| ()),
            Err(SecretError::WrongLength { hex_chars: 65 })
        );
        assert_eq!(
            Secret::from_hex(&format!("{SECRET_HEX}{SECRET_HEX}")).map(|_| ()),
            Err(SecretError::WrongLength { hex_chars: 128 })
        );
    }

    #[test]
    fn secret_empty_is_wrong_length() {
        for text in ["", "\n", "0x", " 0x \n"] {
            assert_eq!(
                Secret::from_hex(text).map(|_| ()),
                Err(SecretError::WrongLength { hex_chars: 0 }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn secret_non_hex_is_rejected() {
        let inner_space = format!("{} {}", &SECRET_HEX[..32], &SECRET_HEX[32..]);
        let letter_g = format!("{}g", &SECRET_HEX[..63]);
        let upper_prefix = format!("0X{SECRET_HEX}");
        let double_prefix = format!("0x0x{}", &SECRET_HEX[..62]);
        let non_ascii = format!("{}é", &SECRET_HEX[..62]);
        let nul = format!("{}\0", &SECRET_HEX[..63]);
        for text in [
            inner_space,
            letter_g,
            upper_prefix,
            double_prefix,
            non_ascii,
            nul,
        ] {
            assert_eq!(
                Secret::from_hex(&text).map(|_| ()),
                Err(SecretError::NotHex),
                "{text:?}"
            );
        }
    }

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, content: &[u8]) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("sync-proxy-jwt-{}-{name}", std::process::id()));
            std::fs::write(&path, content).expect("temp dir is writable");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn secret_file_with_newline_loads() {
        let file = TempFile::new("ok", format!("0x{SECRET_HEX}\n").as_bytes());
        let secret = Secret::load(&file.0).expect("valid file");
        assert_eq!(&secret.0, b"secret-key-for-sync-proxy-tests.");
    }

    #[test]
    fn secret_file_missing_is_not_found() {
        let path = std::env::temp_dir().join("sync-proxy-jwt-this-file-does-not-exist");
        assert_eq!(
            Secret::load(&path).map(|_| ()),
            Err(SecretFileError::Io(io::ErrorKind::NotFound))
        );
    }

    #[test]
    fn secret_file_too_large_is_refused() {
        let mut content = format!("{SECRET_HEX}\n").into_bytes();
        content.resize(MAX_SECRET_FILE_BYTES as usize + 1, b'\n');
        let file = TempFile::new("large", &content);
        assert_eq!(
            Secret::load(&file.0).map(|_| ()),
            Err(SecretFileError::Io(io::ErrorKind::FileTooLarge))
        );
        // At the limit, trailing whitespace is still only whitespace.
        content.truncate(MAX_SECRET_FILE_BYTES as usize);
        let file = TempFile::new("at-limit", &content);
        assert!(Secret::load(&file.0).is_ok());
    }

    #[test]
    fn secret_file_not_utf8_is_not_hex() {
        let file = TempFile::new("binary", &[0xff, 0xfe, 0x00, 0x01]);
        assert_eq!(
            Secret::load(&file.0).map(|_| ()),
            Err(SecretFileError::Secret(SecretError::NotHex))
        );
    }

    #[test]
    fn secret_and_errors_formatted_never_show_secret() {
        let secret = secret();
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        let mut signer = Signer::with_id(secret.clone(), "bn-1");
        let bearer = signer.bearer(KNOWN_IAT).to_owned();
        let token = bearer.trim_start_matches(BEARER_PREFIX);
        let signature = token.rsplit('.').next().expect("three parts");
        let mut texts = vec![format!("{signer:?}")];
        for error in [
            Secret::from_hex(&format!("{SECRET_HEX}0")).map(|_| ()),
            Secret::from_hex(&format!("{SECRET_HEX}x")).map(|_| ()),
        ] {
            let error = error.expect_err("invalid secret");
            texts.push(error.to_string());
            texts.push(format!("{error:?}"));
            texts.push(SecretFileError::Secret(error).to_string());
        }
        texts.push(SecretFileError::Io(io::ErrorKind::PermissionDenied).to_string());
        texts.push(SecretFileError::Io(io::ErrorKind::FileTooLarge).to_string());
        for error in [
            VerifyError::Missing,
            VerifyError::NotBearer,
            VerifyError::Malformed,
            VerifyError::RepeatedMember,
            VerifyError::UnsupportedAlg,
            VerifyError::BadSignature,
            VerifyError::MissingIat,
            VerifyError::Stale { iat: 1, now: 100 },
        ] {
            texts.push(error.to_string());
            texts.push(format!("{error:?}"));
        }
        let secret_text = String::from_utf8_lossy(&secret.0).into_owned();
        for text in &texts {
            assert!(!text.is_empty());
            assert!(
                !text.to_ascii_lowercase().contains(&SECRET_HEX[..16]),
                "{text}"
            );
            assert!(!text.contains(&secret_text), "{text}");
            assert!(!text.contains(token), "{text}");
            assert!(!text.contains(signature), "{text}");
        }
    }

    // Verification.

    #[test]
    fn known_vector_valid_at_its_iat_is_accepted() {
        let header = format!("Bearer {KNOWN_TOKEN}");
        assert_eq!(
            verify_at(&header, KNOWN_IAT),
            Ok(Claims {
                iat: KNOWN_IAT,
                id: None
            })
        );
    }

    #[test]
    fn known_vector_with_id_is_accepted_with_id() {
        let header = format!("Bearer {KNOWN_TOKEN_WITH_ID}");
        assert_eq!(
            verify_at(&header, KNOWN_IAT + 5),
            Ok(Claims {
                iat: KNOWN_IAT,
                id: Some("bn-2".into())
            })
        );
    }

    #[test]
    fn signer_known_vector_matches_python() {
        let mut signer = Signer::new(secret());
        assert_eq!(signer.bearer(KNOWN_IAT), format!("Bearer {KNOWN_TOKEN}"));
        let mut signer = Signer::with_id(secret(), "bn-2");
        assert_eq!(
            signer.bearer(KNOWN_IAT),
            format!("Bearer {KNOWN_TOKEN_WITH_ID}")
        );
    }

    #[test]
    fn signer_token_round_trips_through_verify() {
        for now in [0, 59, 1, KNOWN_IAT, u64::MAX] {
            let mut signer = Signer::new(secret());
            let bearer = signer.bearer(now).to_owned();
            assert_eq!(verify_at(&bearer, now), Ok(Claims { iat: now, id: None }));
        }
    }

    #[test]
    fn no_header_is_missing() {
        assert_eq!(
            verify(None, &secret(), KNOWN_IAT),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn other_scheme_is_not_bearer() {
        for header in [
            format!("Basic {KNOWN_TOKEN}"),
            format!("Token {KNOWN_TOKEN}"),
            format!("Bearer:{KNOWN_TOKEN}"),
            format!("Bearer\t{KNOWN_TOKEN}"),
            format!("Bearers {KNOWN_TOKEN}"),
            KNOWN_TOKEN.to_owned(),
            String::new(),
            "   ".to_owned(),
        ] {
            assert_eq!(
                verify_at(&header, KNOWN_IAT),
                Err(VerifyError::NotBearer),
                "{header:?}"
            );
        }
    }

    #[test]
    fn bearer_without_token_is_malformed() {
        for header in ["Bearer", "Bearer ", "bearer    "] {
            assert_eq!(
                verify_at(header, KNOWN_IAT),
                Err(VerifyError::Malformed),
                "{header:?}"
            );
        }
    }

    #[test]
    fn scheme_any_case_and_extra_spaces_are_accepted() {
        for header in [
            format!("bearer {KNOWN_TOKEN}"),
            format!("BEARER {KNOWN_TOKEN}"),
            format!("BeArEr   {KNOWN_TOKEN}"),
            format!("  Bearer {KNOWN_TOKEN} \t"),
        ] {
            assert!(verify_at(&header, KNOWN_IAT).is_ok(), "{header:?}");
        }
    }

    #[test]
    fn two_or_four_segments_are_malformed() {
        let mut parts = KNOWN_TOKEN.split('.');
        let (header, payload, signature) = (
            parts.next().expect("three parts"),
            parts.next().expect("three parts"),
            parts.next().expect("three parts"),
        );
        for token in [
            format!("{header}.{payload}"),
            format!("{header}.{payload}."),
            format!("{header}.{payload}.{signature}.{signature}"),
            format!("{KNOWN_TOKEN}."),
            format!(".{KNOWN_TOKEN}"),
            "..".to_owned(),
            "...".to_owned(),
        ] {
            let result = verify_at(&format!("Bearer {token}"), KNOWN_IAT);
            assert!(
                matches!(
                    result,
                    Err(VerifyError::Malformed | VerifyError::BadSignature)
                ),
                "{token:?}: {result:?}"
            );
        }
        // Without a third segment nothing is even hashed.
        assert_eq!(
            verify_at(&format!("Bearer {header}.{payload}"), KNOWN_IAT),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify_at(
                &format!("Bearer {header}.{payload}.{signature}.x"),
                KNOWN_IAT
            ),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn bad_base64_in_any_segment_is_malformed() {
        // A header that is not ours goes through the decoder, not the fast path.
        let header = b64(br#"{"typ":"JWT","alg":"HS256"}"#);
        let payload = b64(br#"{"iat":1700000000}"#);
        let good = signed(&header, &payload, &secret());
        assert!(verify_at(&format!("Bearer {good}"), KNOWN_IAT).is_ok());
        let signature = good.rsplit('.').next().expect("three parts");
        // '+' and '/' belong to the standard alphabet, not to base64url.
        let plus_in_header = format!("{}+{}", &header[..4], &header[5..]);
        let plus_in_payload = format!("{}+{}", &payload[..4], &payload[5..]);
        let slash_in_payload = format!("{}/{}", &payload[..4], &payload[5..]);
        let bad_tokens = [
            // The header is decoded before the signature is checked.
            format!("{header}*.{payload}.{signature}"),
            format!("{plus_in_header}.{payload}.{signature}"),
            format!("{header}é.{payload}.{signature}"),
            // One leftover symbol cannot encode a byte.
            format!("{header}A.{payload}.{signature}"),
            // The payload is decoded after the signature is checked, so sign the bad text.
            signed(&header, &format!("{payload}!"), &secret()),
            signed(&header, &plus_in_payload, &secret()),
            signed(&header, &slash_in_payload, &secret()),
            signed(&header, &format!("{payload}A"), &secret()),
            signed(&header, &format!("{payload} "), &secret()),
            // The signature's own alphabet.
            format!("{header}.{payload}.{}+", &signature[..42]),
            format!("{header}.{payload}.{}/", &signature[..42]),
        ];
        for token in bad_tokens {
            assert_eq!(
                verify_at(&format!("Bearer {token}"), KNOWN_IAT),
                Err(VerifyError::Malformed),
                "{token:?}"
            );
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_malformed() {
        // The signature's last symbol carries 2 unused bits, which must be zero.
        assert!(KNOWN_TOKEN.ends_with('Y'));
        let prefix = &KNOWN_TOKEN[..KNOWN_TOKEN.len() - 1];
        assert_eq!(
            verify_at(&format!("Bearer {prefix}Z"), KNOWN_IAT),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn padding_in_any_segment_is_rejected() {
        // Both texts are 3k + 1 bytes long, so their padded base64 ends in `==`.
        let header_json = r#"{"alg":"HS256"} "#;
        let payload_json = r#"{"iat":1700000000 }"#;
        assert_eq!((header_json.len() % 3, payload_json.len() % 3), (1, 1));
        let header = b64(header_json.as_bytes());
        let payload = b64(payload_json.as_bytes());
        assert!(
            verify_at(
                &format!("Bearer {}", signed(&header, &payload, &secret())),
                KNOWN_IAT
            )
            .is_ok()
        );
        for token in [
            signed(&format!("{header}=="), &payload, &secret()),
            signed(&header, &format!("{payload}=="), &secret()),
            signed(&header, &format!("{payload}="), &secret()),
        ] {
            assert_eq!(
                verify_at(&format!("Bearer {token}"), KNOWN_IAT),
                Err(VerifyError::Malformed),
                "{token:?}"
            );
        }
        // A padded signature is 44 characters, which no HS256 tag is.
        assert_eq!(
            verify_at(&format!("Bearer {KNOWN_TOKEN}="), KNOWN_IAT),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn alg_none_hs512_missing_or_odd_is_unsupported() {
        let payload = r#"{"iat":1700000000}"#;
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"hs256","typ":"JWT"}"#,
            r#"{"alg":"HS256 ","typ":"JWT"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{}"#,
        ] {
            // Signed correctly with our secret, so only the header can be the reason.
            let signed = token(header, payload, &secret());
            assert_eq!(
                verify_at(&format!("Bearer {signed}"), KNOWN_IAT),
                Err(VerifyError::UnsupportedAlg),
                "{header}"
            );
        }
        // The classic `alg: none` attack: no signature at all.
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(payload.as_bytes())
        );
        assert_eq!(
            verify_at(&format!("Bearer {unsigned}"), KNOWN_IAT),
            Err(VerifyError::UnsupportedAlg)
        );
    }

    #[test]
    fn header_without_typ_or_with_other_typ_is_accepted() {
        for header in [
            r#"{"alg":"HS256"}"#,
            r#"{"typ":"JWT","alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"jwt","kid":"x"}"#,
        ] {
            let signed = token(header, r#"{"iat":1700000000}"#, &secret());
            assert!(
                verify_at(&format!("Bearer {signed}"), KNOWN_IAT).is_ok(),
                "{header}"
            );
        }
    }

    #[test]
    fn header_not_object_or_with_crit_is_malformed() {
        for header in [
            r#"["alg","HS256"]"#,
            r#""HS256""#,
            r#"{"alg":"HS256""#,
            r#"{"alg":"HS256"} x"#,
            "",
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
        ] {
            let signed = token(header, r#"{"iat":1700000000}"#, &secret());
            assert_eq!(
                verify_at(&format!("Bearer {signed}"), KNOWN_IAT),
                Err(VerifyError::Malformed),
                "{header}"
            );
        }
    }

    /// Issue 11, item 8: with `iat` twice, serde_json takes the last and another parser the
    /// first; a token that means different things to different readers is refused.
    #[test]
    fn claims_or_header_with_a_repeated_member_are_refused() {
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        for payload in [
            r#"{"iat":1700000000,"iat":1}"#,
            r#"{"iat":1,"iat":1700000000}"#,
            r#"{"iat":1700000000,"i\u0061t":1700000000}"#,
            r#"{"iat":1700000000,"id":"bn-1","id":"bn-2"}"#,
            r#"{"iat":1700000000,"x":1,"x":1}"#,
        ] {
            let signed = token(hs256, payload, &secret());
            assert_eq!(
                verify_at(&format!("Bearer {signed}"), KNOWN_IAT),
                Err(VerifyError::RepeatedMember),
                "{payload}"
            );
        }
        for header in [
            r#"{"alg":"none","alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
        ] {
            let signed = token(header, r#"{"iat":1700000000}"#, &secret());
            assert_eq!(
                verify_at(&format!("Bearer {signed}"), KNOWN_IAT),
                Err(VerifyError::RepeatedMember),
                "{header}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let other = Secret::from_hex(OTHER_SECRET_HEX).expect("valid");
        assert_eq!(
            verify(Some(&format!("Bearer {KNOWN_TOKEN}")), &other, KNOWN_IAT),
            Err(VerifyError::BadSignature)
        );
        let mut signer = Signer::new(other);
        let bearer = signer.bearer(KNOWN_IAT).to_owned();
        assert_eq!(
            verify_at(&bearer, KNOWN_IAT),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let signature = KNOWN_TOKEN.rsplit('.').next().expect("three parts");
        let forged_payload = b64(br#"{"iat":1700000001}"#);
        let forged = format!("Bearer {HEADER_B64}.{forged_payload}.{signature}");
        assert_eq!(
            verify_at(&forged, KNOWN_IAT),
            Err(VerifyError::BadSignature)
        );
        // A header that differs only in encoding also changes the signed bytes.
        let header = b64(br#"{"alg":"HS256","typ":"JWT"} "#);
        let payload = KNOWN_TOKEN.split('.').nth(1).expect("three parts");
        let forged = format!("Bearer {header}.{payload}.{signature}");
        assert_eq!(
            verify_at(&forged, KNOWN_IAT),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn signature_differing_in_first_or_last_byte_is_bad_signature() {
        // `hmac`'s `verify_slice` compares in constant time; these check that it compares at all,
        // at both ends of the tag.
        let signature = KNOWN_TOKEN.rsplit('.').next().expect("three parts");
        let mut tag = URL_SAFE_NO_PAD.decode(signature).expect("valid base64");
        let unsigned = &KNOWN_TOKEN[..KNOWN_TOKEN.len() - signature.len()];
        for index in [0, 15, SIGNATURE_BYTES - 1] {
            tag[index] ^= 0x01;
            let forged = format!("Bearer {unsigned}{}", b64(&tag));
            assert_eq!(
                verify_at(&forged, KNOWN_IAT),
                Err(VerifyError::BadSignature),
                "byte {index}"
            );
            tag[index] ^= 0x01;
        }
        assert_eq!(
            verify_at(&format!("Bearer {unsigned}{}", b64(&tag)), KNOWN_IAT),
            Ok(Claims {
                iat: KNOWN_IAT,
                id: None
            })
        );
    }

    #[test]
    fn signature_of_wrong_length_is_bad_signature() {
        let signature = KNOWN_TOKEN.rsplit('.').next().expect("three parts");
        let unsigned = &KNOWN_TOKEN[..KNOWN_TOKEN.len() - signature.len()];
        let tag = URL_SAFE_NO_PAD.decode(signature).expect("valid base64");
        for forged_tag in [
            &tag[..31],
            &tag[..16],
            &[][..],
            &[tag.clone(), vec![0]].concat(),
        ] {
            let forged = format!("Bearer {unsigned}{}", b64(forged_tag));
            assert_eq!(
                verify_at(&forged, KNOWN_IAT),
                Err(VerifyError::BadSignature),
                "{} bytes",
                forged_tag.len()
            );
        }
    }

    #[test]
    fn iat_missing_string_negative_or_fractional_is_missing_iat() {
        for payload in [
            r#"{}"#,
            r#"{"id":"bn-1"}"#,
            r#"{"iat":"1700000000"}"#,
            r#"{"iat":-1}"#,
            r#"{"iat":1700000000.0}"#,
            r#"{"iat":1700000000.5}"#,
            r#"{"iat":1.7e9}"#,
            r#"{"iat":18446744073709551616}"#,
            r#"{"iat":null}"#,
            r#"{"iat":true}"#,
            r#"{"IAT":1700000000}"#,
        ] {
            assert_eq!(
                verify_at(&bearer_of_payload(payload), KNOWN_IAT),
                Err(VerifyError::MissingIat),
                "{payload}"
            );
        }
    }

    #[test]
    fn payload_not_object_is_malformed() {
        for payload in ["1700000000", r#"[1700000000]"#, "", r#"{"iat":1"#, "null"] {
            assert_eq!(
                verify_at(&bearer_of_payload(payload), KNOWN_IAT),
                Err(VerifyError::Malformed),
                "{payload}"
            );
        }
    }

    #[test]
    fn iat_within_60_seconds_is_accepted() {
        let header = format!("Bearer {KNOWN_TOKEN}");
        for now in [KNOWN_IAT - 60, KNOWN_IAT - 1, KNOWN_IAT + 1, KNOWN_IAT + 60] {
            assert!(verify_at(&header, now).is_ok(), "now {now}");
        }
    }

    #[test]
    fn iat_61_seconds_off_is_stale() {
        let header = format!("Bearer {KNOWN_TOKEN}");
        for now in [KNOWN_IAT - 61, KNOWN_IAT + 61, 0, u64::MAX] {
            assert_eq!(
                verify_at(&header, now),
                Err(VerifyError::Stale {
                    iat: KNOWN_IAT,
                    now
                }),
                "now {now}"
            );
        }
    }

    #[test]
    fn iat_at_extremes_does_not_overflow() {
        let max = bearer_of_payload(&format!(r#"{{"iat":{}}}"#, u64::MAX));
        assert!(verify_at(&max, u64::MAX - 60).is_ok());
        assert_eq!(
            verify_at(&max, 0),
            Err(VerifyError::Stale {
                iat: u64::MAX,
                now: 0
            })
        );
        let zero = bearer_of_payload(r#"{"iat":0}"#);
        assert!(verify_at(&zero, 60).is_ok());
        assert!(verify_at(&zero, 61).is_err());
    }

    #[test]
    fn id_claim_that_is_a_safe_label_is_extracted() {
        for id in ["bn-2", "lighthouse/bn.1:5052", &"x".repeat(MAX_ID_BYTES)] {
            let payload = format!(r#"{{"iat":1700000000,"id":"{id}","clv":"Lighthouse/v5"}}"#);
            assert_eq!(
                verify_at(&bearer_of_payload(&payload), KNOWN_IAT).map(|claims| claims.id),
                Ok(Some(id.into())),
                "{id}"
            );
        }
    }

    #[test]
    fn id_claim_unsafe_or_not_string_is_dropped() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        for id_json in [
            r#""""#.to_owned(),
            format!(r#""{long}""#),
            r#""bn 2""#.to_owned(),
            r#""bn\"2""#.to_owned(),
            r#""bn\\2""#.to_owned(),
            r#""bn\n2""#.to_owned(),
            r#""bné""#.to_owned(),
            "7".to_owned(),
            "null".to_owned(),
            r#"{"name":"bn-2"}"#.to_owned(),
        ] {
            let payload = format!(r#"{{"iat":1700000000,"id":{id_json}}}"#);
            assert_eq!(
                verify_at(&bearer_of_payload(&payload), KNOWN_IAT),
                Ok(Claims {
                    iat: KNOWN_IAT,
                    id: None
                }),
                "{id_json}"
            );
        }
    }

    #[test]
    fn unknown_claims_are_ignored() {
        let payload = r#"{"exp":1,"nbf":2,"clv":"Teku/v24","iat":1700000000,"nested":{"a":[1,2]}}"#;
        assert_eq!(
            verify_at(&bearer_of_payload(payload), KNOWN_IAT),
            Ok(Claims {
                iat: KNOWN_IAT,
                id: None
            })
        );
    }

    #[test]
    fn token_at_max_length_is_accepted_and_one_more_is_malformed() {
        let filler_for = |token_bytes: usize| {
            // Grow a padding claim until the token has exactly `token_bytes` bytes; base64 grows
            // in steps of 4 per 3 bytes, so try a few filler lengths and keep the exact one.
            (0..MAX_TOKEN_BYTES).find_map(|filler| {
                let payload = format!(r#"{{"iat":1700000000,"pad":"{}"}}"#, "p".repeat(filler));
                let bearer = bearer_of_payload(&payload);
                (bearer.len() - BEARER_PREFIX.len() == token_bytes).then_some(bearer)
            })
        };
        let at_max = filler_for(MAX_TOKEN_BYTES).expect("some filler hits the limit exactly");
        assert!(verify_at(&at_max, KNOWN_IAT).is_ok());
        let over = filler_for(MAX_TOKEN_BYTES + 1).expect("some filler hits the limit plus one");
        assert_eq!(verify_at(&over, KNOWN_IAT), Err(VerifyError::Malformed));
        let huge = format!("Bearer {}", "A".repeat(100_000));
        assert_eq!(verify_at(&huge, KNOWN_IAT), Err(VerifyError::Malformed));
    }

    #[test]
    fn every_truncation_of_a_valid_header_is_refused() {
        let header = format!("Bearer {KNOWN_TOKEN_WITH_ID}");
        for cut in 0..header.len() {
            assert!(
                verify_at(&header[..cut], KNOWN_IAT).is_err(),
                "cut at {cut}"
            );
        }
        assert!(verify_at(&header, KNOWN_IAT).is_ok());
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let header = format!("Bearer {KNOWN_TOKEN}");
        let start = BEARER_PREFIX.len();
        for index in start..header.len() {
            for replacement in [b'A', b'_', b'-', b'.', b'='] {
                let mut bytes = header.clone().into_bytes();
                if bytes[index] == replacement {
                    continue;
                }
                bytes[index] = replacement;
                let changed = String::from_utf8(bytes).expect("ASCII");
                assert!(
                    verify_at(&changed, KNOWN_IAT).is_err(),
                    "byte {index} to {}",
                    replacement as char
                );
            }
        }
    }

    // Signing.

    #[test]
    fn signer_same_second_reuses_token() {
        let mut signer = Signer::new(secret());
        let first = signer.bearer(KNOWN_IAT).to_owned();
        let first_ptr = signer.bearer.as_ptr();
        assert_eq!(signer.bearer(KNOWN_IAT), first);
        assert_eq!(signer.bearer.as_ptr(), first_ptr);
        assert_eq!(signer.signed_at_unix_secs, Some(KNOWN_IAT));
    }

    #[test]
    fn signer_next_second_renews_token() {
        let mut signer = Signer::new(secret());
        let first = signer.bearer(KNOWN_IAT).to_owned();
        let second = signer.bearer(KNOWN_IAT + 1).to_owned();
        assert_ne!(first, second);
        assert_eq!(signer.signed_at_unix_secs, Some(KNOWN_IAT + 1));
        assert_eq!(
            verify_at(&second, KNOWN_IAT + 1).map(|c| c.iat),
            Ok(KNOWN_IAT + 1)
        );
        // A clock stepping back also re-signs rather than reusing a token from the future.
        let back = signer.bearer(KNOWN_IAT).to_owned();
        assert_eq!(back, first);
    }

    #[test]
    fn signer_with_longest_id_and_iat_fits_the_token_limit() {
        let id = "~".repeat(MAX_ID_BYTES);
        let mut signer = Signer::with_id(secret(), &id);
        let bearer = signer.bearer(u64::MAX).to_owned();
        assert!(bearer.len() < MAX_TOKEN_BYTES / 4);
        assert_eq!(
            verify_at(&bearer, u64::MAX).map(|claims| claims.id),
            Ok(Some(id.into()))
        );
    }

    #[test]
    fn signer_with_id_round_trips_id() {
        let mut signer = Signer::with_id(secret(), "proxy-eu-1");
        let bearer = signer.bearer(KNOWN_IAT).to_owned();
        assert_eq!(
            verify_at(&bearer, KNOWN_IAT),
            Ok(Claims {
                iat: KNOWN_IAT,
                id: Some("proxy-eu-1".into())
            })
        );
    }

    #[test]
    fn signer_with_unsafe_id_makes_valid_token_without_id() {
        // Found by fuzzing: 200 NULs escape to 1200 bytes of JSON, past the token limit.
        let nuls = "\0".repeat(200);
        let long = "x".repeat(10 * MAX_TOKEN_BYTES);
        for id in ["a\"b", "a\\b", "line\nbreak", "", "é", &nuls, &long] {
            assert!(!is_valid_id(id));
            let mut signer = Signer::with_id(secret(), id);
            let bearer = signer.bearer(KNOWN_IAT).to_owned();
            assert_eq!(
                verify_at(&bearer, KNOWN_IAT),
                Ok(Claims {
                    iat: KNOWN_IAT,
                    id: None
                }),
                "{id:?}"
            );
        }
    }
}
