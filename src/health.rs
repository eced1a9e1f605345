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
