//! Each mapping of the plan: the keys it reads (valid keys are the keys asked for), which
//! are required, and the example a missing one is reported with.

use super::*;

impl DecodeItem for RawHaproxy {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawHaproxy {
            name: decoder.required(fields, "name", "e.g. lb1"),
            socket: decoder.required(
                fields,
                "socket",
                "/run/haproxy/admin.sock or tcp://HOST:PORT",
            ),
            timeout: decoder.optional(fields, "timeout"),
            unreachable_timeout: decoder.optional(fields, "unreachable_timeout"),
        }
    }
}

impl DecodeItem for RawServer {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawServer {
            name: decoder.required(fields, "name", "the server's name in the backends"),
            host: decoder.optional(fields, "host"),
            health_url: decoder.optional(fields, "health_url"),
        }
    }
}

impl DecodeSection for RawSsh {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawSsh {
            user: decoder.optional(fields, "user"),
            port: decoder.optional(fields, "port"),
            identity_file: decoder.optional(fields, "identity_file"),
            known_hosts: decoder.optional(fields, "known_hosts"),
            known_hosts_file: decoder.optional(fields, "known_hosts_file"),
            config_file: decoder.optional(fields, "config_file"),
            connect_timeout: decoder.optional(fields, "connect_timeout"),
        }
    }
}

impl DecodeSection for RawRestart {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawRestart {
            command: decoder.required(fields, "command", "e.g. sudo systemctl restart app"),
            timeout: decoder.optional(fields, "timeout"),
        }
    }
}

impl DecodeSection for RawHealth {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawHealth {
            url: decoder.optional(fields, "url"),
            expect_status: decoder.optional(fields, "expect_status"),
            timeout: decoder.optional(fields, "timeout"),
            within: decoder.optional(fields, "within"),
        }
    }
}

impl DecodeSection for RawDrain {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawDrain {
            timeout: decoder.optional(fields, "timeout"),
            on_timeout: decoder.optional(fields, "on_timeout"),
        }
    }
}

impl DecodeSection for RawReady {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawReady {
            timeout: decoder.optional(fields, "timeout"),
        }
    }
}

impl DecodeSection for RawHooks {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawHooks {
            before_drain: decoder.optional(fields, "before_drain"),
            after_restart: decoder.optional(fields, "after_restart"),
            after_ready: decoder.optional(fields, "after_ready"),
            on_failure: decoder.optional(fields, "on_failure"),
        }
    }
}

impl DecodeItem for RawHook {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawHook {
            command: decoder.required(fields, "command", "e.g. /usr/local/bin/deregister {server}"),
            timeout: decoder.optional(fields, "timeout"),
            local: decoder.optional(fields, "local"),
        }
    }
}

impl DecodeSection for RawCapacity {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawCapacity {
            max_unavailable: decoder.optional(fields, "max_unavailable"),
            min_up: decoder.optional(fields, "min_up"),
        }
    }
}

impl DecodeSection for RawCanary {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        let servers = decoder.required(fields, "servers", "e.g. 1");
        let analysis: Option<RawAnalysis> = decoder.section(fields, "analysis");
        // With an analysis, the canaries may go on as soon as it passed.
        let pause = if analysis.is_some() {
            decoder.optional(fields, "pause")
        } else {
            decoder.required(
                fields,
                "pause",
                "manual, or a duration such as 5m (or give `analysis`)",
            )
        };
        RawCanary {
            servers,
            pause,
            analysis,
        }
    }
}

impl DecodeSection for RawVerify {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawVerify {
            url: decoder.optional(fields, "url"),
            command: decoder.optional(fields, "command"),
            expect: decoder.required(fields, "expect", "e.g. \"{version}\""),
            timeout: decoder.optional(fields, "timeout"),
        }
    }
}

impl DecodeSection for RawRollback {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawRollback {
            command: decoder.required(fields, "command", "e.g. sudo /opt/app/deploy {previous}"),
            timeout: decoder.optional(fields, "timeout"),
            on_failure: decoder.optional(fields, "on_failure"),
        }
    }
}

impl DecodeSection for RawAnalysis {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawAnalysis {
            window: decoder.required(fields, "window", "e.g. 2m"),
            max_error_ratio: decoder.required(fields, "max_error_ratio", "e.g. 0.01"),
            min_requests: decoder.optional(fields, "min_requests"),
        }
    }
}

impl DecodeSection for RawState {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawState {
            etcd: decoder.required_section(fields, "etcd", "etcd.endpoints"),
        }
    }
}

impl DecodeSection for RawEtcd {
    fn decode_fields(decoder: &mut Decoder, fields: &mut Fields) -> Self {
        RawEtcd {
            endpoints: decoder.required(
                fields,
                "endpoints",
                "a list of client URLs, e.g. [https://10.0.0.5:2379]",
            ),
            prefix: decoder.optional(fields, "prefix"),
            name: decoder.optional(fields, "name"),
            ca_file: decoder.optional(fields, "ca_file"),
            cert_file: decoder.optional(fields, "cert_file"),
            key_file: decoder.optional(fields, "key_file"),
            lease_ttl: decoder.optional(fields, "lease_ttl"),
        }
    }
}
