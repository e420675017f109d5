//! Server-sent events: cutting a byte stream into events at blank lines
//! whatever the TCP chunking, reading an event's `event:` and `data:` fields, and
//! writing events.

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

/// Cuts a stream into complete raw events (each including its terminating blank
/// line). Accepts `\n\n` and `\r\n\r\n` terminators, mixed.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Where the search for the next terminator resumes.
    scanned: usize,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Feeds bytes; returns every event completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.find_end() {
            out.push(self.buf.split_to(end).freeze());
            self.scanned = 0;
        }
        out
    }

    /// The unterminated tail at end of stream (a final event without its blank
    /// line), if any non-whitespace bytes remain.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        let rest = self.buf.split().freeze();
        (!rest.iter().all(|b| b.is_ascii_whitespace())).then_some(rest)
    }

    /// Bytes buffered but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn find_end(&mut self) -> Option<usize> {
        let b = &self.buf;
        // Resume a few bytes early so a terminator split across pushes is
        // found; jump from newline to newline (memchr: the byte-by-byte loop
        // was a sixth of a relayed stream's instructions).
        let from = self.scanned.saturating_sub(3);
        for i in memchr::memchr_iter(b'\n', &b[from..]).map(|i| i + from) {
            if b.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        self.scanned = b.len();
        None
    }
}

/// The fields of one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event<'a> {
    pub event: Option<&'a str>,
    /// `data:` lines joined with `\n` (borrowed when there is just one).
    pub data: Cow<'a, str>,
    /// True when the event has no `event`/`data` fields (comments only).
    pub is_comment: bool,
}

/// Parses a raw event. Invalid UTF-8 lines are skipped.
pub fn parse(raw: &[u8]) -> Event<'_> {
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
    };
    let mut ev = Event { event: None, data: Cow::Borrowed(""), is_comment: true };
    let mut data_lines = 0;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => {
                ev.event = Some(value);
                ev.is_comment = false;
            }
            "data" => {
                ev.is_comment = false;
                ev.data = match data_lines {
                    0 => Cow::Borrowed(value),
                    _ => Cow::Owned(format!("{}\n{}", ev.data, value)),
                };
                data_lines += 1;
            }
            _ => {}
        }
    }
    ev
}

/// Writes `event: NAME\ndata: DATA\n\n` (or just the data line when `name` is
/// `None`) into `out`.
pub fn write_event(out: &mut BytesMut, name: Option<&str>, data: &str) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b"\n");
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whatever_the_chunking() {
        let stream = b"event: a\ndata: 1\n\ndata: 2\r\n\r\n: ping\n\ndata: {\"x\":3}\n\n";
        for cut in 0..stream.len() {
            for cut2 in cut..stream.len() {
                let mut s = Splitter::new();
                let mut got = Vec::new();
                got.extend(s.push(&stream[..cut]));
                got.extend(s.push(&stream[cut..cut2]));
                got.extend(s.push(&stream[cut2..]));
                assert!(s.finish().is_none());
                let joined: Vec<u8> = got.iter().flat_map(|b| b.iter().copied()).collect();
                assert_eq!(joined, stream.to_vec());
                assert_eq!(got.len(), 4, "cut at {cut},{cut2}");
            }
        }
    }

    #[test]
    fn parses_fields() {
        let e = parse(b"event: message_start\ndata: {\"a\":1}\n\n");
        assert_eq!(e.event, Some("message_start"));
        assert_eq!(e.data, "{\"a\":1}");
        let e = parse(b"data: line1\ndata: line2\n\n");
        assert_eq!(e.data, "line1\nline2");
        assert!(parse(b": keep-alive\n\n").is_comment);
        assert_eq!(parse(b"data:[DONE]\r\n\r\n").data, "[DONE]");
    }

    #[test]
    fn unterminated_tail() {
        let mut s = Splitter::new();
        assert!(s.push(b"data: x").is_empty());
        assert_eq!(s.finish().as_deref(), Some(&b"data: x"[..]));
    }

    #[test]
    fn writes_events() {
        let mut out = BytesMut::new();
        write_event(&mut out, Some("ping"), "{\"type\":\"ping\"}");
        write_event(&mut out, None, "[DONE]");
        assert_eq!(&out[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: [DONE]\n\n");
    }
}
