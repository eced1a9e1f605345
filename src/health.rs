//! The application's own health check: which URL is asked for each server.

use crate::plan::{Placeholder, Template};
use crate::ssh::PlaceholderValues;

/// The health URL for one server. `{addr}` is bracketed when it is an IPv6 address, so
/// `http://{addr}:{port}/` stays a valid URL.
pub fn health_url(template: &Template, values: &PlaceholderValues) -> String {
    template.render(
        |placeholder| {
            let value = values.get(placeholder);
            if placeholder == Placeholder::Addr && value.contains(':') {
                format!("[{value}]")
            } else {
                value
            }
        },
        str::to_owned,
    )
}

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

    /// `Ok` when the URL answered the expected status; otherwise what it did instead.
    pub async fn probe(&self, url: &str) -> Result<(), String> {
        match self.client.get(url).send().await {
            Ok(response) if response.status().as_u16() == self.expect_status => Ok(()),
            Ok(response) => Err(format!(
                "GET {url} answered {}, expected {}",
                response.status().as_u16(),
                self.expect_status
            )),
            Err(error) => Err(format!("GET {url}: {}", crate::error::error_chain(&error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::validate::parse_template;

    #[test]
    fn fills_in_address_and_port_as_haproxy_has_them() {
        let template = parse_template("http://{addr}:{port}/health?server={server}").unwrap();
        let mut values = PlaceholderValues {
            server: "app1".into(),
            host: "app1.internal".into(),
            addr: "10.0.0.1".into(),
            port: Some(8080),
        };
        assert_eq!(
            health_url(&template, &values),
            "http://10.0.0.1:8080/health?server=app1"
        );
        values.addr = "fd00::1".into();
        assert_eq!(
            health_url(&template, &values),
            "http://[fd00::1]:8080/health?server=app1"
        );
    }
}
