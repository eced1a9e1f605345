fn main() -> std::process::ExitCode {
    haproxy_rollout::run()
}
