//! Incremental Server-Sent Events framing (the WHATWG event-stream format), fed chunk by chunk.
//!
//! Only the current line and the current event's data are held, each bounded; a long stream is
//! never buffered whole. Lines may end in LF, CRLF or CR, also when a chunk boundary splits them.

/// What the parser hands out when an event is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent<'a> {
    /// A `message` event (or one with no `event:` field) and its data, lines joined by LF.
    Message(&'a [u8]),
    /// An event whose data went past the bound; its content was dropped.
    Oversized,
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    is_message: bool,
    oversized: bool,
    line_overflow: bool,
    after_cr: bool,
    limit: usize,
}

impl SseParser {
    /// A parser that holds at most `limit` bytes of one event's data (and of one line).
    pub fn new(limit: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            is_message: true,
            oversized: false,
            line_overflow: false,
            after_cr: false,
            limit,
        }
    }

    /// Feeds a chunk; `on_event` is called for each event completed in it. Returning `false`
    /// from `on_event` stops parsing (the caller has its verdict).
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>) -> bool) -> bool {
        // An empty chunk cannot tell whether the CR that ended the last one was half a CRLF.
        if self.after_cr && !chunk.is_empty() {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            self.after_cr = false;
        }
        while !chunk.is_empty() {
            let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.push_line_bytes(chunk);
                return true;
            };
            let (part, rest) = chunk.split_at(pos);
            self.push_line_bytes(part);
            let terminator = rest.first().copied();
            let mut rest = rest.get(1..).unwrap_or(&[]);
            if terminator == Some(b'\r') {
                match rest.first() {
                    Some(b'\n') => rest = rest.get(1..).unwrap_or(&[]),
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            chunk = rest;
            if !self.end_line(&mut on_event) {
                return false;
            }
        }
        true
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.limit {
            self.oversized = true;
            self.line_overflow = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(SseEvent<'_>) -> bool) -> bool {
        if self.line_overflow {
            // The line was dropped while it grew; it was a line, not the blank one ending an event.
            self.line_overflow = false;
            return true;
        }
        if self.line.is_empty() {
            return self.dispatch(on_event);
        }
        let line = std::mem::take(&mut self.line);
        if !self.oversized {
            self.field(&line);
        }
        self.line = line;
        self.line.clear();
        true
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return; // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = line.get(i + 1..).unwrap_or(&[]);
                (line.get(..i).unwrap_or(&[]), value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.limit {
                    self.oversized = true;
                    self.data.clear();
                } else {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
                self.has_data = true;
            }
            b"event" => self.is_message = value.is_empty() || value == b"message",
            _ => {} // id, retry and unknown fields do not change the verdict
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>) -> bool) -> bool {
        let mut go_on = true;
        if self.oversized {
            go_on = on_event(SseEvent::Oversized);
        } else if self.has_data && self.is_message {
            let data = self.data.strip_suffix(b"\n").unwrap_or(&self.data);
            go_on = on_event(SseEvent::Message(data));
        }
        self.data.clear();
        self.has_data = false;
        self.is_message = true;
        self.oversized = false;
        go_on
    }
}

/// The data of every `message` event of a complete stream (at most `limit` bytes each; larger
/// events are skipped). A stream that ends without its final blank line still completes its
/// last event.
pub fn message_datas(body: &[u8], limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut parser = SseParser::new(limit);
    let mut take = |event: SseEvent<'_>| {
        if let SseEvent::Message(data) = event {
            out.push(data.to_vec());
        }
        true
    };
    parser.feed(body, &mut take);
    parser.feed(b"\n\n", &mut take);
    out
}

/// Frames messages as a stream of `message` events (one `data:` line per line of each).
pub fn frame_messages(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.iter().map(|m| m.len() + 24).sum());
    for m in messages {
        out.extend_from_slice(b"event: message\n");
        for line in m.split(|&b| b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;

    #[wasm_bindgen_test(unsupported = test)]
    fn framing_round_trips_through_the_parser() {
        let msgs: [&[u8]; 3] = [br#"{"a":1}"#, b"two\nlines", b""];
        let framed = frame_messages(&msgs);
        assert!(framed.starts_with(b"event: message\ndata: {\"a\":1}\n\n"));
        assert_eq!(message_datas(&framed, 1024), msgs.iter().map(|m| m.to_vec()).collect::<Vec<_>>());
        // No final blank line, CRLF endings, an id and a comment: still every message.
        let raw = b"id: 7\r\n: keepalive\r\nevent: message\r\ndata: {\"b\":2}";
        assert_eq!(message_datas(raw, 1024), vec![br#"{"b":2}"#.to_vec()]);
        // An event past the limit is skipped, the next one kept.
        assert_eq!(message_datas(b"data: 0123456789abcdef\n\ndata: ok\n\n", 10), vec![b"ok".to_vec()]);
    }

    fn events(chunks: &[&[u8]], limit: usize) -> Vec<String> {
        let mut p = SseParser::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| {
                out.push(match e {
                    SseEvent::Message(d) => String::from_utf8_lossy(d).into_owned(),
                    SseEvent::Oversized => "<oversized>".into(),
                });
                true
            });
        }
        out
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parses_mcp_style_events_with_ids_and_priming_events() {
        let stream = b"id: 1\ndata: \n\nevent: message\nid: 2\ndata: {\"a\":1}\n\n: keepalive\n\n";
        assert_eq!(events(&[stream], 1024), vec!["", "{\"a\":1}"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn same_result_for_every_split_of_the_stream() {
        let stream: &[u8] = b"event: message\r\ndata: {\"x\":\r\ndata: 2}\r\n\r\nevent: other\ndata: no\n\ndata:yes\r\rdata: last\n\n";
        let whole = events(&[stream], 1024);
        assert_eq!(whole, vec!["{\"x\":\n2}", "yes", "last"]);
        for i in 0..stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(events(&[a, b], 1024), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes, 1024), whole);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_chunk_between_cr_and_lf() {
        // Fuzz regression (fuzz/regressions/sse/empty-chunk-between-cr-and-lf): an empty chunk
        // after a CR forgot the CR, so the LF that followed ended the event early.
        let whole = events(&[b"data: a\r\ndata: b\r\n\r\n"], 1024);
        assert_eq!(whole, vec!["a\nb"]);
        assert_eq!(events(&[b"data: a\r", b"", b"\ndata: b\r", b"", b"\n\r\n"], 1024), whole);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn oversized_events_are_reported_not_buffered() {
        let big = format!("data: {}\n\ndata: small\n\n", "x".repeat(100));
        assert_eq!(events(&[big.as_bytes()], 50), vec!["<oversized>", "small"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stops_when_asked() {
        let mut p = SseParser::new(100);
        let mut n = 0;
        let more = p.feed(b"data: 1\n\ndata: 2\n\n", |_| {
            n += 1;
            false
        });
        assert!(!more);
        assert_eq!(n, 1);
    }
}
