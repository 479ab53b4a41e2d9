//! Property tests of the AMI codec: chunking never changes the result; encode → decode round-trips.

use ami::codec::decode_all;
use ami::{AmiCodec, Frame, Message};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,15}"
}

/// Values as Asterisk sends them: no line breaks, no leading blanks (the decoder skips those by design).
fn value() -> impl Strategy<Value = String> {
    "([^\r\n \t][^\r\n]{0,40})?"
}

fn message() -> impl Strategy<Value = Message> {
    (key(), value(), prop::collection::vec((key(), value()), 0..12)).prop_map(|(name, first, rest)| {
        let mut m = Message::new().with("Event", name);
        if !first.is_empty() {
            m.push("First", first);
        }
        for (k, v) in rest {
            m.push(&k, v);
        }
        m
    })
}

fn encode(messages: &[Message], crlf: bool) -> Vec<u8> {
    let mut codec = AmiCodec::new();
    let mut out = BytesMut::new();
    for m in messages {
        if codec.encode(m, &mut out).is_err() {
            panic!("generated message must encode: {m:?}");
        }
    }
    let bytes = out.to_vec();
    if crlf {
        bytes
    } else {
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n").into_bytes()
    }
}

/// Feeds `bytes` to a fresh codec in pieces cut at `cuts`.
fn decode_chunked(bytes: &[u8], cuts: &[usize], max: usize) -> Vec<Frame> {
    let mut codec = AmiCodec::without_banner().with_max_message_bytes(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    let mut start = 0;
    for p in points {
        buf.extend_from_slice(&bytes[start..p]);
        start = p;
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            frames.push(f);
        }
    }
    while let Ok(Some(f)) = codec.decode_eof(&mut buf) {
        frames.push(f);
    }
    frames
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(msgs in prop::collection::vec(message(), 1..8), crlf in any::<bool>()) {
        let bytes = encode(&msgs, crlf);
        let frames = decode_all(&bytes, AmiCodec::without_banner());
        let decoded: Vec<Message> = frames.into_iter().filter_map(|f| match f {
            Frame::Message(m) => Some(m),
            _ => None,
        }).collect();
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn any_cut_points_give_the_same_frames(
        msgs in prop::collection::vec(message(), 1..8),
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        small_limit in any::<bool>(),
    ) {
        let bytes = encode(&msgs, crlf);
        // With a small limit some messages are skipped; the skips must not depend on chunking either.
        let max = if small_limit { 200 } else { 1 << 20 };
        let whole = decode_chunked(&bytes, &[], max);
        let chunked = decode_chunked(&bytes, &cuts, max);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut codec = AmiCodec::new().with_max_message_bytes(256);
        let mut buf = BytesMut::new();
        for chunk in data.chunks(97) {
            buf.extend_from_slice(chunk);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            prop_assert!(buf.len() <= 256 + 97);
        }
        while let Ok(Some(_)) = codec.decode_eof(&mut buf) {}
        prop_assert_eq!(codec.offset(), data.len() as u64);
    }
}
