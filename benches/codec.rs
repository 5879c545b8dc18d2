//! HTTP/1.x codec throughput, the per-request framing work of the proxy: parsing a beacon node's
//! `POST` head (`parse_request_head`), and reading a 2 MB body (the size of a large
//! `newPayload`) through `BodyReader` fed in 64 KiB pieces (one socket read each), once
//! `Transfer-Encoding: chunked` and once `Content-Length`.
//!
//! The body output buffer is reused across iterations, so the numbers are the decoder's, not the
//! allocator's. It does not measure sockets, JSON inspection (`rpc.rs`) or JWT checks (`jwt.rs`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sync_proxy::http::body::BodyReader;
use sync_proxy::http::head::{Framing, parse_request_head};

/// Size of the synthetic `newPayload` body.
const BODY_BYTES: usize = 2 * 1024 * 1024;
/// Bytes handed to the reader per call: one 64 KiB socket read, as `net::READ_CHUNK_BYTES`.
const PIECE_BYTES: usize = 64 * 1024;
/// Chunk size of the chunked encoding; HTTP clients typically flush 8–16 KiB at a time.
const CHUNK_BYTES: usize = 16 * 1024;
/// Head limit, the proxy's default order of magnitude.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Body limit, the proxy's default (geth's Engine API limit).
const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// The head of a `newPayload` as a beacon node sends it to its execution client: a JWT, a
/// handful of headers, a 2 MB `Content-Length`.
fn beacon_post_head() -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\n\
         host: 127.0.0.1:8551\r\n\
         user-agent: Lighthouse/v7.0.1-e42406d\r\n\
         accept: */*\r\n\
         content-type: application/json\r\n\
         authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpYXQiOjE3MDAwMDAwMDB9.SRSq6YJbSf4Sek3tsyB4pWD5Op3jbbjMjFQv2fxnjOU\r\n\
         content-length: {BODY_BYTES}\r\n\r\n"
    )
    .into_bytes()
}

/// A JSON-looking 2 MB body (the decoder does not look at it).
fn body() -> Vec<u8> {
    let pattern = b"\"0xf86c808504a817c800825208943535353535353535353535353535353535353535880de0b6b3a7640000\",";
    pattern.iter().copied().cycle().take(BODY_BYTES).collect()
}

/// `body` in `Transfer-Encoding: chunked`, `CHUNK_BYTES` per chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(body.len() + body.len() / CHUNK_BYTES * 16 + 16);
    for chunk in body.chunks(CHUNK_BYTES) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

/// Reads a whole body from `input` in `PIECE_BYTES` pieces; returns the payload size.
fn read_body(framing: Framing, input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut reader = BodyReader::new(framing, MAX_BODY_BYTES);
    for piece in input.chunks(PIECE_BYTES) {
        let progress = reader.feed(piece, out).expect("bench body is valid");
        debug_assert_eq!(progress.consumed, piece.len());
    }
    assert!(reader.is_done(), "bench body is complete");
    out.len()
}

fn codec(c: &mut Criterion) {
    let head = beacon_post_head();
    let parsed = parse_request_head(&head, MAX_HEAD_BYTES)
        .expect("bench head is valid")
        .expect("bench head is complete");
    assert_eq!(parsed.framing, Framing::Length(BODY_BYTES as u64));

    let mut group = c.benchmark_group("codec/request_head");
    group.throughput(Throughput::Bytes(head.len() as u64));
    group.bench_function("beacon_post", |b| {
        b.iter(|| parse_request_head(black_box(&head), MAX_HEAD_BYTES))
    });
    group.finish();

    let body = body();
    let encoded = chunked(&body);
    let mut out = Vec::with_capacity(BODY_BYTES);
    assert_eq!(read_body(Framing::Chunked, &encoded, &mut out), BODY_BYTES);
    assert_eq!(out, body);
    let length = Framing::Length(BODY_BYTES as u64);
    assert_eq!(read_body(length, &body, &mut out), BODY_BYTES);

    let mut group = c.benchmark_group("codec/body_2mb_64k_pieces");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("chunked", |b| {
        b.iter(|| read_body(Framing::Chunked, black_box(&encoded), &mut out))
    });
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("content_length", |b| {
        b.iter(|| read_body(length, black_box(&body), &mut out))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
