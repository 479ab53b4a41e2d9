//! Feeds arbitrary bytes to the AMI decoder, cut into chunks by the input itself, and checks the invariants that
//! keep a session alive: no panic, bounded buffering, every byte accounted for, and the same frames whatever the
//! chunking.
#![no_main]

use ami::codec::decode_all;
use ami::AmiCodec;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const LIMIT: usize = 512;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so the fuzzer explores chunk boundaries too.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c).max(1), rest),
        None => return,
    };
    let mut codec = AmiCodec::new().with_max_message_bytes(LIMIT);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in body.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            frames.push(f);
        }
        assert!(buf.len() <= LIMIT + chunk, "buffer grew to {}", buf.len());
    }
    while let Ok(Some(f)) = codec.decode_eof(&mut buf) {
        frames.push(f);
    }
    assert_eq!(codec.offset(), body.len() as u64, "every byte is consumed");
    let whole = decode_all(body, AmiCodec::new().with_max_message_bytes(LIMIT));
    assert_eq!(frames, whole, "chunking changed the result");
});
