//! A single instance without Redis: the embedded bus and local files.

mod common;

use common::*;

#[tokio::test]
async fn embedded_instance_syncs_and_keeps_documents_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let cfg = config(None, data.path());
    let instance = start(&cfg).await;
    let a = YClient::connect(&url(&instance, "solo")).await.unwrap();
    let b = YClient::connect(&url(&instance, "solo")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "abc");
    b.map_set("m", "k", "v");
    a.wait_until("b's edit", SOON, |c| c.content()["m"]["k"] == "v")
        .await
        .unwrap();
    b.wait_until("a's edit", SOON, |c| c.text("t") == "abc")
        .await
        .unwrap();
    let expected = a.content();
    drop(a);
    drop(b);
    instance.shutdown().await.unwrap();

    let instance = start(&cfg).await;
    let c = YClient::connect(&url(&instance, "solo")).await.unwrap();
    c.wait_synced(SOON).await.unwrap();
    assert_eq!(c.content(), expected);
    instance.shutdown().await.unwrap();
}
