//! Response relays: what happens to an upstream response body on its way to the
//! client. Pass-through relays forward bytes unchanged (apart from hiding the
//! usage chunk a client did not ask for) while reading usage; translating relays
//! (other modules here) convert between APIs. All are pure, synchronous code:
//! `push(bytes) -> bytes` and `finish() -> bytes`, whatever the chunking.

pub mod passthrough;
pub mod scan;

use crate::usage::Usage;
use bytes::Bytes;

/// An error event an upstream sent inside a 2xx stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub message: String,
    /// The upstream's error type/code when it gave one.
    pub kind: Option<String>,
}

/// Converts (or passes) an upstream response body for the client.
pub trait Relay: Send + Sync {
    /// Bytes for the client produced by this upstream chunk (may be empty while
    /// an event is incomplete). Pass-through returns the chunk itself when it
    /// can, without copying.
    fn push(&mut self, chunk: Bytes) -> Bytes;
    /// Bytes for the client when the upstream body ended cleanly.
    fn finish(&mut self) -> Bytes;
    /// Usage reported by the upstream so far.
    fn usage(&self) -> Option<Usage>;
    /// Whether the upstream's final usage report has been seen (otherwise
    /// `usage` is partial or absent and billing falls back to an estimate).
    fn usage_complete(&self) -> bool;
    /// Bytes of generated text seen (for an estimate when usage never came).
    fn output_chars(&self) -> u64;
    /// Whether any content (not just headers/role/ping) has been produced.
    fn content_started(&self) -> bool;
    /// An error event seen in the stream, if any.
    fn stream_error(&self) -> Option<&StreamError>;
    /// Whether output bytes equal input bytes, so `content-length` may be kept.
    fn preserves_length(&self) -> bool;
    /// Bytes that end the client's stream with an error event in its protocol,
    /// after an upstream failure mid-stream.
    fn abort(&mut self, message: &str) -> Bytes;
}
