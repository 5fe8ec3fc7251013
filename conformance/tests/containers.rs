//! The fleet with Redis in a container. Built only with the feature `containers`,
//! the explicit opt-in (CI does not set it): a run that asks for it needs a Docker
//! engine answering `docker info`, and fails saying why when there is none.

use std::process::Command;
use std::time::Duration;

use conformance::{Fleet, Lang};
use testkit::YClient;

fn docker_engine() -> Result<(), String> {
    match Command::new("docker").arg("info").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Err(format!("`docker info` could not run: {err}")),
    }
}

#[tokio::test]
async fn rust_and_js_servers_share_a_containerised_redis() {
    if let Err(why) = docker_engine() {
        panic!("the `containers` feature needs a Docker engine: {why}");
    }
    let fleet = Fleet::builder()
        .redis_in_container()
        .rust_servers(1)
        .js_servers(1)
        .start()
        .await
        .expect("fleet starts");
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();
    let a = YClient::connect(&rust.url("boxed")).await.unwrap();
    let b = YClient::connect(&js.url("boxed")).await.unwrap();
    a.wait_synced(Duration::from_secs(10)).await.unwrap();
    b.wait_synced(Duration::from_secs(10)).await.unwrap();
    a.text_insert("t", 0, "in a box");
    b.wait_until("a's text", Duration::from_secs(10), |c| {
        c.text("t") == "in a box"
    })
    .await
    .unwrap();
}
