//! AMI decoder throughput on real traces recorded from the Asterisk test bed (the tracker's golden traces).
//! Criterion reports bytes/s for `decode_bytes` and messages/s for `decode_messages`; both decode every trace
//! from a fresh codec, the way a live session would.

use std::path::PathBuf;

use ami::codec::decode_all;
use ami::{AmiCodec, Frame};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn traces() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tracker/tests/traces");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "ami") {
                if let Ok(bytes) = std::fs::read(&path) {
                    let name = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    out.push((name, bytes));
                }
            }
        }
    }
    out.sort();
    out
}

fn decode(c: &mut Criterion) {
    let traces = traces();
    assert!(
        !traces.is_empty(),
        "no recorded traces under crates/tracker/tests/traces (record them with the test bed first)"
    );
    let total_bytes: usize = traces.iter().map(|(_, b)| b.len()).sum();
    let total_messages: usize = traces
        .iter()
        .map(|(_, b)| {
            decode_all(b, AmiCodec::new())
                .iter()
                .filter(|f| matches!(f, Frame::Message(_)))
                .count()
        })
        .sum();
    eprintln!(
        "{} traces, {} bytes, {} messages",
        traces.len(),
        total_bytes,
        total_messages
    );
    let run_all = || {
        let mut n = 0usize;
        for (_, bytes) in &traces {
            n += decode_all(std::hint::black_box(bytes), AmiCodec::new()).len();
        }
        n
    };
    let mut group = c.benchmark_group("ami_decoder");
    group.throughput(Throughput::Bytes(total_bytes as u64));
    group.bench_function(BenchmarkId::new("decode_bytes", "all_traces"), |b| b.iter(run_all));
    group.throughput(Throughput::Elements(total_messages as u64));
    group.bench_function(BenchmarkId::new("decode_messages", "all_traces"), |b| b.iter(run_all));
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
