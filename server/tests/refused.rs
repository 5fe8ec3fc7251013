//! Every kind of refused WebSocket upgrade moves its own reason of
//! `yws_upgrades_refused_total`, and no other.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use testkit::callback::Reply;
use testkit::{Handshake, PermissionCallback};
use websocket::auth::{generate_key_pair, mint_token};

const REASONS: [&str; 9] = [
    "no_token",
    "bad_token",
    "expired",
    "callback_error",
    "forbidden",
    "not_found",
    "bad_request",
    "unavailable",
    "origin",
];

/// The refusals by reason in a `/metrics` text.
fn refusals(metrics: &str) -> BTreeMap<&'static str, u64> {
    REASONS
        .iter()
        .map(|reason| {
            let name = format!("yws_upgrades_refused_total{{reason=\"{reason}\"}} ");
            let count = metrics
                .lines()
                .find_map(|line| line.strip_prefix(&name))
                .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
                .parse()
                .unwrap();
            (*reason, count)
        })
        .collect()
}

/// The HTTP status an upgrade request to `url` is refused with.
async fn refused_status(url: &str, protocols: Option<&str>) -> u16 {
    match RawClient::try_connect(url, protocols).await.unwrap() {
        Handshake::Refused { status, .. } => status,
        Handshake::Accepted { .. } => panic!("{url}: accepted"),
    }
}

/// Run `refuse` and check that it moved exactly `reason`, by one.
async fn expect_refusal<F, Fut>(instance: &websocket::app::Instance, reason: &str, refuse: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = refusals(&scrape(instance).await);
    refuse().await;
    let after = refusals(&scrape(instance).await);
    for (name, count) in &after {
        let expected = before[name] + u64::from(*name == reason);
        assert_eq!(
            *count, expected,
            "refusing for {reason}: {name} went from {} to {count}",
            before[name]
        );
    }
}

#[tokio::test]
async fn each_refused_upgrade_counts_its_reason() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let callback = PermissionCallback::start().await.unwrap();
    let (private, public) = generate_key_pair().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    cfg.auth.public_key = Some(public);
    cfg.auth.perm_callback = Some(callback.url().to_string());
    cfg.auth.perm_timeout = 2000;
    cfg.websocket.allowed_origins = vec!["https://app.example.com".into()];
    let instance = start(&cfg).await;

    callback.reply("doc", "alice", Reply::grant("rw"));
    callback.reply(
        "broken",
        "alice",
        Reply::Raw {
            status: 200,
            body: "not json".into(),
        },
    );
    let token = mint_token(&private, "alice", Some(Duration::from_secs(60))).unwrap();
    let doc = url(&instance, "doc");
    let with = |room: &str, token: &str| format!("{}?yauth={token}", url(&instance, room));

    // Accepted: counts nothing.
    expect_refusal(&instance, "none", || async {
        match RawClient::try_connect(&with("doc", &token), None)
            .await
            .unwrap()
        {
            Handshake::Accepted { client, .. } => client.close().await,
            Handshake::Refused { status, .. } => panic!("refused with {status}"),
        }
    })
    .await;
    // From an allowed origin, or with no Origin at all (above): accepted.
    expect_refusal(&instance, "none", || async {
        let origin = [("Origin", "https://app.example.com")];
        match RawClient::try_connect_with_headers(&with("doc", &token), &origin)
            .await
            .unwrap()
        {
            Handshake::Accepted { client, .. } => client.close().await,
            Handshake::Refused { status, .. } => panic!("refused with {status}"),
        }
    })
    .await;
    // From another origin: 403, before auth (a good token or none).
    for target in [with("doc", &token), doc.clone()] {
        expect_refusal(&instance, "origin", || async {
            let origin = [("Origin", "https://elsewhere.example")];
            match RawClient::try_connect_with_headers(&target, &origin)
                .await
                .unwrap()
            {
                Handshake::Refused {
                    status,
                    upgrade_header,
                } => {
                    assert_eq!(status, 403);
                    assert!(!upgrade_header);
                }
                Handshake::Accepted { .. } => panic!("another origin was accepted"),
            }
        })
        .await;
    }
    expect_refusal(&instance, "no_token", || async {
        assert_eq!(refused_status(&doc, None).await, 401);
    })
    .await;
    expect_refusal(&instance, "bad_token", || async {
        assert_eq!(refused_status(&with("doc", "a.b.c"), None).await, 401);
    })
    .await;
    // A token whose signature is another key's.
    let (other, _) = generate_key_pair().unwrap();
    let forged = mint_token(&other, "alice", None).unwrap();
    expect_refusal(&instance, "bad_token", || async {
        assert_eq!(refused_status(&with("doc", &forged), None).await, 401);
    })
    .await;
    let expiring = mint_token(&private, "alice", Some(Duration::from_millis(1))).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    expect_refusal(&instance, "expired", || async {
        assert_eq!(refused_status(&with("doc", &expiring), None).await, 401);
    })
    .await;
    // The callback answers 404 for a room it does not know.
    expect_refusal(&instance, "forbidden", || async {
        assert_eq!(refused_status(&with("secret", &token), None).await, 401);
    })
    .await;
    callback.reply(
        "closed",
        "alice",
        Reply::Raw {
            status: 403,
            body: "{}".into(),
        },
    );
    expect_refusal(&instance, "forbidden", || async {
        assert_eq!(refused_status(&with("closed", &token), None).await, 401);
    })
    .await;
    expect_refusal(&instance, "callback_error", || async {
        assert_eq!(refused_status(&with("broken", &token), None).await, 401);
    })
    .await;
    expect_refusal(&instance, "not_found", || async {
        assert_eq!(refused_status(&with("a/b", &token), None).await, 404);
    })
    .await;
    expect_refusal(&instance, "bad_request", || async {
        let plain = with("doc", &token).replacen("ws://", "http://", 1);
        let status = reqwest::get(plain).await.unwrap().status().as_u16();
        assert_eq!(status, 400);
    })
    .await;
    callback.stop().await.unwrap();
    expect_refusal(&instance, "callback_error", || async {
        assert_eq!(refused_status(&with("doc", &token), None).await, 401);
    })
    .await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn upgrades_refused_while_redis_is_not_answering_count_as_unavailable() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    redis.stop();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    expect_refusal(&instance, "unavailable", || async {
        assert_eq!(refused_status(&url(&instance, "room"), None).await, 503);
    })
    .await;
    instance.shutdown().await.unwrap();
}
