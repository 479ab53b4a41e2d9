//! The AMI message: an ordered multi-map of `Key: Value` lines.
//!
//! AMI keys are case-insensitive and may repeat (`Variable`, `ChanVariable`, `Output`), and the order of the lines
//! matters to some consumers, so a message keeps its lines exactly as they arrived and looks keys up by a
//! case-insensitive scan (messages are short: a scan beats hashing here).

use std::fmt;

/// One header line. `key` is `None` for a line that had no colon (tolerated, e.g. legacy `Response: Follows` output).
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Option<String>,
    pub value: String,
}

/// An AMI message (action, response or event), lines in arrival order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    headers: Vec<Header>,
}

/// What a message is, judged by its first header as the protocol convention says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind<'a> {
    Event(&'a str),
    Response(&'a str),
    Action(&'a str),
    Other,
}

impl Message {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new action message: `Action: <name>`.
    pub fn action(name: &str) -> Self {
        Self::new().with("Action", name)
    }

    /// Builder form of [`Message::push`].
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.push(key, value);
        self
    }

    /// Appends a header, keeping any earlier header with the same key.
    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.headers.push(Header {
            key: Some(key.to_owned()),
            value: value.into(),
        });
    }

    /// Appends a line that had no colon.
    pub fn push_bare_line(&mut self, line: impl Into<String>) {
        self.headers.push(Header {
            key: None,
            value: line.into(),
        });
    }

    /// Replaces the value of the first header named `key` (case-insensitive), or appends it.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        match self
            .headers
            .iter_mut()
            .find(|h| h.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
        {
            Some(h) => h.value = value.into(),
            None => self.push(key, value),
        }
    }

    /// First value of `key`, compared case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| match &h.key {
            Some(k) if k.eq_ignore_ascii_case(key) => Some(h.value.as_str()),
            _ => None,
        })
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter_map(move |h| match &h.key {
            Some(k) if k.eq_ignore_ascii_case(key) => Some(h.value.as_str()),
            _ => None,
        })
    }

    /// Keyed headers in order as `(key, value)`; colon-less lines are skipped.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|h| h.key.as_deref().map(|k| (k, h.value.as_str())))
    }

    /// All lines including colon-less ones.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Colon-less lines (legacy command output), in order.
    pub fn bare_lines(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(|h| h.key.is_none())
            .map(|h| h.value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Classifies by the first keyed header. `OriginateResponse` is an event that also carries `Response:`,
    /// which is why only the first header counts.
    pub fn kind(&self) -> MessageKind<'_> {
        match self.iter().next() {
            Some((k, v)) if k.eq_ignore_ascii_case("Event") => MessageKind::Event(v),
            Some((k, v)) if k.eq_ignore_ascii_case("Response") => MessageKind::Response(v),
            Some((k, v)) if k.eq_ignore_ascii_case("Action") => MessageKind::Action(v),
            _ => MessageKind::Other,
        }
    }

    /// The event name if this is an event.
    pub fn event_name(&self) -> Option<&str> {
        match self.kind() {
            MessageKind::Event(name) => Some(name),
            _ => None,
        }
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// True for `Response: Success` (and the legacy `Response: Follows`).
    pub fn is_success(&self) -> bool {
        matches!(self.kind(), MessageKind::Response(r)
            if r.eq_ignore_ascii_case("Success") || r.eq_ignore_ascii_case("Follows"))
    }

    /// A header value with AMI's C escapes (`\'`, `\"`, `\\`, `\n`, …) undone. Asterisk escapes CallerIDName,
    /// ConnectedLineName, ChanVariable and VarSet `Value` this way (`ast_escape_c_alloc`).
    pub fn get_unescaped(&self, key: &str) -> Option<String> {
        self.get(key).map(unescape_c)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_list();
        for h in &self.headers {
            match &h.key {
                // Never print a secret that is part of a Login action.
                Some(k) if k.eq_ignore_ascii_case("Secret") || k.eq_ignore_ascii_case("Key") => {
                    map.entry(&format_args!("{k}: ***"));
                }
                Some(k) => {
                    map.entry(&format_args!("{k}: {}", h.value));
                }
                None => {
                    map.entry(&format_args!("{}", h.value));
                }
            }
        }
        map.finish()
    }
}

/// Undoes `ast_escape_c`: `\a \b \f \n \r \t \v \\ \' \" \?`. An unknown escape keeps both characters, so a
/// value that was never escaped (e.g. a Windows-style path) comes through unchanged.
pub fn unescape_c(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('a') => out.push('\u{07}'),
            Some('b') => out.push('\u{08}'),
            Some('f') => out.push('\u{0c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{0b}'),
            Some(e @ ('\\' | '\'' | '"' | '?')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_repeats_keep_order() {
        let m = Message::new()
            .with("Event", "CEL")
            .with("UniqueID", "1.1")
            .with("Variable", "a=1")
            .with("variable", "b=2");
        assert_eq!(m.get("uniqueid"), Some("1.1"));
        assert_eq!(m.get_all("VARIABLE").collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(m.event_name(), Some("CEL"));
    }

    #[test]
    fn originate_response_is_an_event() {
        let m = Message::new()
            .with("Event", "OriginateResponse")
            .with("Response", "Failure");
        assert_eq!(m.kind(), MessageKind::Event("OriginateResponse"));
    }

    #[test]
    fn set_replaces_first_or_appends() {
        let mut m = Message::action("Login").with("Username", "a");
        m.set("username", "b");
        m.set("Secret", "s");
        assert_eq!(m.get("Username"), Some("b"));
        assert_eq!(m.len(), 3);
        assert!(!format!("{m:?}").contains("s\""), "secret hidden: {m:?}");
    }

    #[test]
    fn c_escapes_are_undone() {
        assert_eq!(unescape_c(r"O\'Brien"), "O'Brien");
        assert_eq!(unescape_c(r#"say \"hi\"\n"#), "say \"hi\"\n");
        assert_eq!(unescape_c(r"C:\path\x"), r"C:\path\x");
        assert_eq!(unescape_c(r"a\\b"), r"a\b");
        assert_eq!(unescape_c("trailing\\"), "trailing\\");
    }
}
