//! Requests to etcd: made on the store's own runtime and waited for from anywhere, made
//! again while no member answers, and their errors in words.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a request to etcd may take in all, tried again while no member answers (a
/// leader election after a member died takes about a second): a write etcd cannot confirm
/// (no quorum) stops the rollout within this.
pub(super) fn request_timeout(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// How long one attempt may take before it is made again (a member that stopped answering
/// without closing its connections).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes `attempt` until it gets an answer other than "no member answers", for at most
/// `budget` in all.
pub(super) async fn retrying<T, Fut>(
    budget: Duration,
    attempt: impl Fn() -> Fut,
) -> Result<T, etcd_client::Error>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let start = Instant::now();
    loop {
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                format!(
                    "no answer within {}",
                    humantime::format_duration(ATTEMPT_TIMEOUT)
                ),
            ))),
        };
        match result {
            Err(error) if unavailable(&error) && start.elapsed() < budget => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Runs `future` on `runtime` and waits for its answer, from any thread.
pub(super) fn spawned<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    let task = runtime.spawn(future);
    match futures::executor::block_on(task) {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// No member answered (it is down, or unreachable): another may.
pub(super) fn unavailable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ),
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// The innermost cause of an etcd error (tonic wraps the one that says what went wrong).
pub(super) fn deepest(error: &etcd_client::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}
