//! Recordings: attached once their file is complete — uploaded alone, or put in the `batch` right after the
//! call's finish.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use engine::StepKind;
use serde_json::{json, Value};
use store::{Step, Timestamp};

use super::{classify, Outcome, Worker};

/// Recordings put in a `batch` beside other commands stay this small (base64 makes them a third bigger);
/// larger ones are uploaded alone.
const BATCHED_RECORD_MAX_BYTES: u64 = 1024 * 1024;

/// Whether a recording can be attached now.
pub(super) enum Recording {
    Ready {
        path: PathBuf,
        filename: String,
        bytes: u64,
    },
    /// Still being written (MixMonitor holds it): complete in `after` at the earliest.
    Settling { after: Duration },
    /// Missing (yet or for good), or not a file Bitrix24 takes.
    Unusable(Outcome),
}

impl Worker {
    /// A signed link to the recording at the admin UI's `/records/`.
    fn record_link(&self, step: &Step, base: &str) -> String {
        let ttl = Duration::from_secs(self.recordings.link_ttl_hours.saturating_mul(3600));
        let token = self.shared.record_links.sign(
            &step.call_key,
            &step.idempotency_key,
            Timestamp::now().saturating_add(ttl),
        );
        format!("{}/records/{token}", base.trim_end_matches('/'))
    }

    /// Whether the recording at `pbx_path` (of step `step`) can be attached now.
    pub(super) fn recording(&self, step: &Step, pbx_path: &str) -> Recording {
        let path = self.recordings.local_path(pbx_path);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                let age = Timestamp::now().as_micros().saturating_sub(step.created_at.as_micros()) / 1_000_000;
                if age as u64 > self.recordings.missing_timeout_secs {
                    return Recording::Unusable(Outcome::Failed(format!(
                        "recording {} not found: {e}",
                        path.display()
                    )));
                }
                return Recording::Unusable(Outcome::Retry {
                    error: format!("recording {} not there yet: {e}", path.display()),
                    after: Duration::from_secs(5),
                });
            }
        };
        // Complete means MixMonitor has let go: the size has not changed for `settle_secs`.
        let settle = Duration::from_secs_f64(self.recordings.settle_secs);
        let quiet_for = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if quiet_for < settle {
            return Recording::Settling {
                after: settle.saturating_sub(quiet_for).max(Duration::from_millis(200)),
            };
        }
        let Some(filename) = upload_name(&path) else {
            return Recording::Unusable(Outcome::Failed(format!(
                "{} is not a wav or mp3 file (Bitrix24 accepts only those)",
                path.display()
            )));
        };
        if meta.len() == 0 {
            return Recording::Unusable(Outcome::Failed(format!("{} is empty", path.display())));
        }
        Recording::Ready {
            path,
            filename,
            bytes: meta.len(),
        }
    }

    /// The `attachRecord` command that goes in a `batch` right after the call's finish, with what to add to its
    /// result; `None` when the file is better uploaded alone (too big for one request beside others).
    pub(super) async fn batched_record(
        &self,
        step: &Step,
        call_id: &str,
        ready: (&Path, &str, u64),
    ) -> Option<(Value, Value)> {
        let (path, filename, bytes) = ready;
        if let Some(base) = &self.recordings.link_base_url {
            let url = self.record_link(step, base);
            let params = json!({"CALL_ID": call_id, "FILENAME": filename, "RECORD_URL": url});
            return Some((params, json!({"mode": "link", "batch": true})));
        }
        if bytes > BATCHED_RECORD_MAX_BYTES.min(self.recordings.inline_max_bytes) {
            return None;
        }
        let content = tokio::fs::read(path).await.ok()?;
        let params = json!({
            "CALL_ID": call_id,
            "FILENAME": filename,
            "FILE_CONTENT": base64::engine::general_purpose::STANDARD.encode(content),
        });
        Some((params, json!({"mode": "inline", "bytes": bytes, "batch": true})))
    }

    pub(super) async fn attach_record(&self, step: &Step, call_id: &str, pbx_path: &str) -> Outcome {
        let (path, filename, bytes) = match self.recording(step, pbx_path) {
            Recording::Ready { path, filename, bytes } => (path, filename, bytes),
            Recording::Settling { after } => {
                return Outcome::Retry {
                    error: "recording still being written".into(),
                    after,
                }
            }
            Recording::Unusable(outcome) => return outcome,
        };
        if let Some(base) = &self.recordings.link_base_url {
            return self.attach_record_link(step, call_id, &filename, base).await;
        }
        let content = match tokio::fs::read(&path).await {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Retry {
                    error: format!("cannot read {}: {e}", path.display()),
                    after: Duration::from_secs(5),
                }
            }
        };
        let result = if bytes <= self.recordings.inline_max_bytes {
            self.client
                .attach_record_base64(call_id, &filename, &content)
                .await
                .map(|file_id| json!({"FILE_ID": file_id, "mode": "inline", "bytes": bytes}))
        } else {
            self.client
                .attach_record_upload(call_id, &filename, content)
                .await
                .map(|r| json!({"upload": r, "mode": "upload", "bytes": bytes}))
        };
        classify("telephony.externalCall.attachRecord", result.as_ref(), None)
    }

    /// `attachRecord` with a signed link to the admin UI's `/records/`: Bitrix24 downloads the file itself.
    async fn attach_record_link(&self, step: &Step, call_id: &str, filename: &str, base: &str) -> Outcome {
        let url = self.record_link(step, base);
        let method = StepKind::AttachRecord.method();
        let params = json!({"CALL_ID": call_id, "FILENAME": filename, "RECORD_URL": url});
        let result = self.client.call(method, params).await;
        let result = result.map(|answer| json!({"answer": answer, "mode": "link"}));
        classify(method, result.as_ref(), None)
    }
}

/// The file name Bitrix24 gets: the recording's own, with a lower-case `wav`/`mp3` extension.
fn upload_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    matches!(ext.as_str(), "wav" | "mp3").then(|| format!("{stem}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wav_and_mp3_are_uploaded() {
        assert_eq!(upload_name(Path::new("/r/a-b.WAV")).as_deref(), Some("a-b.wav"));
        assert_eq!(upload_name(Path::new("/r/x.mp3")).as_deref(), Some("x.mp3"));
        assert_eq!(upload_name(Path::new("/r/x.gsm")), None);
        assert_eq!(upload_name(Path::new("/r/noext")), None);
    }
}
