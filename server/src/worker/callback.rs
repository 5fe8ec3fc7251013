//! y-redis's `YDOC_UPDATE_CALLBACK`: an HTTP endpoint told of every document a
//! worker stores changed.

use std::time::Duration;

use super::WorkerError;

/// How long one call of the update callback may take.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// y-redis's `YDOC_UPDATE_CALLBACK`: `PUT {url}/{room}` with a multipart field
/// `ydoc` holding the v2 state of a document that changed, each call limited to
/// [`CALLBACK_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct UpdateCallback {
    url: String,
    http: reqwest::Client,
}

impl UpdateCallback {
    /// The callback at base URL `url`; fails when no HTTP client can be made
    /// (no TLS backend, say), so a worker never runs without its time limit.
    pub fn new(url: &str) -> Result<Self, WorkerError> {
        let http = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .build()
            .map_err(|err| WorkerError::Callback(err.to_string()))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// Tell the callback about `update`, the whole document of `room`. A failure
    /// is logged and never blocks storing the document.
    pub(super) async fn notify(&self, room: &str, update: &[u8]) {
        let url = format!("{}/{room}", self.url);
        let form = reqwest::multipart::Form::new().part(
            "ydoc",
            reqwest::multipart::Part::bytes(update.to_vec()).file_name("ydoc"),
        );
        match self.http.put(&url).multipart(form).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(room = %crate::log_text::bounded(room), status = %response.status(), "update callback refused the document")
            }
            Err(err) => {
                tracing::warn!(room = %crate::log_text::bounded(room), err = %err.without_url(), "update callback failed")
            }
        }
    }
}
