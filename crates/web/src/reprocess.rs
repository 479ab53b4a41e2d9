//! The timeline's "Re-process this call": the page asks the service, through the [`Reprocess`] port, to fill
//! what is missing of one call, and shows what it did.
//!
//! The service decides (this crate knows no CEL, tracker or engine): a call it still follows is left alone; a
//! call with no steps, or with a registration never finished, is planned again (from the PBX's CEL when
//! `[cel]` is configured, else from the journal) with the keys the live service gives its steps, so the outbox
//! takes only the steps it does not hold yet; steps that failed or were dropped are set to be sent again. A call
//! Bitrix24 already has whole changes nothing, and the page says so.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use maud::{html, Markup};

use crate::i18n::Lang;
use crate::server::lock;

/// What re-processing a call gives back; the error is a sentence naming what went wrong.
pub type ReprocessFuture = Pin<Box<dyn Future<Output = Result<Reprocessed, String>> + Send>>;

/// The service's re-processing of one call (see the module's documentation).
pub trait Reprocess: Send + Sync {
    fn reprocess(&self, call: &str) -> ReprocessFuture;
}

/// The port as the UI holds it.
pub type SharedReprocess = Arc<dyn Reprocess>;

/// Where the missing steps were planned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The PBX's CEL (`[cel]`).
    Cel,
    /// What ringlink's journal holds of the call.
    Journal,
}

/// What a re-process did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reprocessed {
    /// The call is still going on: nothing was changed (the live service registers it).
    pub live: bool,
    /// Where the call was planned again from, when something was missing.
    pub source: Option<Source>,
    /// The kinds of the steps added (`register`, `finish`, …), in order.
    pub added: Vec<String>,
    /// Failed or dropped steps set to be sent again.
    pub reset: u64,
    /// Steps waiting to be sent (pending or being sent) after it.
    pub waiting: u64,
    /// The service's word on why nothing could be planned, when that is the case.
    pub note: Option<String>,
}

impl Reprocessed {
    /// Nothing was added or set to be sent again.
    pub fn changed_nothing(&self) -> bool {
        self.added.is_empty() && self.reset == 0
    }
}

/// The last result per session and call, shown once on the timeline after the POST's redirect.
#[derive(Default)]
pub(crate) struct Results(Mutex<HashMap<(String, String), Result<Reprocessed, String>>>);

impl Results {
    pub(crate) fn put(&self, session: &str, call: &str, result: Result<Reprocessed, String>) {
        let mut results = lock(&self.0);
        // A handful of admins pressing a button: a long-running service forgets results nobody came back for.
        if results.len() > 256 {
            results.clear();
        }
        results.insert((session.to_owned(), call.to_owned()), result);
    }

    pub(crate) fn take(&self, session: &str, call: &str) -> Option<Result<Reprocessed, String>> {
        lock(&self.0).remove(&(session.to_owned(), call.to_owned()))
    }
}

/// The timeline's notice for a result.
pub(crate) fn notice(l: Lang, result: &Result<Reprocessed, String>) -> Markup {
    let r = match result {
        Ok(r) => r,
        Err(e) => return html! { div.card.error id="reprocessed" { p { (l.t("rp_failed")) ": " (e) } } },
    };
    let source = match r.source {
        Some(Source::Cel) => Some(l.t("rp_from_cel")),
        Some(Source::Journal) => Some(l.t("rp_from_journal")),
        None => None,
    };
    html! {
        div.card id="reprocessed" data-changed=(if r.changed_nothing() { "no" } else { "yes" }) {
            @if r.live {
                p { (l.t("rp_live")) }
            } @else if r.changed_nothing() && r.waiting == 0 && r.note.is_none() {
                p { (l.t("rp_complete")) }
            } @else {
                @if let Some(source) = source { p { (source) } }
                @if !r.added.is_empty() {
                    p { (l.t("rp_added")) ": " @for kind in &r.added { code { (kind) } " " } }
                }
                @if r.reset > 0 { p { (r.reset) " " (l.t("retried")) } }
                @if r.changed_nothing() { p { (l.t("rp_nothing_added")) } }
                @if r.waiting > 0 { p { (r.waiting) " " (l.t("rp_waiting")) } }
            }
            @if let Some(note) = &r.note { p.muted { (note) } }
        }
    }
}
