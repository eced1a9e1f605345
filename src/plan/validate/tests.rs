//! Unit tests of the checks that turn the plan's shape into the model.

use super::*;

#[test]
fn templates_fill_placeholders_and_keep_literal_braces() {
    let template =
        parse_template("systemctl restart {server} && awk '{{print $1}}' {port}").unwrap();
    let rendered = template.render(
        |placeholder| placeholder.name().to_uppercase(),
        |value| format!("<{value}>"),
    );
    assert_eq!(
        rendered,
        "systemctl restart <SERVER> && awk '{print $1}' <PORT>"
    );
    assert!(template.uses(Placeholder::Server));
    assert!(!template.uses(Placeholder::Host));
}

#[test]
fn templates_reject_unknown_and_unbalanced_braces() {
    assert_eq!(
        parse_template("echo {name}").unwrap_err(),
        "unknown placeholder `{name}`"
    );
    assert_eq!(
        parse_template("echo ${HOME}").unwrap_err(),
        "unknown placeholder `{HOME}`"
    );
    assert!(
        parse_template("echo {server")
            .unwrap_err()
            .starts_with("unclosed")
    );
    assert!(
        parse_template("echo }")
            .unwrap_err()
            .starts_with("unmatched")
    );
}

#[test]
fn ssh_sockets() {
    assert_eq!(
        parse_ssh_socket("deploy@lb2.internal:2222/run/haproxy/admin.sock"),
        Ok(SocketAddress::Ssh {
            user: Some("deploy".into()),
            host: "lb2.internal".into(),
            port: Some(2222),
            path: "/run/haproxy/admin.sock".into(),
        })
    );
    assert_eq!(
        parse_ssh_socket("lb2/run/haproxy/admin.sock"),
        Ok(SocketAddress::Ssh {
            user: None,
            host: "lb2".into(),
            port: None,
            path: "/run/haproxy/admin.sock".into(),
        })
    );
    assert!(parse_ssh_socket("lb2").is_err(), "no path");
    assert!(parse_ssh_socket("-oProxyCommand=x/run/a.sock").is_err());
    assert!(parse_ssh_socket("a;b/run/a.sock").is_err());
    assert!(parse_ssh_socket("$(x)@lb2/run/a.sock").is_err());
    let address = parse_ssh_socket("root@127.0.0.1:22/tmp/a.sock").unwrap();
    assert_eq!(address.to_string(), "ssh://root@127.0.0.1:22/tmp/a.sock");
}

#[test]
fn host_and_port() {
    assert_eq!(
        parse_host_port("127.0.0.1:9999"),
        Ok(("127.0.0.1".into(), 9999))
    );
    assert_eq!(
        parse_host_port("lb1.example:9999"),
        Ok(("lb1.example".into(), 9999))
    );
    assert_eq!(parse_host_port("[::1]:9999"), Ok(("::1".into(), 9999)));
    assert!(parse_host_port("127.0.0.1").is_err());
    assert!(parse_host_port(":9999").is_err());
    assert!(parse_host_port("127.0.0.1:0").is_err());
    assert!(parse_host_port("127.0.0.1:70000").is_err());
    assert!(parse_host_port("127.0.0.1:99/x").is_err());
    assert!(parse_host_port("a b:99").is_err());
}
