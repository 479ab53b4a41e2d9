//! AMI framing: bytes ⇄ [`Message`], as a tokio-util `Decoder`/`Encoder`.
//!
//! Rules (measured against Asterisk's `main/manager.c`, see the project's AMI notes):
//! - the server opens with one banner line without a colon and no blank line after it;
//! - `Key: Value` lines end with CRLF or a bare LF; a blank line ends a message; blank lines between messages are
//!   ignored;
//! - a line is split at its FIRST colon only (values contain `: `), the value's leading blanks are skipped, an empty
//!   value is kept; keys compare case-insensitively and repeat (kept in order) — that is [`Message`]'s job;
//! - a line without a colon is kept as a bare line, never an error;
//! - legacy `Response: Follows` (Asterisk ≤ 13 `Command`) carries raw output lines, blank ones included, up to
//!   `--END COMMAND--`;
//! - bytes that are not UTF-8 are decoded lossily per line, so one odd caller name cannot poison a stream;
//! - a message larger than the size guard is dropped (reported as [`Frame::Skipped`]) and decoding resumes at
//!   the next blank line, so a broken or hostile peer cannot grow memory without bound.
//!
//! Decoding never fails on content: `tokio_util`'s `FramedRead` ends the stream after the first decoder error, and
//! one bad message must not end an AMI session. Only I/O errors are errors.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::message::Message;

/// Default size guard for one message. Real events are a few hundred bytes to a few KiB; legacy command output
/// (e.g. `core show channels` on a busy PBX) is the largest thing a server sends.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

const END_COMMAND: &str = "--END COMMAND--";

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The server's greeting line, e.g. `Asterisk Call Manager/11.0.0`.
    Banner(String),
    /// A complete message.
    Message(Message),
    /// Input that was dropped, with where it started in the stream (byte offset) and why.
    Skipped {
        offset: u64,
        bytes: u64,
        reason: SkipReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The message grew past the size guard; everything up to the next blank line was dropped.
    TooLarge { limit: usize },
    /// The stream ended in the middle of a message (only reported by `decode_eof`).
    Truncated,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::TooLarge { limit } => {
                write!(f, "message larger than {limit} bytes dropped up to the next blank line")
            }
            SkipReason::Truncated => write!(f, "stream ended in the middle of a message"),
        }
    }
}

/// The AMI codec. One instance per connection (it tracks the banner and the stream offset).
#[derive(Debug, Clone)]
pub struct AmiCodec {
    max_message_bytes: usize,
    expect_banner: bool,
    /// The message being assembled and how many bytes of input it has used so far.
    current: Message,
    current_bytes: usize,
    current_offset: u64,
    /// Inside legacy `Response: Follows` output, before `--END COMMAND--`.
    in_follows_output: bool,
    follows_seen_output: bool,
    discard: Option<Discard>,
    /// Bytes consumed from the stream so far: offsets in errors and skips refer to it.
    consumed: u64,
}

#[derive(Debug, Clone)]
struct Discard {
    offset: u64,
    bytes: u64,
    /// No byte of the current line has been dropped yet, so an empty line here really is a blank line.
    at_line_start: bool,
}

impl Default for AmiCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl AmiCodec {
    /// A codec for the client side of a connection: expects the server's banner first.
    pub fn new() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            expect_banner: true,
            current: Message::new(),
            current_bytes: 0,
            current_offset: 0,
            in_follows_output: false,
            follows_seen_output: false,
            discard: None,
            consumed: 0,
        }
    }

    /// A codec for a stream that does not start with a banner (e.g. the server side, or a capture cut mid-session).
    pub fn without_banner() -> Self {
        Self {
            expect_banner: false,
            ..Self::new()
        }
    }

    pub fn with_max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit.max(64);
        self
    }

    /// Bytes of input consumed so far.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    fn take_line(&mut self, src: &mut BytesMut, newline_at: usize) -> BytesMut {
        let mut line = src.split_to(newline_at + 1);
        self.consumed += line.len() as u64;
        line.truncate(newline_at);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        line
    }

    fn finish_message(&mut self) -> Option<Frame> {
        self.current_bytes = 0;
        self.in_follows_output = false;
        self.follows_seen_output = false;
        if self.current.is_empty() {
            return None;
        }
        Some(Frame::Message(std::mem::take(&mut self.current)))
    }

    /// Consumes input while discarding an oversized message. Returns the skip report once a blank line is found.
    fn discard_until_blank_line(&mut self, src: &mut BytesMut) -> Option<Frame> {
        loop {
            let discard = self.discard.as_mut()?;
            match src.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let line_len = pos + 1;
                    let empty = src[..pos].iter().all(|&b| b == b'\r') && pos <= 1;
                    let blank = empty && discard.at_line_start;
                    src.advance(line_len);
                    self.consumed += line_len as u64;
                    discard.bytes += line_len as u64;
                    discard.at_line_start = true;
                    if blank {
                        let d = self.discard.take()?;
                        return Some(Frame::Skipped {
                            offset: d.offset,
                            bytes: d.bytes,
                            reason: SkipReason::TooLarge {
                                limit: self.max_message_bytes,
                            },
                        });
                    }
                }
                None => {
                    // Keep a lone trailing CR: with the LF of the next read it may make a blank line.
                    let keep = usize::from(src.last() == Some(&b'\r') && src.len() == 1);
                    let drop = src.len() - keep;
                    if drop > 0 {
                        src.advance(drop);
                        self.consumed += drop as u64;
                        discard.bytes += drop as u64;
                        discard.at_line_start = false;
                    }
                    return None;
                }
            }
        }
    }

    fn start_discard(&mut self, src_bytes_dropped: u64) {
        let offset = self.current_offset;
        let bytes = self.current_bytes as u64 + src_bytes_dropped;
        self.current = Message::new();
        self.current_bytes = 0;
        self.in_follows_output = false;
        self.follows_seen_output = false;
        self.discard = Some(Discard {
            offset,
            bytes,
            at_line_start: true,
        });
    }

    fn push_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        if self.in_follows_output {
            // Legacy output: raw lines up to `--END COMMAND--`, which may share a line with the last output.
            if let Some(rest) = text.strip_suffix(END_COMMAND) {
                if !rest.is_empty() {
                    self.current.push_bare_line(rest);
                }
                self.in_follows_output = false;
                return;
            }
            if !self.follows_seen_output {
                if let Some((key, value)) = split_header(&text) {
                    if key.eq_ignore_ascii_case("ActionID") || key.eq_ignore_ascii_case("Privilege") {
                        self.current.push(key, value);
                        return;
                    }
                }
            }
            self.follows_seen_output = true;
            self.current.push_bare_line(text);
            return;
        }
        match split_header(&text) {
            Some((key, value)) => {
                let starts_follows = self.current.is_empty()
                    && key.eq_ignore_ascii_case("Response")
                    && value.eq_ignore_ascii_case("Follows");
                self.current.push(key, value);
                if starts_follows {
                    self.in_follows_output = true;
                }
            }
            None => self.current.push_bare_line(text),
        }
    }
}

/// Splits `Key: Value` at the first colon; `None` for a line with no colon or an empty key.
fn split_header(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim_end();
    if key.is_empty() {
        return None;
    }
    Some((key, value.trim_start_matches([' ', '\t'])))
}

impl Decoder for AmiCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        loop {
            if self.discard.is_some() {
                match self.discard_until_blank_line(src) {
                    Some(frame) => return Ok(Some(frame)),
                    None if self.discard.is_some() => return Ok(None),
                    None => {}
                }
            }
            let Some(pos) = src.iter().position(|&b| b == b'\n') else {
                // No complete line yet: enforce the guard on what is buffered, so one endless line is caught too.
                // A trailing CR does not count: it may be the start of the blank line that ends the message,
                // and a message's terminator never counts against the guard (whatever the read boundaries).
                let trailing_cr = usize::from(src.last() == Some(&b'\r'));
                if self.current_bytes + src.len() - trailing_cr > self.max_message_bytes {
                    if self.current_bytes == 0 {
                        self.current_offset = self.consumed;
                    }
                    let drop = src.len() - trailing_cr;
                    src.advance(drop);
                    self.consumed += drop as u64;
                    self.start_discard(drop as u64);
                    if let Some(d) = self.discard.as_mut() {
                        d.at_line_start = false;
                    }
                    continue;
                }
                return Ok(None);
            };
            let line_start = self.consumed;
            let line_len = pos + 1;
            let blank = pos == 0 || (pos == 1 && src[0] == b'\r');
            if blank && !self.in_follows_output && !self.expect_banner {
                src.advance(line_len);
                self.consumed += line_len as u64;
                if let Some(frame) = self.finish_message() {
                    return Ok(Some(frame));
                }
                continue;
            }
            if self.current_bytes + line_len > self.max_message_bytes {
                if self.current_bytes == 0 {
                    self.current_offset = line_start;
                }
                src.advance(line_len);
                self.consumed += line_len as u64;
                self.start_discard(line_len as u64);
                continue;
            }
            let line = self.take_line(src, pos);
            if self.expect_banner {
                self.expect_banner = false;
                if !line.contains(&b':') && !line.is_empty() {
                    return Ok(Some(Frame::Banner(String::from_utf8_lossy(&line).into_owned())));
                }
            }
            if line.is_empty() && !self.in_follows_output {
                if let Some(frame) = self.finish_message() {
                    return Ok(Some(frame));
                }
                continue;
            }
            if self.current_bytes == 0 {
                self.current_offset = line_start;
            }
            self.current_bytes += line_len;
            self.push_line(&line);
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if let Some(d) = self.discard.take() {
            let bytes = d.bytes + src.len() as u64;
            self.consumed += src.len() as u64;
            src.clear();
            return Ok(Some(Frame::Skipped {
                offset: d.offset,
                bytes,
                reason: SkipReason::TooLarge {
                    limit: self.max_message_bytes,
                },
            }));
        }
        // A final line without its newline still belongs to the last message.
        if !src.is_empty() {
            let mut rest = src.split();
            self.consumed += rest.len() as u64;
            if rest.last() == Some(&b'\r') {
                rest.truncate(rest.len() - 1);
            }
            if !rest.is_empty() {
                if self.current_bytes == 0 {
                    self.current_offset = self.consumed - rest.len() as u64;
                }
                self.current_bytes += rest.len();
                self.push_line(&rest);
            }
        }
        if self.current.is_empty() {
            return Ok(None);
        }
        // Everything AMI sends ends with a blank line; a message cut short is reported, not guessed at.
        let bytes = self.current_bytes as u64;
        let offset = self.current_offset;
        self.current = Message::new();
        self.current_bytes = 0;
        Ok(Some(Frame::Skipped {
            offset,
            bytes,
            reason: SkipReason::Truncated,
        }))
    }
}

/// Encoding errors: a header that would break the framing.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_owned())
}

impl Encoder<&Message> for AmiCodec {
    type Error = io::Error;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), io::Error> {
        for header in msg.headers() {
            if header.value.contains(['\r', '\n']) {
                return Err(invalid("AMI header value contains a line break"));
            }
            match &header.key {
                Some(key) => {
                    if key.is_empty() || key.contains([':', '\r', '\n']) {
                        return Err(invalid("AMI header key is empty or contains ':' or a line break"));
                    }
                    dst.reserve(key.len() + header.value.len() + 4);
                    dst.put_slice(key.as_bytes());
                    dst.put_slice(b": ");
                    dst.put_slice(header.value.as_bytes());
                }
                None => dst.put_slice(header.value.as_bytes()),
            }
            dst.put_slice(b"\r\n");
        }
        dst.put_slice(b"\r\n");
        Ok(())
    }
}

impl Encoder<Message> for AmiCodec {
    type Error = io::Error;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), io::Error> {
        <Self as Encoder<&Message>>::encode(self, &msg, dst)
    }
}

/// Decodes a whole byte buffer (e.g. a recorded trace) into frames, end of input included.
pub fn decode_all(bytes: &[u8], codec: AmiCodec) -> Vec<Frame> {
    let mut codec = codec;
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    // Decoding a BytesMut never produces an I/O error, so `Err` cannot occur here; stop defensively if it did.
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        frames.push(frame);
    }
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames.push(frame);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(frames: &[Frame]) -> Vec<&Message> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn banner_then_crlf_message() {
        let frames = decode_all(
            b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nMessage: Authentication accepted\r\n\r\n",
            AmiCodec::new(),
        );
        assert_eq!(frames[0], Frame::Banner("Asterisk Call Manager/11.0.0".into()));
        let m = messages(&frames);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].get("message"), Some("Authentication accepted"));
        assert!(m[0].is_success());
    }

    #[test]
    fn bare_lf_and_mixed_line_endings() {
        let frames = decode_all(
            b"Event: A\nX: 1\r\n\nEvent: B\r\nY: 2\n\r\n",
            AmiCodec::without_banner(),
        );
        let m = messages(&frames);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].get("x"), Some("1"));
        assert_eq!(m[1].event_name(), Some("B"));
        assert_eq!(m[1].get("Y"), Some("2"));
    }

    #[test]
    fn split_at_first_colon_only_and_empty_values() {
        let frames = decode_all(
            b"Event: VarSet\r\nValue: a: b:c\r\nAccountCode:\r\nCallerIDName:   spaced\r\n\r\n",
            AmiCodec::without_banner(),
        );
        let m = messages(&frames);
        assert_eq!(m[0].get("Value"), Some("a: b:c"));
        assert_eq!(m[0].get("AccountCode"), Some(""));
        assert_eq!(m[0].get("CallerIDName"), Some("spaced"));
    }

    #[test]
    fn repeated_keys_and_case_insensitive_lookup() {
        let frames = decode_all(
            b"Event: Newchannel\r\nChanVariable: a=1\r\nCHANVARIABLE: b=2\r\nuniqueid: 1.2\r\n\r\n",
            AmiCodec::without_banner(),
        );
        let m = messages(&frames);
        assert_eq!(m[0].get_all("ChanVariable").collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(m[0].get("UniqueID"), Some("1.2"));
    }

    #[test]
    fn line_without_colon_is_kept_not_fatal() {
        let frames = decode_all(b"Event: X\r\njunk line\r\nK: v\r\n\r\n", AmiCodec::without_banner());
        let m = messages(&frames);
        assert_eq!(m[0].bare_lines().collect::<Vec<_>>(), ["junk line"]);
        assert_eq!(m[0].get("K"), Some("v"));
    }

    #[test]
    fn c_escaped_caller_name_is_decoded_on_request() {
        let frames = decode_all(
            b"Event: Newchannel\r\nCallerIDName: O\\'Brien\r\n\r\n",
            AmiCodec::without_banner(),
        );
        let m = messages(&frames);
        assert_eq!(m[0].get("CallerIDName"), Some("O\\'Brien"));
        assert_eq!(m[0].get_unescaped("CallerIDName").as_deref(), Some("O'Brien"));
    }

    #[test]
    fn legacy_follows_output_with_blank_lines() {
        let input = b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\nChannel   State\r\n\r\nUptime: 5\r\n1 active call--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n";
        let frames = decode_all(input, AmiCodec::without_banner());
        let m = messages(&frames);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].action_id(), Some("7"));
        assert_eq!(
            m[0].bare_lines().collect::<Vec<_>>(),
            ["Channel   State", "", "Uptime: 5", "1 active call"]
        );
        assert_eq!(m[1].event_name(), Some("Next"));
    }

    #[test]
    fn non_utf8_bytes_are_decoded_lossily() {
        let frames = decode_all(
            b"Event: X\r\nCallerIDName: \xff\xfeab\r\n\r\n",
            AmiCodec::without_banner(),
        );
        let m = messages(&frames);
        assert!(m[0].get("CallerIDName").is_some_and(|v| v.ends_with("ab")));
    }

    #[test]
    fn oversized_message_is_skipped_and_decoding_resumes() {
        let mut input = b"Event: Before\r\n\r\nEvent: Huge\r\n".to_vec();
        for i in 0..200 {
            input.extend_from_slice(format!("Variable: v{i}=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\nEvent: After\r\n\r\n");
        let frames = decode_all(&input, AmiCodec::without_banner().with_max_message_bytes(1024));
        let names: Vec<_> = messages(&frames).iter().filter_map(|m| m.event_name()).collect();
        assert_eq!(names, ["Before", "After"]);
        let skipped: Vec<_> = frames.iter().filter(|f| matches!(f, Frame::Skipped { .. })).collect();
        assert_eq!(skipped.len(), 1);
        match skipped[0] {
            Frame::Skipped { offset, reason, .. } => {
                assert_eq!(*offset, "Event: Before\r\n\r\n".len() as u64);
                assert_eq!(*reason, SkipReason::TooLarge { limit: 1024 });
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn endless_line_without_newline_is_bounded() {
        let mut codec = AmiCodec::without_banner().with_max_message_bytes(1024);
        let mut buf = BytesMut::new();
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 512]);
            assert!(codec.decode(&mut buf).unwrap_or(None).is_none());
            assert!(buf.len() <= 1024, "buffer must not grow: {}", buf.len());
        }
        buf.extend_from_slice(b"\r\n\r\nEvent: Ok\r\n\r\n");
        let frame = codec.decode(&mut buf).ok().flatten();
        assert!(matches!(frame, Some(Frame::Skipped { .. })), "{frame:?}");
        let frame = codec.decode(&mut buf).ok().flatten();
        match frame {
            Some(Frame::Message(m)) => assert_eq!(m.event_name(), Some("Ok")),
            other => panic!("expected the next message, got {other:?}"),
        }
    }

    /// Found by fuzzing: a message exactly at the limit must not depend on where a read splits its final CRLF.
    #[test]
    fn message_at_the_limit_is_kept_whatever_the_read_boundaries() {
        let mut input = b"Event: Edge\r\nPad: ".to_vec();
        let limit = 64;
        while input.len() < limit - 2 {
            input.push(b'x');
        }
        input.extend_from_slice(b"\r\n"); // exactly `limit` bytes of content
        input.extend_from_slice(b"\r\nEvent: Next\r\n\r\n");
        let whole = decode_all(&input, AmiCodec::without_banner().with_max_message_bytes(limit));
        let mut codec = AmiCodec::without_banner().with_max_message_bytes(limit);
        let mut buf = BytesMut::new();
        let mut bytewise = Vec::new();
        for b in &input {
            buf.extend_from_slice(&[*b]);
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                bytewise.push(f);
            }
        }
        assert_eq!(whole, bytewise);
        let names: Vec<_> = messages(&whole).iter().filter_map(|m| m.event_name()).collect();
        assert_eq!(names, ["Edge", "Next"]);
    }

    #[test]
    fn truncated_stream_is_reported_with_offset() {
        let frames = decode_all(b"Event: A\r\n\r\nEvent: B\r\nX: 1", AmiCodec::without_banner());
        assert_eq!(messages(&frames).len(), 1);
        assert_eq!(
            frames.last(),
            Some(&Frame::Skipped {
                offset: 12,
                bytes: 14,
                reason: SkipReason::Truncated
            })
        );
    }

    #[test]
    fn encoder_writes_crlf_and_refuses_injection() {
        let mut codec = AmiCodec::new();
        let mut out = BytesMut::new();
        let msg = Message::action("Ping").with("ActionID", "1");
        codec.encode(&msg, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&out[..], b"Action: Ping\r\nActionID: 1\r\n\r\n");
        let bad = Message::action("Ping").with("ActionID", "1\r\nAction: Logoff");
        assert!(codec.encode(&bad, &mut out).is_err());
    }
}
