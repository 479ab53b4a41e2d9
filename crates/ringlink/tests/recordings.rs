//! Recordings reach Bitrix24 byte for byte, inline (base64), through the two-step `uploadUrl` upload, and as a
//! signed link to the admin UI's `/records/` that Bitrix24 downloads.

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{call_id, E2e, WAIT};
use testbed::scenarios;

/// S1 with a given inline limit; returns (the attachRecord request, the stored file bytes, the local file bytes).
async fn s1_recording(inline_max_bytes: u64) -> (b24emu::RecordedRequest, Vec<u8>, Vec<u8>) {
    s1_recording_with(&[("RINGLINK__RECORDINGS__INLINE_MAX_BYTES", inline_max_bytes.to_string())]).await
}

/// S1 with settings from the environment.
async fn s1_recording_with(env: &[(&str, String)]) -> (b24emu::RecordedRequest, Vec<u8>, Vec<u8>) {
    // Through the environment (inherited by the ringlink process): the harness's config already has [recordings].
    // Each test runs in its own process under nextest, so this does not leak into other tests.
    for (key, value) in env {
        std::env::set_var(key, value);
    }
    let e2e = E2e::start("").await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    let attach = e2e
        .wait_requests("telephony.externalcall.attachrecord", 1, WAIT)
        .await
        .remove(0);
    let register = e2e
        .wait_requests("telephony.externalcall.register", 1, WAIT)
        .await
        .remove(0);
    let state = e2e.emu.state();
    let file = state
        .files
        .iter()
        .find(|f| f.call_id.as_deref() == Some(call_id(&register).as_str()))
        .unwrap_or_else(|| panic!("a file stored for the call; files: {:?}", state.files))
        .clone();
    let stored = e2e.emu.file_content(file.id).expect("file content");
    let local = e2e
        .bed
        .recordings()
        .into_iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(file.name.as_str()))
        .map(|p| std::fs::read(p).expect("read local recording"))
        .unwrap_or_else(|| panic!("recording {} on the PBX: {:?}", file.name, e2e.bed.recordings()));
    e2e.stop().await;
    (attach, stored, local)
}

#[tokio::test]
async fn small_recording_goes_inline() {
    let (attach, stored, local) = s1_recording(50 * 1024 * 1024).await;
    assert!(
        attach.param("FILE_CONTENT").is_some(),
        "base64 in the request: {:?}",
        attach.params
    );
    assert!(!stored.is_empty());
    assert_eq!(stored, local, "the recording arrives byte for byte");
}

#[tokio::test]
async fn large_recording_uses_the_two_step_upload() {
    let (attach, stored, local) = s1_recording(1024).await;
    assert!(
        attach.param("FILE_CONTENT").is_none(),
        "no inline content: {:?}",
        attach.params
    );
    assert!(
        attach.response.get("result").and_then(|r| r.get("uploadUrl")).is_some(),
        "{:?}",
        attach.response
    );
    assert!(local.len() > 1024, "the recording is larger than the inline limit");
    assert_eq!(stored, local, "the recording arrives byte for byte");
}

#[tokio::test]
async fn recording_by_signed_link() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let (attach, stored, local) = s1_recording_with(&[
        ("RINGLINK__WEB__LISTEN", format!("127.0.0.1:{port}")),
        ("RINGLINK__RECORDINGS__LINK_BASE_URL", base.clone()),
    ])
    .await;
    let url = attach.param("RECORD_URL").and_then(|v| v.as_str().map(str::to_owned));
    let url = url.unwrap_or_else(|| panic!("a RECORD_URL: {:?}", attach.params));
    assert!(url.starts_with(&format!("{base}/records/")), "{url}");
    assert!(attach.param("FILE_CONTENT").is_none(), "{:?}", attach.params);
    assert_eq!(stored, local, "Bitrix24 downloaded the recording byte for byte");
}
