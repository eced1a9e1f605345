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

/// What went wrong, in a few words: a gRPC status's message (`invalid peer certificate:
/// UnknownIssuer`, `tcp connect error`) with the innermost cause under it (`Connection
/// refused (os error 111)`), rather than tonic's five layers.
pub(super) fn deepest(error: &etcd_client::Error) -> String {
    let (mut text, mut source): (String, Option<&dyn std::error::Error>) = match error {
        etcd_client::Error::GRpcStatus(status) => (
            status.message().to_owned(),
            std::error::Error::source(status),
        ),
        other => (other.to_string(), std::error::Error::source(other)),
    };
    let mut innermost = None;
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    if let Some(cause) = innermost
        && !text.contains(&cause)
    {
        text = if text.is_empty() {
            cause
        } else {
            format!("{text} ({cause})")
        };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_what_went_wrong_without_tonics_layers() {
        let status = tonic::Status::unavailable("invalid peer certificate: UnknownIssuer");
        let error = etcd_client::Error::GRpcStatus(status);
        assert_eq!(deepest(&error), "invalid peer certificate: UnknownIssuer");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = etcd_client::Error::IoError(refused);
        assert_eq!(deepest(&error), "io error: refused");
    }

    #[test]
    fn a_request_is_made_again_only_while_no_member_answers() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let answer = runtime.block_on(retrying(Duration::from_secs(5), || {
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if attempt < 2 {
                    Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                        "down",
                    )))
                } else {
                    Ok(attempt)
                }
            }
        }));
        assert_eq!(answer.unwrap(), 2, "the third attempt answered");
        let refused = runtime.block_on(retrying(Duration::from_secs(5), || async {
            Err::<(), _>(etcd_client::Error::GRpcStatus(
                tonic::Status::permission_denied("no"),
            ))
        }));
        assert!(refused.is_err(), "a refusal is not made again");
    }
}
