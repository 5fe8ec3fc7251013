//! Waiting for a fleet to get somewhere: tests poll what they can observe
//! (a stream, an HTTP answer, storage) rather than sleeping a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How often [`until`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// Poll `check` until it gives `Some`, or fail after `timeout` naming `what`
/// and the last error `check` gave.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last = Some(err),
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what} (last error: {last:?})");
        }
        tokio::time::sleep(POLL).await;
    }
}
