//! HTTP/1.1 message heads the proxy writes: answers to beacon nodes and requests to execution
//! clients.
//!
//! Heads are small and built per message; bodies are never copied here, callers write head and
//! body together with vectored writes.

use crate::http::head::Version;

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// `Content-Type` of every JSON-RPC answer the proxy builds itself.
pub const JSON: &str = "application/json";

/// Reason phrase for the statuses the proxy sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "Unknown",
    }
}

/// The head of an answer to a beacon node.
pub fn response_head(
    version: Version,
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut head, usize::from(status));
    head.push(b' ');
    head.extend_from_slice(reason(status).as_bytes());
    head.extend_from_slice(b"\r\nContent-Type: ");
    head.extend_from_slice(content_type.as_bytes());
    head.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(&mut head, content_length);
    head.extend_from_slice(b"\r\n");
    // HTTP/1.1 keeps connections open by default and HTTP/1.0 closes them, so only the
    // exception to each version's default needs saying.
    match (version, keep_alive) {
        (Version::Http11, false) => head.extend_from_slice(b"Connection: close\r\n"),
        (Version::Http10, true) => head.extend_from_slice(b"Connection: keep-alive\r\n"),
        _ => {}
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The head of a JSON-RPC request to an execution client or a chained proxy.
pub fn request_head(
    path: &str,
    host: &str,
    content_length: usize,
    authorization: Option<&str>,
    forwarded_for: Option<&str>,
    via: Option<&str>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    for part in [
        b"POST ",
        path.as_bytes(),
        b" HTTP/1.1\r\nHost: ",
        host.as_bytes(),
    ] {
        head.extend_from_slice(part);
    }
    head.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    push_decimal(&mut head, content_length);
    head.extend_from_slice(b"\r\n");
    let fields = [
        ("Authorization: ", authorization),
        ("X-Forwarded-For: ", forwarded_for),
        ("Via: ", via),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Appends `value` in decimal: a head is built per message, and `write!` costs several times
/// more than these few digits.
fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Framing, parse_request_head, parse_response_head};

    #[test]
    fn push_decimal_writes_every_digit() {
        for value in [0, 7, 10, 99, 100, 2_011_441, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    #[test]
    fn response_head_parses_back() {
        let head = response_head(Version::Http11, 502, JSON, 12, false);
        let parsed = parse_response_head(&head, 4096).unwrap().unwrap();
        assert_eq!(parsed.status, 502);
        assert_eq!(parsed.framing, Framing::Length(12));
        assert!(!parsed.keep_alive);
        assert_eq!(parsed.content_type.as_deref(), Some(JSON));
    }

    #[test]
    fn response_head_http10_keep_alive_is_explicit() {
        let head = response_head(Version::Http10, 200, JSON, 0, true);
        assert!(head.windows(22).any(|w| w == b"Connection: keep-alive"));
    }

    #[test]
    fn request_head_parses_back() {
        let head = request_head(
            "/",
            "127.0.0.1:8551",
            99,
            Some("Bearer x"),
            Some("::1"),
            Some("1.1 sync-proxy-a"),
        );
        let parsed = parse_request_head(&head, 4096).unwrap().unwrap();
        assert_eq!(parsed.framing, Framing::Length(99));
        assert_eq!(parsed.authorization.as_deref(), Some("Bearer x"));
        assert_eq!(parsed.forwarded_for.as_deref(), Some("::1"));
        assert_eq!(parsed.via.as_deref(), Some("1.1 sync-proxy-a"));
        assert!(parsed.keep_alive);
    }
}
