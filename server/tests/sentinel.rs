//! Instances behind Sentinels that ask for a password
//! (`REDIS_SENTINEL_PASSWORD`): they find the master and serve; a wrong or
//! missing password is a clear error naming the refusal.

mod common;

use common::*;
use testkit::{SentinelSet, MASTER_NAME};
use websocket::streams::Sentinels;

const PASSWORD: &str = "sentinel-secret";

#[tokio::test]
async fn instances_behind_sentinels_with_a_password_serve_and_relay() {
    let set = SentinelSet::start_with_password(Some(PASSWORD)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(None, data.path());
    cfg.redis.sentinels = Some(set.sentinel_list());
    cfg.redis.sentinel_master = MASTER_NAME.to_string();
    cfg.redis.sentinel_password = Some(PASSWORD.to_string());
    cfg.redis.task_debounce = 200;
    let one = start(&cfg).await;
    let two = start_roles(&cfg, true, false).await;

    let a = YClient::connect(&url(&one, "guarded")).await.unwrap();
    let b = YClient::connect(&url(&two, "guarded")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "through the master the Sentinels named");
    b.wait_until("a's edit", SOON, |c| {
        c.text("t") == "through the master the Sentinels named"
    })
    .await
    .unwrap();
    // The worker found the same master: the room is compacted into storage.
    eventually("stored", SOON, || async {
        !stored_files(data.path(), "guarded").is_empty()
    })
    .await;
    // And it is the master the Sentinels name that holds the stream.
    let master = set.master_port().unwrap();
    let keys = set.cli(master, &["KEYS", "y:room:guarded:*"]).unwrap();
    assert!(keys.contains("y:room:guarded:index"), "{keys}");
}

#[tokio::test]
async fn a_missing_or_wrong_sentinel_password_is_a_clear_error() {
    let set = SentinelSet::start_with_password(Some(PASSWORD)).unwrap();
    let list = set.sentinel_list();
    let right = Sentinels::new(&list, MASTER_NAME, None)
        .unwrap()
        .with_login(None, Some(PASSWORD));
    let (address, _) = right.master().await.unwrap();
    assert_eq!(address, format!("127.0.0.1:{}", set.master_port().unwrap()));

    for (login, what) in [(None, "no password"), (Some("wrong"), "a wrong password")] {
        let sentinels = Sentinels::new(&list, MASTER_NAME, None)
            .unwrap()
            .with_login(None, login);
        let err = match sentinels.master().await {
            Ok(found) => panic!("{what}: the Sentinels named {found:?}"),
            Err(err) => err.to_string(),
        };
        let lower = err.to_lowercase();
        assert!(
            lower.contains("auth") || lower.contains("password"),
            "{what}: {err}"
        );
        assert!(!err.contains(PASSWORD), "{err}");
    }
}
