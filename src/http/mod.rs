//! HTTP/1.x framing for both sides of the proxy: heads (`httparse`), bodies (length, chunked,
//! close-delimited) and the heads the proxy writes. Pure: bytes in, facts out.

pub mod body;
pub mod head;
pub mod write;
