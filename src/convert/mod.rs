//! Response relays: what happens to an upstream response body on its way to the
//! client. Pass-through relays forward bytes unchanged (apart from hiding the
//! usage chunk a client did not ask for) while reading usage; translating relays
//! (other modules here) convert between APIs. All are pure, synchronous code:
//! `push(bytes) -> bytes` and `finish() -> bytes`, whatever the chunking.

pub mod anthropic;
pub mod chat;
pub mod context;
pub mod errors;
pub mod ir;
pub mod passthrough;
pub mod responses;
pub mod scan;
pub mod support;
pub mod translate;

use crate::usage::Usage;
use bytes::Bytes;

/// An error event an upstream sent inside a 2xx stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub message: String,
    /// The upstream's error type/code when it gave one.
    pub kind: Option<String>,
}

/// What a relay has observed of an upstream body so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Usage reported by the upstream so far.
    pub usage: Option<Usage>,
    /// The upstream's final usage report has been seen (otherwise `usage` is
    /// partial or absent and billing falls back to an estimate).
    pub usage_final: bool,
    /// Bytes of generated text seen (for an estimate when usage never came).
    pub output_chars: u64,
    /// Some content (not just headers/role/ping) has been produced.
    pub content: bool,
    /// An error event seen in the stream.
    pub error: Option<StreamError>,
}

/// Converts (or passes) an upstream response body for the client.
pub trait Relay: Send + Sync {
    /// Bytes for the client produced by this upstream chunk (may be empty while
    /// an event is incomplete). Pass-through returns the chunk itself when it
    /// can, without copying.
    fn push(&mut self, chunk: Bytes) -> Bytes;
    /// Bytes for the client when the upstream body ended cleanly.
    fn finish(&mut self) -> Bytes;
    /// What the relay has observed so far.
    fn seen(&self) -> &Seen;
    /// Whether output bytes equal input bytes, so `content-length` may be kept.
    fn preserves_length(&self) -> bool;
    /// Bytes that end the client's stream with an error event in its protocol,
    /// after an upstream failure mid-stream.
    fn abort(&mut self, message: &str) -> Bytes;

    fn usage(&self) -> Option<Usage> {
        self.seen().usage
    }
    fn usage_complete(&self) -> bool {
        self.seen().usage_final
    }
    fn output_chars(&self) -> u64 {
        self.seen().output_chars
    }
    fn content_started(&self) -> bool {
        self.seen().content
    }
    fn stream_error(&self) -> Option<&StreamError> {
        self.seen().error.as_ref()
    }
}

/// Runs a whole upstream body through `relay`, pushed in pieces ending at each
/// of `cuts` (ascending offsets) and then the rest; returns the client bytes.
/// For tests and fuzzing: a relay's output must not depend on the cuts.
pub fn relay_in_pieces(relay: &mut dyn Relay, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        let c = c.clamp(last, input.len());
        out.extend_from_slice(&relay.push(Bytes::copy_from_slice(&input[last..c])));
        last = c;
    }
    out.extend_from_slice(&relay.finish());
    out
}
