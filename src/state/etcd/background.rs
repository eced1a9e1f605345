//! What runs beside the command while it holds its locks: the lease's keep-alive, and the
//! watch that delivers abort requests.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};

/// Keeps the lease alive, renewing it every `interval` (a quarter of its TTL, so that three
/// renewals in a row may fail before it runs out) until the process ends. A keep-alive
/// stream that fails is opened again at once; a lease etcd says is gone stays gone (the
/// journal's fence then refuses every write).
pub(super) async fn keep_alive(mut client: Client, lease: i64, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match client.lease_keep_alive(lease).await {
            Ok((mut keeper, mut stream)) => loop {
                tick.tick().await;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(interval, stream.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() <= 0 => {
                        tracing::warn!(
                            "the etcd lease of this command ran out: its locks are gone"
                        );
                        return;
                    }
                    Ok(Ok(Some(_))) => {}
                    _ => break,
                }
            },
            Err(error) => {
                tracing::debug!("cannot keep the etcd lease alive: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Delivers the request already there if it was written after `since` (when this command
/// took the plan's lock: an `abort` during its pre-flight), then every new one, until the
/// watch fails.
pub(super) async fn watch_once(
    mut client: Client,
    key: &str,
    since: i64,
    deliver: &crate::state::AbortSink,
) -> Result<(), etcd_client::Error> {
    let existing = client.get(key, None).await?;
    let revision = existing.header().map_or(0, |header| header.revision());
    for kv in existing.kvs() {
        if kv.mod_revision() > since {
            deliver_request(kv.value(), deliver);
        }
    }
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let mut stream = client.watch(key, Some(options)).await?;
    while let Some(answer) = stream.message().await? {
        for event in answer.events() {
            if event.event_type() == EventType::Put
                && let Some(kv) = event.kv()
            {
                deliver_request(kv.value(), deliver);
            }
        }
    }
    Ok(())
}

pub(super) fn deliver_request(request: &[u8], deliver: &crate::state::AbortSink) {
    let request: serde_json::Value = serde_json::from_slice(request).unwrap_or_default();
    let from = request["from"]
        .as_str()
        .unwrap_or("`haproxy-rollout abort`")
        .to_owned();
    deliver(from, request["now"].as_bool() == Some(true));
}
