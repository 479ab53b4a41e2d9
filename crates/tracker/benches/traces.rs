//! Codec + tracker on the real traces recorded from the Asterisk test bed: bytes in, call events out, the way
//! `ringlink run` sees a live session.
//!
//! `cargo bench -p tracker --bench traces`

use std::path::PathBuf;

use ami::codec::decode_all;
use ami::{AmiCodec, Frame};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracker::{Tracker, TrackerConfig};

fn config() -> TrackerConfig {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testbed/ringlink.toml"))
        .expect("testbed/ringlink.toml");
    let table: toml::Table = text.parse().expect("valid TOML");
    table
        .get("tracker")
        .cloned()
        .expect("[tracker] section")
        .try_into()
        .expect("tracker settings")
}

fn traces() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("traces dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ami"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).expect("trace")).collect()
}

/// One new tracker per trace, built outside the measurement (a service builds one per run).
fn fresh_trackers(n: usize, config: &TrackerConfig) -> Vec<Tracker> {
    (0..n)
        .map(|_| Tracker::new(config.clone()).expect("valid settings"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let traces = traces();
    let config = config();
    let events: usize = traces
        .iter()
        .map(|t| {
            decode_all(t, AmiCodec::new())
                .iter()
                .filter(|f| matches!(f, Frame::Message(m) if m.event_name().is_some()))
                .count()
        })
        .sum();
    let bytes: usize = traces.iter().map(Vec::len).sum();
    eprintln!("{} traces, {bytes} bytes, {events} AMI events", traces.len());
    let mut group = c.benchmark_group("codec_and_tracker");
    group.throughput(Throughput::Elements(events as u64));
    // Bytes → codec → tracker; trackers are built outside the measurement (a service builds one per run).
    group.bench_function("real_traces", |b| {
        b.iter_batched(
            || fresh_trackers(traces.len(), &config),
            |mut trackers| {
                let mut produced = 0usize;
                let mut out = Vec::new();
                for (tracker, trace) in trackers.iter_mut().zip(&traces) {
                    for frame in decode_all(std::hint::black_box(trace), AmiCodec::new()) {
                        if let Frame::Message(m) = frame {
                            tracker.handle_into(&m, None, &mut out);
                            produced += out.len();
                            out.clear();
                        }
                    }
                }
                produced
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // The tracker alone: messages decoded and trackers built outside the measurement.
    let decoded: Vec<Vec<ami::Message>> = traces
        .iter()
        .map(|t| {
            decode_all(t, AmiCodec::new())
                .into_iter()
                .filter_map(|f| match f {
                    Frame::Message(m) => Some(m),
                    _ => None,
                })
                .collect()
        })
        .collect();
    group.bench_function("tracker_only", |b| {
        b.iter_batched(
            || fresh_trackers(decoded.len(), &config),
            |mut trackers| {
                let mut produced = 0usize;
                let mut out = Vec::new();
                for (tracker, messages) in trackers.iter_mut().zip(&decoded) {
                    for m in messages {
                        tracker.handle_into(m, None, &mut out);
                        produced += out.len();
                        out.clear();
                    }
                }
                produced
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("tracker_new", |b| {
        b.iter(|| Tracker::new(config.clone()).expect("valid settings"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
