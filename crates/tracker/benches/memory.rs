//! Memory per live call: 1,000 simultaneous calls (every scenario, each stopped before its first hang-up), heap
//! bytes counted by a counting global allocator.
//!
//! `cargo bench -p tracker --bench memory`

#![allow(dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/scenarios/scripts.rs"]
mod scripts;
#[path = "support/stream.rs"]
mod stream;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once too, which is fine.
    let calls = 1000;
    let messages = stream::concurrent_calls(calls, stream::Cut::BeforeHangup);
    let before = live();
    let mut tracker = common::tracker();
    let mut out = Vec::new();
    for m in &messages {
        tracker.handle_into(m, None, &mut out);
        out.clear();
    }
    out.shrink_to_fit();
    let held = live().saturating_sub(before);
    let live_calls = tracker.live_calls();
    println!(
        "tracker memory: {live_calls} live calls, {} live channels, {held} bytes held, {} bytes per call ({} events fed)",
        tracker.live_channels(),
        held / live_calls.max(1),
        messages.len()
    );

    // Ended calls must not leave state behind beyond the bounded tombstones.
    let whole = stream::concurrent_calls(calls, stream::Cut::Whole);
    let before = live();
    let mut tracker = common::tracker();
    for m in &whole {
        tracker.handle_into(m, None, &mut out);
        out.clear();
    }
    let after_end = live().saturating_sub(before);
    // A tick that forgets nothing yet gives back the live maps' spare capacity: what is left is the tombstones.
    let _ = tracker.tick(tracker::Timestamp::from_secs(common::T0 + 60));
    let remembered = tracker.remembered_keys();
    let after_release = live().saturating_sub(before);
    let _ = tracker.tick(tracker::Timestamp::from_secs(common::T0 + 2 * 3600));
    let after_forget = live().saturating_sub(before);
    println!(
        "after {calls} calls ended: {} live calls, {after_end} bytes held, {after_release} once spare capacity is \
         given back: {remembered} remembered keys (tombstones of ended calls and channels), {} bytes each; \
         {after_forget} bytes after they are forgotten",
        tracker.live_calls(),
        after_release.saturating_sub(after_forget) / remembered.max(1)
    );
}
