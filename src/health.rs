//! The application's own health check: which URL is asked for each server.

/// Asks a health URL once, within the plan's per-request timeout.
pub struct HealthChecker {
    client: reqwest::Client,
    expect_status: u16,
}

impl HealthChecker {
    pub fn new(timeout: std::time::Duration, expect_status: u16) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // One connection per probe: a kept-alive connection could reach the old process.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(HealthChecker {
            client,
            expect_status,
        })
    }

    /// The body of `url` when it answers 2xx within `timeout`; otherwise what it did.
    pub async fn fetch(&self, url: &str, timeout: std::time::Duration) -> Result<String, String> {
        let response = self
            .client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| format!("GET {url}: {}", request_error(&error)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url} answered {}", status.as_u16()));
        }
        response
            .text()
            .await
            .map_err(|error| format!("GET {url}: {}", request_error(&error)))
    }

    /// `Ok` when the URL answered the expected status; otherwise what it did instead.
    pub async fn probe(&self, url: &str) -> Result<(), String> {
        match self.client.get(url).send().await {
            Ok(response) if response.status().as_u16() == self.expect_status => Ok(()),
            Ok(response) => Err(format!(
                "GET {url} answered {}, expected {}",
                response.status().as_u16(),
                self.expect_status
            )),
            Err(error) => Err(format!("GET {url}: {}", request_error(&error))),
        }
    }
}

/// What went wrong with a request, in a few words: its deepest cause (`Connection refused
/// (os error 111)`) rather than every layer's wrapping of it, or that it timed out.
fn request_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
