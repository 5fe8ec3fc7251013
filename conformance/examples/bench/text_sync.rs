//! Bytes on the wire of the initial sync of a compressible document: a text of
//! about 1.28 MB of prose, received by a Node `ws` client that offers
//! permessage-deflate as browsers do.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::Member;
use serde::Deserialize;
use yrs::{Doc, Text, Transact};

use crate::client;

/// Bytes of prose in the document.
const TEXT_BYTES: usize = 1_280_000;

/// What the client saw.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub bytes_read: u64,
    pub document_bytes: u64,
    pub extensions: String,
}

/// Prose: words of a small vocabulary with punctuation, inserted a paragraph
/// at a time as an editor would.
fn text_update() -> Vec<u8> {
    let words = [
        "the", "room", "document", "was", "edited", "by", "every", "client", "while", "server",
        "kept", "its", "stream", "short", "and", "worker", "stored", "state", "in", "storage",
    ];
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    let mut n: u64 = 12_345;
    let mut written = 0;
    while written < TEXT_BYTES {
        let mut paragraph = String::new();
        while paragraph.len() < 600 {
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            paragraph.push_str(words[(n >> 33) as usize % words.len()]);
            paragraph.push(if (n >> 20).is_multiple_of(11) {
                '.'
            } else {
                ' '
            });
        }
        paragraph.push('\n');
        written += paragraph.len();
        let at = text.len(&txn);
        text.insert(&mut txn, at, &paragraph);
    }
    txn.encode_update_v1()
}

pub async fn run(server: &Member) -> Result<Outcome> {
    let url = server.url("text-sync");
    let update = text_update();
    let mut writer = client::write_document(&url, &update, Duration::from_secs(60)).await?;
    let dir = conformance::paths::js_dir()?;
    let output = tokio::process::Command::new("node")
        .arg("bench/sync_bytes.js")
        .arg(&url)
        .current_dir(&dir)
        .output()
        .await
        .context("running node bench/sync_bytes.js")?;
    let _ = writer.close(None).await;
    if !output.status.success() {
        bail!(
            "sync_bytes.js failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let outcome: Outcome = serde_json::from_slice(&output.stdout)?;
    Ok(outcome)
}
