//! Close orders (docs/protocol.md, the control channel) and token expiry:
//! an order published through one instance closes the connections it names
//! on every instance of the fleet, with its code and reason; on the embedded
//! bus the same on one instance; a token that expires while connected closes
//! its connection with 4401.

mod common;

use std::time::{Duration, Instant};

use common::*;
use testkit::callback::Reply;
use testkit::{Handshake, PermissionCallback};
use websocket::app::Instance;
use websocket::auth::{generate_key_pair, mint_token};
use websocket::streams::{stream_key, CloseOrder, CLOSE_DELETED, CLOSE_REVOKED, DOC_ID};

/// How soon an order must have closed the connections it names.
const ORDER_DEADLINE: Duration = Duration::from_secs(1);

/// How long a connection an order does not name is watched for a close.
const STAYS_OPEN: Duration = Duration::from_millis(300);

fn order(room: &str, user: Option<&str>, code: u16, reason: &str) -> CloseOrder {
    CloseOrder {
        stream: stream_key("y", room, DOC_ID),
        user: user.map(str::to_string),
        code,
        reason: reason.to_string(),
    }
}

/// A raw client of `url` (which carries its token, if any), upgraded and in
/// its room: it got the first message of its initial sync.
async fn open(url: &str) -> RawClient {
    let mut client = match RawClient::try_connect(url, None).await.unwrap() {
        Handshake::Accepted { client, .. } => *client,
        Handshake::Refused { status, .. } => panic!("{url} refused with {status}"),
    };
    assert!(client.recv(SOON).await.is_some(), "{url}: no initial sync");
    client
}

/// `client` was closed within [`ORDER_DEADLINE`] with `code` and `reason`.
async fn expect_closed(what: &str, client: &mut RawClient, code: u16, reason: &str) {
    let started = Instant::now();
    let closed = client.wait_closed(ORDER_DEADLINE).await;
    assert_eq!(
        closed,
        Some(code),
        "{what}: closed after {:?}",
        started.elapsed()
    );
    assert_eq!(client.close_reason.as_deref(), Some(reason), "{what}");
}

/// `client` is still open.
async fn expect_open(what: &str, client: &mut RawClient) {
    assert_eq!(
        client.wait_closed(STAYS_OPEN).await,
        None,
        "{what} was closed"
    );
}

/// Wait until `count` connections subscribe to the control channel.
async fn wait_subscribed(redis: &RedisServer, count: i64) {
    let mut conn = redis_conn(redis).await;
    let deadline = Instant::now() + SOON;
    loop {
        let reply: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("y:control")
            .query_async(&mut conn)
            .await
            .unwrap();
        if reply.1 >= count {
            return;
        }
        assert!(Instant::now() < deadline, "instances did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An instance on `redis` with token auth: the callback grants `rw` in every
/// room it is told about.
async fn with_auth(
    redis: Option<&RedisServer>,
    data: &std::path::Path,
    public: &str,
    callback: &PermissionCallback,
) -> Instance {
    let mut cfg = config(redis, data);
    cfg.auth.public_key = Some(public.to_string());
    cfg.auth.perm_callback = Some(callback.url().to_string());
    cfg.metrics.port = Some(0);
    start(&cfg).await
}

#[tokio::test]
async fn an_order_closes_its_connections_on_every_instance() {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let callback = PermissionCallback::start().await.unwrap();
    callback.reply_room("doc", Reply::grant("rw"));
    callback.reply_room("other", Reply::grant("rw"));
    let (private, public) = generate_key_pair().unwrap();
    let a = with_auth(Some(&redis), data_a.path(), &public, &callback).await;
    let b = with_auth(Some(&redis), data_b.path(), &public, &callback).await;
    wait_subscribed(&redis, 2).await;

    let token = |user: &str| mint_token(&private, user, Some(Duration::from_secs(60))).unwrap();
    let (alice, bob) = (token("alice"), token("bob"));
    let at = |instance: &Instance, room: &str, token: &str| {
        format!("{}?yauth={token}", url(instance, room))
    };
    let mut alice_a = open(&at(&a, "doc", &alice)).await;
    let mut alice_b = open(&at(&b, "doc", &alice)).await;
    let mut bob_b = open(&at(&b, "doc", &bob)).await;
    let mut bob_a = open(&at(&a, "doc", &bob)).await;
    let mut alice_other = open(&at(&b, "other", &alice)).await;

    // What is no order on the channel is skipped; the instances go on.
    let mut conn = redis_conn(&redis).await;
    for junk in [
        "not json",
        "{\"stream\":1}",
        "{\"stream\":\"s\",\"code\":1005}",
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("y:control")
            .arg(junk)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // Alice's connections of the room close, on both instances; Bob's and
    // Alice's of another room stay.
    a.publish_close(&order(
        "doc",
        Some("alice"),
        CLOSE_REVOKED,
        "access revoked",
    ))
    .await
    .unwrap();
    expect_closed("alice on B", &mut alice_b, CLOSE_REVOKED, "access revoked").await;
    expect_closed("alice on A", &mut alice_a, CLOSE_REVOKED, "access revoked").await;
    expect_open("bob on B", &mut bob_b).await;
    expect_open("alice in another room", &mut alice_other).await;

    // The whole room: everyone left in it, on both instances.
    a.publish_close(&order("doc", None, CLOSE_DELETED, "document deleted"))
        .await
        .unwrap();
    expect_closed("bob on B", &mut bob_b, CLOSE_DELETED, "document deleted").await;
    expect_closed("bob on A", &mut bob_a, CLOSE_DELETED, "document deleted").await;
    expect_open("alice in another room", &mut alice_other).await;

    let metrics = scrape(&b).await;
    assert_eq!(
        counter(&metrics, "yws_connections_closed_total{reason=\"ordered\"}"),
        2
    );
    alice_other.close().await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn orders_on_the_embedded_bus_and_closing_here_alone() {
    let data = tempfile::tempdir().unwrap();
    let instance = start(&config(None, data.path())).await;
    let mut first = open(&url(&instance, "doc")).await;
    let mut second = open(&url(&instance, "doc")).await;
    let mut other = open(&url(&instance, "other")).await;

    instance
        .publish_close(&order("doc", None, CLOSE_DELETED, "document deleted"))
        .await
        .unwrap();
    expect_closed("first", &mut first, CLOSE_DELETED, "document deleted").await;
    expect_closed("second", &mut second, CLOSE_DELETED, "document deleted").await;
    expect_open("another room", &mut other).await;

    // Without auth no connection has a user: a user's order closes nothing.
    assert_eq!(
        instance.close_local(&order("other", Some("alice"), CLOSE_REVOKED, "x")),
        0
    );
    assert_eq!(
        instance.close_local(&order("other", None, CLOSE_REVOKED, "closed here")),
        1
    );
    expect_closed("another room", &mut other, CLOSE_REVOKED, "closed here").await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_its_connection() {
    let data = tempfile::tempdir().unwrap();
    let callback = PermissionCallback::start().await.unwrap();
    callback.reply_room("doc", Reply::grant("rw"));
    let (private, public) = generate_key_pair().unwrap();
    let instance = with_auth(None, data.path(), &public, &callback).await;
    let room = url(&instance, "doc");

    let expiring = mint_token(&private, "alice", Some(Duration::from_millis(1500))).unwrap();
    let started = Instant::now();
    let mut short = open(&format!("{room}?yauth={expiring}")).await;
    let lasting = mint_token(&private, "bob", Some(Duration::from_secs(60))).unwrap();
    let mut long = open(&format!("{room}?yauth={lasting}")).await;
    let forever = mint_token(&private, "carol", None).unwrap();
    let mut endless = open(&format!("{room}?yauth={forever}")).await;

    // Open until its exp, then closed with 4401.
    assert_eq!(short.wait_closed(Duration::from_millis(1000)).await, None);
    let closed = short.wait_closed(Duration::from_secs(3)).await;
    let after = started.elapsed();
    assert_eq!(closed, Some(CLOSE_REVOKED));
    assert_eq!(short.close_reason.as_deref(), Some("token expired"));
    assert!(
        after >= Duration::from_millis(1400),
        "closed after {after:?}"
    );
    assert!(
        after < Duration::from_millis(2500),
        "closed after {after:?}"
    );
    expect_open("a token valid for a minute", &mut long).await;
    expect_open("a token without exp", &mut endless).await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn orders_are_followed_again_after_redis_restarted() {
    let mut redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    wait_subscribed(&redis, 1).await;
    let mut before = open(&url(&instance, "doc")).await;
    redis.restart().unwrap();
    // Closed by the restart watch (so the client below is not).
    assert_eq!(before.wait_closed(SOON).await, Some(1011));
    // The subscription comes back by itself.
    wait_subscribed(&redis, 1).await;
    let mut client = open(&url(&instance, "doc")).await;
    instance
        .publish_close(&order("doc", None, CLOSE_REVOKED, "after the restart"))
        .await
        .unwrap();
    expect_closed("client", &mut client, CLOSE_REVOKED, "after the restart").await;
    instance.shutdown().await.unwrap();
}

/// A control connection whose path dies without a FIN or RST (the relay in
/// front of Redis stalls every connection open at that moment) is found out
/// by its ping and made again: orders published after that reach the
/// instance's connections.
#[tokio::test]
async fn orders_are_followed_again_after_the_control_connection_stalled() {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let relay = testkit::StallingRelay::start(redis.port()).await.unwrap();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = config(Some(&redis), data_a.path());
    cfg.redis.url = Some(format!("redis://127.0.0.1:{}", relay.port()));
    let behind = start(&cfg).await;
    let direct = start(&config(Some(&redis), data_b.path())).await;
    wait_subscribed(&redis, 2).await;
    let mut client = open(&url(&behind, "doc")).await;

    relay.stall_open_connections();
    let stalled = Instant::now();
    // An order is published once; keep publishing until one arrives.
    let deadline = stalled + Duration::from_secs(20);
    let closed = loop {
        direct
            .publish_close(&order("doc", None, CLOSE_REVOKED, "after the stall"))
            .await
            .unwrap();
        if let Some(code) = client.wait_closed(Duration::from_millis(500)).await {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "no order arrived within 20 s of the stall"
        );
    };
    assert_eq!(closed, CLOSE_REVOKED);
    assert_eq!(client.close_reason.as_deref(), Some("after the stall"));
    eprintln!("an order arrived {:?} after the stall", stalled.elapsed());
    behind.shutdown().await.unwrap();
    direct.shutdown().await.unwrap();
}
