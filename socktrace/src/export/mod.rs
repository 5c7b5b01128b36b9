//! Exporters: the same diagnosed failures the text and JSON renderers print, fed to the
//! systems a fleet already runs (`socktrace agent`). They sit beside `render`, after the
//! diagnosis: facts in, nothing flows back.
//!
//! - `prometheus`: counters on a `/metrics` endpoint (Prometheus text exposition format);
//! - `otlp`: each failure as an OTLP log record and the counters as OTLP metrics.

pub mod otlp;
pub mod prometheus;

/// The exporters a session feeds (the agent's sinks besides `--json`/`-o`).
#[derive(Default)]
pub struct Exporters {
    /// `--metrics`: bound already, waiting for the probes to be known.
    pub metrics: Option<prometheus::MetricsRequest>,
    /// `--otlp`: the Collector's OTLP/HTTP address.
    pub otlp: Option<String>,
}

/// `host.name` for what the agent exports: the node's name from the Kubernetes downward API
/// (`NODE_NAME`, set by the DaemonSet), else the host's name.
pub fn host_name() -> String {
    if let Some(node) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return node;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

use crate::model::{errno, Cause};

/// OpenTelemetry's `error.type` for a TCP connection failure (the values its semantic
/// conventions name for `network.*` errors), from the errno and socktrace's cause; `_OTHER`
/// (the conventions' fallback) for everything else. An EPIPE after a reset is a reset.
pub fn error_type(errno_value: Option<i32>, cause: Cause) -> &'static str {
    // The application's own timeout (no call failed): `timeout`, the conventions' example
    // for an operation that ended because it took too long.
    if matches!(
        cause,
        Cause::AbandonedConnect | Cause::AbandonedNoReply | Cause::AbandonedUnacked | Cause::AbandonedZeroWindow
    ) {
        return "timeout";
    }
    match errno_value {
        Some(errno::ECONNREFUSED) => "refused",
        Some(errno::ECONNRESET) => "reset",
        Some(errno::EPIPE) if matches!(cause, Cause::RstReceived | Cause::RstSent) => "reset",
        Some(errno::ETIMEDOUT) => "timed_out",
        Some(errno::EHOSTUNREACH) => "host_unreachable",
        Some(errno::ENETUNREACH) => "net_unreachable",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_the_semantic_conventions() {
        let cases = [
            (Some(errno::ECONNREFUSED), Cause::RstReceived, "refused"),
            (Some(errno::ECONNREFUSED), Cause::IcmpError, "refused"),
            (Some(errno::ECONNRESET), Cause::RstReceived, "reset"),
            (Some(errno::EPIPE), Cause::RstReceived, "reset"),
            (Some(errno::EPIPE), Cause::LocalShutdown, "_OTHER"),
            (Some(errno::ETIMEDOUT), Cause::Timeout, "timed_out"),
            (Some(errno::EHOSTUNREACH), Cause::IcmpError, "host_unreachable"),
            (Some(errno::ENETUNREACH), Cause::NoRoute, "net_unreachable"),
            (Some(errno::EMFILE), Cause::FdLimit, "_OTHER"),
            (None, Cause::PeerFin, "_OTHER"),
            (None, Cause::AbandonedConnect, "timeout"),
            (None, Cause::AbandonedNoReply, "timeout"),
        ];
        for (e, cause, want) in cases {
            assert_eq!(error_type(e, cause), want, "{e:?} {cause:?}");
        }
    }
}
