//! Reads the live state of every HAProxy in a plan, all at once.

use crate::engine::Observation;
use crate::haproxy::Client;
use crate::plan::Plan;

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// One snapshot per HAProxy instance, in plan order; an unreadable one carries its error.
pub async fn observe(plan: &Plan) -> Vec<Observation<'_>> {
    let reads = plan.haproxy.iter().map(|instance| async move {
        let client = Client::new(instance.socket.clone(), instance.timeout);
        let state = client.snapshot().await.map_err(|error| error_chain(&error));
        Observation { instance, state }
    });
    futures::future::join_all(reads).await
}

/// An error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
