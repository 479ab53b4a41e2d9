//! The last log lines, kept in memory for the Logs page: a `tracing_subscriber` writer that the service adds
//! beside its own output. Secrets are masked as each line is stored (webhook secrets, `token=…`-style values,
//! the first-run setup code), so the page can never show one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use crate::pages::{mask_webhook, SECRET_KEYS};

/// How many lines `ringlink run` keeps for the Logs page.
pub const KEPT_LINES: usize = 2000;

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
}

/// The ring buffer of the last `capacity` lines; cheap to clone (shared).
#[derive(Clone)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<LogLine>>>,
    capacity: usize,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(4096)))),
            capacity: capacity.max(1),
        }
    }

    /// Stores one formatted event (it may span lines), masked; the oldest goes when the buffer is full.
    pub fn push(&self, level: Level, text: &str) {
        let text = mask_line(text.trim_end());
        if text.is_empty() {
            return;
        }
        let mut lines = crate::server::lock(&self.lines);
        while lines.len() >= self.capacity {
            lines.pop_front();
        }
        lines.push_back(LogLine { level, text });
    }

    /// The newest `limit` lines at `min` or more severe, oldest first.
    pub fn lines(&self, min: Level, limit: usize) -> Vec<LogLine> {
        let lines = crate::server::lock(&self.lines);
        // `Level`'s order: ERROR < WARN < INFO < DEBUG < TRACE ("more verbose is greater").
        let mut picked: Vec<LogLine> = lines
            .iter()
            .rev()
            .filter(|l| l.level <= min)
            .take(limit)
            .cloned()
            .collect();
        picked.reverse();
        picked
    }
}

/// The writer of one event: collects what the formatter writes and stores it when dropped.
pub struct LogWriter {
    buffer: LogBuffer,
    level: Level,
    bytes: Vec<u8>,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One event is small; a runaway one is cut rather than kept whole.
        let room = (16 * 1024usize).saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.buffer.push(self.level, &String::from_utf8_lossy(&self.bytes));
        }
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.writer(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogWriter {
        self.writer(*meta.level())
    }
}

impl LogBuffer {
    fn writer(&self, level: Level) -> LogWriter {
        LogWriter {
            buffer: self.clone(),
            level,
            bytes: Vec::new(),
        }
    }
}

/// Keys whose `key=value` / `key: value` / `"key":"value"` values are hidden in a log line.
fn secret_key(key: &str) -> bool {
    let key = key.trim_matches(|c: char| c == '"' || c == '\'' || c == '[' || c == ']');
    let last = key.rsplit(['.', '[']).next().unwrap_or(key);
    SECRET_KEYS.iter().any(|s| last.eq_ignore_ascii_case(s))
        || ["setup_code", "webhook_url", "client_secret"]
            .iter()
            .any(|s| last.eq_ignore_ascii_case(s))
}

/// A log line with secrets replaced by `***`.
pub fn mask_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['=', ':']) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        out.push_str(&after[..1]);
        let after = &after[1..];
        let key_start = before
            .rfind(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '&' || c == '?')
            .map(|i| i + 1)
            .unwrap_or(0);
        if !secret_key(&before[key_start..]) {
            rest = after;
            continue;
        }
        let spaces = after.len() - after.trim_start().len();
        out.push_str(&after[..spaces]);
        let value = &after[spaces..];
        let end = match value.strip_prefix('"') {
            Some(quoted) => quoted.find('"').map(|i| i + 2).unwrap_or(value.len()),
            None => value
                .find(|c: char| c.is_whitespace() || c == ',' || c == '&' || c == '}')
                .unwrap_or(value.len()),
        };
        out.push_str("***");
        rest = &value[end..];
    }
    out.push_str(rest);
    mask_webhook(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_buffer() {
        for (line, secret) in [
            (
                "WARN ringlink: no admin password yet setup_code=abc123def456",
                "abc123def456",
            ),
            (
                "DEBUG bitrix24: POST https://p.bitrix24.ru/rest/1/s3cr3tw3bh00k/user.get",
                "s3cr3tw3bh00k",
            ),
            ("INFO x: refreshed access_token=t0k-a refresh_token: t0k-b ok", "t0k"),
            (r#"DEBUG x: body {"auth":"authtoken9","PHONE":"+7900"}"#, "authtoken9"),
            ("DEBUG x: query ?auth=qs-token&x=1", "qs-token"),
        ] {
            let masked = mask_line(line);
            assert!(!masked.contains(secret), "{masked}");
            assert!(masked.contains("***"), "{masked}");
        }
        let plain = "INFO ringlink: call 1700000000.1 registered for user 1 at 10:15:02";
        assert_eq!(mask_line(plain), plain);
    }

    #[test]
    fn the_buffer_keeps_the_newest_lines_and_filters_by_level() {
        let buffer = LogBuffer::new(3);
        for (level, text) in [
            (Level::INFO, "one"),
            (Level::DEBUG, "two"),
            (Level::WARN, "three"),
            (Level::ERROR, "four"),
        ] {
            buffer.push(level, text);
        }
        let texts = |min, limit| -> Vec<String> { buffer.lines(min, limit).into_iter().map(|l| l.text).collect() };
        assert_eq!(texts(Level::TRACE, 10), ["two", "three", "four"]);
        assert_eq!(texts(Level::WARN, 10), ["three", "four"]);
        assert_eq!(texts(Level::TRACE, 1), ["four"]);
        // What a formatter writes for one event becomes one line when its writer is dropped.
        let mut writer = buffer.make_writer();
        std::io::Write::write_all(&mut writer, b"INFO five ").expect("write");
        std::io::Write::write_all(&mut writer, b"password=hunter2\n").expect("write");
        drop(writer);
        assert_eq!(texts(Level::INFO, 1), ["INFO five password=***"]);
    }
}
