//! The application's own health check: which URL is asked for each server.

/// The most of an answer `fetch` reads (`verify` reads a version, a few bytes).
pub const MAX_BODY: usize = 64 * 1024;

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

    /// The body of `url` when it answers 2xx within `timeout`, at most `MAX_BODY` bytes;
    /// otherwise what it did.
    pub async fn fetch(&self, url: &str, timeout: std::time::Duration) -> Result<String, String> {
        let mut response = self
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
        // Read in pieces, so an answer far longer than a version string (a wrong URL that
        // serves a page, a stream) is refused without holding it all.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| format!("GET {url}: {}", request_error(&error)))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "GET {url} answered more than {} KiB: not a version (is it the right URL?)",
                    MAX_BODY / 1024
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Serves one request on 127.0.0.1 with a 200 and `body`; returns the URL.
    fn serve_once(body: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0; 1024];
                let _ = stream.read(&mut request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://127.0.0.1:{port}/version")
    }

    #[tokio::test]
    async fn fetch_reads_a_short_answer_and_refuses_a_long_one() {
        let checker = HealthChecker::new(std::time::Duration::from_secs(2), 200).unwrap();
        let timeout = std::time::Duration::from_secs(2);
        let short = serve_once(b"1.4.2\n".to_vec());
        assert_eq!(checker.fetch(&short, timeout).await.unwrap(), "1.4.2\n");
        let long = serve_once(vec![b'x'; 4 * MAX_BODY]);
        let error = checker.fetch(&long, timeout).await.unwrap_err();
        assert!(error.contains("answered more than 64 KiB"), "{error}");
    }
}
