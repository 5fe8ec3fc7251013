//! What the HTTP object stores (S3, GCS) share: one client setup and a retry loop.

use std::time::Duration;

use reqwest::StatusCode;

use super::StorageError;

/// How long opening a TCP connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one whole request may take (uploading or downloading a large document).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Attempts for ordinary operations: the first try and two retries.
pub(super) const ATTEMPTS: usize = 3;

/// A client with connect and request timeouts, TLS through rustls.
pub(super) fn client() -> Result<reqwest::Client, StorageError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| StorageError::Config(format!("cannot create HTTP client: {e}")))
}

/// A response read in full.
pub(super) struct Reply {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

/// Whether a status is worth another attempt: throttling and server errors.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Send the request `build` makes (called again for every attempt, so signatures
/// and tokens are fresh) and read the whole body. Transport errors, 429 and 5xx are
/// retried with backoff, up to `attempts` tries in all; any other status is
/// returned for the caller to interpret. `what` names the operation in errors.
pub(super) async fn send<F, Fut>(
    what: &str,
    attempts: usize,
    build: F,
) -> Result<Reply, StorageError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::RequestBuilder, StorageError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let outcome = match build().await?.send().await {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(body) => Ok(Reply { status, body }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(reply) if !retryable(reply.status) || attempt >= attempts => return Ok(reply),
            Ok(reply) => {
                tracing::debug!(what, status = %reply.status, attempt, "storage request retried");
            }
            Err(e) if attempt >= attempts => {
                return Err(StorageError::Backend(format!(
                    "{what}: {}",
                    error_chain(&e)
                )));
            }
            Err(e) => {
                tracing::debug!(what, error = %error_chain(&e), attempt, "storage request retried");
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 3;
        attempt += 1;
    }
}

/// An error with its causes ("error sending request: connection refused"), since
/// reqwest's top-level message alone rarely says what went wrong.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A short, printable excerpt of an error body for messages.
pub(super) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
