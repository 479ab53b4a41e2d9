//! Events per second through the tracker.
//!
//! `cargo bench -p tracker --bench throughput`

#![allow(dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/scenarios/scripts.rs"]
mod scripts;
#[path = "support/stream.rs"]
mod stream;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");
    for calls in [100usize, 1000] {
        let messages = stream::concurrent_calls(calls, stream::Cut::Whole);
        group.throughput(Throughput::Elements(messages.len() as u64));
        group.bench_function(format!("{calls}_concurrent_calls_{}_events", messages.len()), |b| {
            b.iter_batched(
                common::tracker,
                |mut t| {
                    let mut out = Vec::new();
                    let mut produced = 0usize;
                    for m in &messages {
                        t.handle_into(m, None, &mut out);
                        produced += out.len();
                        out.clear();
                    }
                    assert_eq!(t.live_calls(), 0);
                    produced
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
