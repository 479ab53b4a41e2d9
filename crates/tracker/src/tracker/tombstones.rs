//! Keys remembered after their channel hung up or their call ended (the tracker's, and the engine's ended
//! calls), so that the late events Asterisk still sends about them (CEL `HANGUP`/`CHAN_END`/`LINKEDID_END` on
//! another Stasis topic than the AMI `Hangup`, the old blocks of a transfer or pickup, a `CoreShowChannels` list
//! taken before the hang-up) are ignored instead of starting a ghost call. They are the only state an ended call
//! leaves behind, so they are kept small (Asterisk's own `<epoch>.<counter>` uniqueids as two numbers, no
//! allocation) and bounded twice: by age (the tracker's `forget_after_secs`, purged at each
//! [`crate::Tracker::tick`]) and by count ([`REMEMBERED_KEYS_CAP`] per kind in the tracker, oldest first).

use std::collections::{HashMap, VecDeque};

use crate::time::Timestamp;

/// The most keys each kind (hung-up channels, ended calls) remembers, whatever `forget_after_secs` says: the
/// oldest are forgotten first. 25,000 ended calls are an hour at 7 new calls/s, far more than the minutes late
/// events need, and keep the tombstones under ~5 MB at any load.
pub const REMEMBERED_KEYS_CAP: usize = 25_000;

/// A uniqueid or linkedid as remembered: Asterisk's `"%li.%d"` (`1550838797.13013`) as its two numbers, any
/// other form (`<systemname>-<epoch>.<counter>`, an originate's `ChannelId`) as its text. Equal keys have equal
/// forms: only the exact decimal spelling (no sign, no leading zero) becomes numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Stamp { epoch: u32, counter: u32 },
    Text(Box<str>),
}

impl Key {
    fn new(text: &str) -> Self {
        fn number(digits: &str) -> Option<u32> {
            let canonical = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits.len() == 1 || !digits.starts_with('0'));
            canonical.then(|| digits.parse().ok()).flatten()
        }
        match text.split_once('.').and_then(|(e, c)| Some((number(e)?, number(c)?))) {
            Some((epoch, counter)) => Key::Stamp { epoch, counter },
            None => Key::Text(text.into()),
        }
    }

    /// The key as Asterisk wrote it.
    fn text(&self) -> String {
        match self {
            Key::Stamp { epoch, counter } => format!("{epoch}.{counter}"),
            Key::Text(text) => text.to_string(),
        }
    }
}

/// When a key was remembered and the call it belonged to.
#[derive(Debug)]
struct Remembered {
    at: Timestamp,
    call: Key,
}

/// Remembered keys of one kind (each with the call it belonged to), oldest first, at most `cap` of them.
#[derive(Debug)]
pub struct RememberedKeys {
    cap: usize,
    map: HashMap<Key, Remembered>,
    /// (when, key) in the order remembered; an entry whose time no longer matches the map's (the key was
    /// remembered again later) is stale and skipped.
    order: VecDeque<(Timestamp, Key)>,
}

impl RememberedKeys {
    /// Remembers at most `cap` keys.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `key` (of call `call`) from `at`; forgets the oldest keys beyond the cap.
    pub fn insert(&mut self, key: &str, call: &str, at: Timestamp) {
        let key = Key::new(key);
        let call = if call == key.text() {
            key.clone()
        } else {
            Key::new(call)
        };
        self.map.insert(key.clone(), Remembered { at, call });
        self.order.push_back((at, key));
        while self.map.len() > self.cap {
            self.forget_oldest();
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(&Key::new(key))
    }

    /// The call a remembered key belonged to.
    pub fn call_of(&self, key: &str) -> Option<String> {
        self.map.get(&Key::new(key)).map(|r| r.call.text())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets the keys remembered before `limit`.
    pub fn purge_before(&mut self, limit: Timestamp) {
        while self.order.front().is_some_and(|(at, _)| *at < limit) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front() {
            // A key remembered again later keeps its newer entry.
            if self.map.get(&key).is_some_and(|r| r.at == at) {
                self.map.remove(&key);
            }
        }
    }

    /// After a burst the map and queue keep their peak capacity; give most of it back once they are mostly empty.
    pub fn release_spare_capacity(&mut self) {
        if self.map.capacity() > 4 * self.map.len() + 256 {
            self.map.shrink_to(2 * self.map.len());
        }
        if self.order.capacity() > 4 * self.order.len() + 256 {
            self.order.shrink_to(2 * self.order.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asterisk_uniqueids_are_kept_as_numbers_and_anything_else_as_text() {
        assert_eq!(
            Key::new("1550838797.13013"),
            Key::Stamp {
                epoch: 1_550_838_797,
                counter: 13013
            }
        );
        for text in [
            "pbx-1550838797.13013",
            "1550838797.013",
            "01.1",
            "1.",
            ".1",
            "+1.2",
            "99999999999.1",
            "x",
        ] {
            assert_eq!(Key::new(text), Key::Text(text.into()), "{text}");
            assert_eq!(Key::new(text).text(), text);
        }
        assert_eq!(Key::new("0.0").text(), "0.0");
        assert_eq!(Key::new("1550838797.13013").text(), "1550838797.13013");
    }

    #[test]
    fn a_stamp_key_is_no_bigger_than_a_boxed_text() {
        assert!(std::mem::size_of::<Key>() <= 24, "{}", std::mem::size_of::<Key>());
    }

    #[test]
    fn a_key_remembered_again_is_forgotten_by_its_newer_time() {
        let mut t = RememberedKeys::new(10);
        t.insert("1.1", "1.1", Timestamp::from_secs(10));
        t.insert("1.1", "1.1", Timestamp::from_secs(20));
        t.purge_before(Timestamp::from_secs(15));
        assert!(t.contains("1.1"), "the newer entry stays");
        t.purge_before(Timestamp::from_secs(25));
        assert!(!t.contains("1.1"));
        assert_eq!(t.order.len(), 0, "no stale entry is left queued");
    }
}
