//! HTTP/1.x message heads: `httparse` wrappers that turn bytes into the few facts the proxy
//! acts on (framing, keep-alive, `Expect`, identity and auth headers).
//!
//! Parsing is incremental in the simplest way: the caller appends bytes and calls again until the
//! head is complete (`Ok(None)` means "need more"). Nothing here reads a socket or a body; body
//! framing is decided here and carried out by [`crate::http::body`].

use std::fmt;

/// Most headers accepted in one message head; Engine API clients send fewer than 15, and nginx
/// adds a handful, so 64 leaves room without letting a client make us scan thousands.
pub const MAX_HEADERS: usize = 64;

/// HTTP protocol version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: no keep-alive unless asked for, no chunked bodies.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// How the end of a message body is found (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: the body ends when the server closes the connection.
    UntilClose,
}

/// Request method, reduced to what the proxy distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestMethod {
    /// `GET`: health, status and metrics endpoints.
    Get,
    /// `HEAD`: like `GET` without a body.
    Head,
    /// `POST`: a JSON-RPC request.
    Post,
    /// Any other method; answered with `405`.
    Other,
}

/// The facts of a request head the proxy acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: RequestMethod,
    /// The request target, as sent (origin form, e.g. `/` or `/bn-2`).
    pub path: Box<str>,
    /// Protocol version of the request.
    pub version: Version,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue` and waits for an interim answer.
    pub expect_continue: bool,
    /// `Authorization` header value.
    pub authorization: Option<Box<str>>,
    /// `X-Forwarded-For` header value (several headers are joined with `, `).
    pub forwarded_for: Option<Box<str>>,
    /// `X-Real-IP` header value.
    pub real_ip: Option<Box<str>>,
    /// `Via` header value (several headers are joined with `, `): chained proxies' trail.
    pub via: Option<Box<str>>,
    /// Bytes of the buffer the head occupies, including the blank line.
    pub head_bytes: usize,
}

/// The facts of a response head the proxy acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Protocol version of the response.
    pub version: Version,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the server keeps the connection open after this response.
    pub keep_alive: bool,
    /// `Content-Type` header value, passed on to the beacon node.
    pub content_type: Option<Box<str>>,
    /// Bytes of the buffer the head occupies, including the blank line.
    pub head_bytes: usize,
}

impl ResponseHead {
    /// A `1xx` interim response, which precedes the real one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Why a message head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than allowed, or has more than [`MAX_HEADERS`] headers.
    TooLarge,
    /// Not HTTP/1.x syntax.
    Malformed,
    /// `Content-Length` not a number, or two different ones.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: refused to rule out request smuggling.
    AmbiguousFraming,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// An `Expect` other than `100-continue`.
    UnsupportedExpectation,
    /// A header the proxy reads is not valid text.
    NonTextHeader,
    /// Two `Authorization` headers: which one is the credential would depend on the reader.
    RepeatedAuthorization,
}

impl HeadError {
    /// The HTTP status that answers this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::UnsupportedExpectation => 417,
            HeadError::Malformed
            | HeadError::BadContentLength
            | HeadError::AmbiguousFraming
            | HeadError::NonTextHeader
            | HeadError::RepeatedAuthorization => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::TooLarge => "message head too large",
            HeadError::Malformed => "malformed HTTP message head",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::AmbiguousFraming => "both Content-Length and Transfer-Encoding",
            HeadError::UnsupportedTransferCoding => "unsupported Transfer-Encoding",
            HeadError::UnsupportedExpectation => "unsupported Expect",
            HeadError::NonTextHeader => "header value is not text",
            HeadError::RepeatedAuthorization => "more than one Authorization header",
        })
    }
}

/// Parses a request head from the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_request_head(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial(buf, max_head_bytes),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_bytes > max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let version = version(request.version)?;
    let method = match request.method {
        Some("GET") => RequestMethod::Get,
        Some("HEAD") => RequestMethod::Head,
        Some("POST") => RequestMethod::Post,
        _ => RequestMethod::Other,
    };
    let path: Box<str> = request.path.unwrap_or("/").into();
    let fields = Fields::read(request.headers)?;
    if fields.expect_other {
        return Err(HeadError::UnsupportedExpectation);
    }
    let framing = match (fields.content_length, fields.chunked) {
        (Some(_), true) => return Err(HeadError::AmbiguousFraming),
        (None, true) if version == Version::Http10 => return Err(HeadError::Malformed),
        (None, true) => Framing::Chunked,
        (Some(0) | None, false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
    };
    Ok(Some(RequestHead {
        method,
        path,
        version,
        framing,
        keep_alive: fields.keep_alive(version),
        expect_continue: fields.expect_continue && version == Version::Http11,
        authorization: fields.authorization,
        forwarded_for: fields.forwarded_for,
        real_ip: fields.real_ip,
        via: fields.via,
        head_bytes,
    }))
}

/// Parses a response head from the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_response_head(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_bytes = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial(buf, max_head_bytes),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_bytes > max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let version = version(response.version)?;
    let status = response.code.ok_or(HeadError::Malformed)?;
    let fields = Fields::read(response.headers)?;
    // RFC 9112 §6.3: these statuses never carry a body, whatever the headers say.
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    let framing = match (fields.content_length, fields.chunked) {
        _ if bodiless => Framing::Empty,
        (Some(_), true) => return Err(HeadError::AmbiguousFraming),
        (None, true) => Framing::Chunked,
        (Some(0), false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::UntilClose,
    };
    let keep_alive = fields.keep_alive(version) && framing != Framing::UntilClose;
    Ok(Some(ResponseHead {
        status,
        version,
        framing,
        keep_alive,
        content_type: fields.content_type,
        head_bytes,
    }))
}

fn partial<T>(buf: &[u8], max_head_bytes: usize) -> Result<Option<T>, HeadError> {
    if buf.len() >= max_head_bytes {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

fn version(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::Malformed),
    }
}

/// Header fields of interest, collected in one pass over the headers.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    chunked: bool,
    connection_close: bool,
    connection_keep_alive: bool,
    expect_continue: bool,
    expect_other: bool,
    authorization: Option<Box<str>>,
    forwarded_for: Option<Box<str>>,
    real_ip: Option<Box<str>>,
    via: Option<Box<str>>,
    content_type: Option<Box<str>>,
}

impl Fields {
    fn read(headers: &[httparse::Header<'_>]) -> Result<Fields, HeadError> {
        let mut fields = Fields::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(header.value)?;
                if fields.content_length.is_some_and(|seen| seen != length) {
                    return Err(HeadError::BadContentLength);
                }
                fields.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                fields.read_transfer_encoding(text(header.value)?)?;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in text(header.value)?.split(',').map(str::trim) {
                    fields.connection_close |= token.eq_ignore_ascii_case("close");
                    fields.connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                if text(header.value)?
                    .trim()
                    .eq_ignore_ascii_case("100-continue")
                {
                    fields.expect_continue = true;
                } else {
                    fields.expect_other = true;
                }
            } else if name.eq_ignore_ascii_case("authorization") {
                // A singleton field (RFC 9110 §11.6.2): a second one is refused, not chosen
                // between, so no hop can read a different credential than we verified.
                if fields.authorization.is_some() {
                    return Err(HeadError::RepeatedAuthorization);
                }
                fields.authorization = Some(text(header.value)?.trim().into());
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                append_list(&mut fields.forwarded_for, text(header.value)?);
            } else if name.eq_ignore_ascii_case("via") {
                append_list(&mut fields.via, text(header.value)?);
            } else if name.eq_ignore_ascii_case("x-real-ip") {
                fields.real_ip = Some(text(header.value)?.trim().into());
            } else if name.eq_ignore_ascii_case("content-type") {
                fields.content_type = Some(text(header.value)?.trim().into());
            }
        }
        Ok(fields)
    }

    fn read_transfer_encoding(&mut self, value: &str) -> Result<(), HeadError> {
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            // Only `chunked`, and only once: any other coding would need decoding we do not do,
            // and chunked applied twice is a smuggling vector (RFC 9112 §6.1).
            if !coding.eq_ignore_ascii_case("chunked") || self.chunked {
                return Err(HeadError::UnsupportedTransferCoding);
            }
            self.chunked = true;
        }
        Ok(())
    }

    fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::Http11 => !self.connection_close,
            Version::Http10 => self.connection_keep_alive && !self.connection_close,
        }
    }
}

/// RFC 9110 §5.3: repeated list headers combine in order with commas.
fn append_list(list: &mut Option<Box<str>>, value: &str) {
    let value = value.trim();
    *list = Some(match list.take() {
        Some(earlier) => format!("{earlier}, {value}").into(),
        None => value.into(),
    });
}

fn text(value: &[u8]) -> Result<&str, HeadError> {
    std::str::from_utf8(value).map_err(|_| HeadError::NonTextHeader)
}

/// Strict `Content-Length`: ASCII digits only, no sign, no spaces inside, fits in `u64`.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadContentLength);
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(d - b'0')))
            .ok_or(HeadError::BadContentLength)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    const POST: &[u8] = b"POST /bn-2 HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
Authorization: Bearer abc.def.ghi\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
X-Real-IP: 10.0.0.9\r\nContent-Length: 42\r\n\r\n";

    #[test]
    fn request_complete_reads_every_field() {
        let head = parse_request_head(POST, MAX).unwrap().unwrap();
        assert_eq!(head.method, RequestMethod::Post);
        assert_eq!(&*head.path, "/bn-2");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.framing, Framing::Length(42));
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(head.authorization.as_deref(), Some("Bearer abc.def.ghi"));
        assert_eq!(head.forwarded_for.as_deref(), Some("10.0.0.1, 10.0.0.2"));
        assert_eq!(head.real_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(head.head_bytes, POST.len());
    }

    #[test]
    fn request_every_split_point_is_partial_then_complete() {
        for cut in 0..POST.len() {
            assert_eq!(
                parse_request_head(&POST[..cut], MAX),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(parse_request_head(POST, MAX).unwrap().is_some());
    }

    #[test]
    fn request_followed_by_body_reports_head_length_only() {
        let mut buf = POST.to_vec();
        buf.extend_from_slice(b"{\"jsonrpc\":\"2.0\"}");
        let head = parse_request_head(&buf, MAX).unwrap().unwrap();
        assert_eq!(head.head_bytes, POST.len());
    }

    #[test]
    fn request_partial_at_limit_is_too_large() {
        let buf = b"POST / HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(parse_request_head(buf, 20), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn request_complete_beyond_limit_is_too_large() {
        assert_eq!(parse_request_head(POST, 40), Err(HeadError::TooLarge));
    }

    #[test]
    fn request_too_many_headers_is_too_large() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(parse_request_head(&buf, 1 << 20), Err(HeadError::TooLarge));
    }

    #[test]
    fn request_garbage_is_malformed() {
        assert_eq!(
            parse_request_head(b"\x16\x03\x01 hello\r\n\r\n", MAX),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_request_head(b"GET / HTTP/2.0\r\n\r\n", MAX),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn request_http10_defaults_to_close() {
        let head = parse_request_head(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert_eq!(head.version, Version::Http10);
        assert!(!head.keep_alive);
        let head = parse_request_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
    }

    #[test]
    fn request_connection_close_ends_keep_alive() {
        let head = parse_request_head(b"GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn request_chunked_is_chunked_framing() {
        let head = parse_request_head(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
            MAX,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn request_smuggling_shapes_are_refused() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse_request_head(both, MAX),
            Err(HeadError::AmbiguousFraming)
        );
        let differing = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(
            parse_request_head(differing, MAX),
            Err(HeadError::BadContentLength)
        );
        let twice = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n";
        assert_eq!(
            parse_request_head(twice, MAX),
            Err(HeadError::UnsupportedTransferCoding)
        );
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse_request_head(gzip, MAX).unwrap_err().status(), 501);
        let old = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request_head(old, MAX), Err(HeadError::Malformed));
    }

    #[test]
    fn request_identical_content_lengths_are_accepted() {
        let buf = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        let head = parse_request_head(buf, MAX).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(3));
    }

    #[test]
    fn request_bad_content_lengths_are_refused() {
        for value in ["-1", "+1", "1 2", "0x10", "", "99999999999999999999999"] {
            let buf = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                parse_request_head(buf.as_bytes(), MAX),
                Err(HeadError::BadContentLength),
                "{value:?}"
            );
        }
    }

    #[test]
    fn request_expect_continue_is_noted_on_http11_only() {
        let buf = b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
        assert!(
            parse_request_head(buf, MAX)
                .unwrap()
                .unwrap()
                .expect_continue
        );
        let buf = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
        assert!(
            !parse_request_head(buf, MAX)
                .unwrap()
                .unwrap()
                .expect_continue
        );
        let buf = b"POST / HTTP/1.1\r\nExpect: coffee\r\n\r\n";
        assert_eq!(parse_request_head(buf, MAX).unwrap_err().status(), 417);
    }

    #[test]
    fn request_repeated_forwarded_for_is_joined() {
        let buf = b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n";
        let head = parse_request_head(buf, MAX).unwrap().unwrap();
        assert_eq!(head.forwarded_for.as_deref(), Some("1.1.1.1, 2.2.2.2"));
    }

    #[test]
    fn request_two_authorization_headers_are_refused() {
        let buf = b"POST / HTTP/1.1\r\nAuthorization: Bearer a.b.c\r\nContent-Length: 0\r\n\
authorization: Bearer d.e.f\r\n\r\n";
        assert_eq!(
            parse_request_head(buf, MAX),
            Err(HeadError::RepeatedAuthorization)
        );
        assert_eq!(HeadError::RepeatedAuthorization.status(), 400);
    }

    #[test]
    fn request_non_utf8_authorization_is_refused() {
        let buf = b"GET / HTTP/1.1\r\nAuthorization: \xff\xfe\r\n\r\n";
        assert_eq!(parse_request_head(buf, MAX), Err(HeadError::NonTextHeader));
    }

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Content-Length: 17\r\n\r\n";

    #[test]
    fn response_complete_reads_every_field() {
        let head = parse_response_head(RESPONSE, MAX).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(17));
        assert!(head.keep_alive);
        assert_eq!(head.content_type.as_deref(), Some("application/json"));
        assert_eq!(head.head_bytes, RESPONSE.len());
    }

    #[test]
    fn response_every_split_point_is_partial_then_complete() {
        for cut in 0..RESPONSE.len() {
            assert_eq!(parse_response_head(&RESPONSE[..cut], MAX), Ok(None));
        }
    }

    #[test]
    fn response_without_length_reads_until_close() {
        let head = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
    }

    #[test]
    fn response_bodiless_statuses_have_no_body() {
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let buf = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            let head = parse_response_head(buf.as_bytes(), MAX).unwrap().unwrap();
            assert_eq!(head.framing, Framing::Empty, "{status}");
        }
        let head = parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert!(head.is_interim());
    }

    #[test]
    fn response_http10_closes_unless_asked() {
        let head = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn response_chunked_is_chunked_framing() {
        let head = parse_response_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            MAX,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.keep_alive);
    }
}
