//! `--metrics ADDR`: socktrace's counters for Prometheus, served at `/metrics` in the text
//! exposition format (the `prometheus` crate keeps the registry and writes the format;
//! `tiny_http` answers the scrapes on a thread of their own).
//!
//! Cardinality is bounded by construction: labels take values from closed sets (call, errno,
//! cause, TCP state, `error.type`), never a pid, port or address. Container and pod labels,
//! bounded by what runs on the node, only with `--metrics-labels container`.

use crate::diagnose::Diagnosis;
use crate::facts::Failure;
use anyhow::{Context as _, Result};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::net::SocketAddr;

/// Optional label sets of `socktrace_socket_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsLabel {
    /// `container_runtime`, `container_id` and `pod_uid` (empty when none).
    Container,
}

const FAILURE_LABELS: &[&str] = &["call", "errno", "cause", "state", "error_type"];
const CONTAINER_LABELS: &[&str] = &["container_runtime", "container_id", "pod_uid"];

/// Every series socktrace exports.
pub struct Metrics {
    registry: Registry,
    with_container: bool,
    failures: IntCounterVec,
    routine: IntCounterVec,
    lost: IntCounter,
    undecodable: IntCounter,
    histories_refused: IntCounter,
    listen_overflows: IntCounter,
    sockets_tracked: IntGauge,
    /// The kernel's cumulative counts last exported, to add only what is new.
    seen: KernelCounts,
    /// The OTLP exporter's own counts, when it runs beside: (its stats, sent, dropped, as
    /// last exported).
    otlp: Option<(std::sync::Arc<super::otlp::ExportStats>, IntCounter, IntCounter, u64, u64)>,
}

/// Counts the kernel keeps from attach on (they only grow).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// Routine outcomes counted in the kernel, not sent: (kind, state, count).
    pub routine: Vec<(u32, u8, u64)>,
    pub lost: u64,
    pub histories_refused: u64,
    pub listen_overflows: u64,
    pub sockets_tracked: u64,
}

impl Metrics {
    /// The registry with every family, `build` and `probes` (event, probe) set once.
    pub fn new(
        labels: &[MetricsLabel],
        kernel_release: &str,
        probe_mode: &str,
        probes: &[(String, String)],
    ) -> Result<Self> {
        let registry = Registry::new_custom(Some("socktrace".into()), None)?;
        let with_container = labels.contains(&MetricsLabel::Container);
        let mut failure_labels = FAILURE_LABELS.to_vec();
        if with_container {
            failure_labels.extend_from_slice(CONTAINER_LABELS);
        }
        let failures = IntCounterVec::new(
            Opts::new(
                "socket_failures_total",
                "Failing socket calls, by call, errno, the cause socktrace found, the TCP state the error was born \
                 in, and OpenTelemetry's error.type",
            ),
            &failure_labels,
        )?;
        let routine = IntCounterVec::new(
            Opts::new(
                "routine_failures_total",
                "Routine outcomes counted in the kernel without an event (EAGAIN, EINTR, EINPROGRESS, ECANCELED, \
                 sends refused for TCP memory), by errno, cause and TCP state",
            ),
            &["errno", "cause", "state"],
        )?;
        let lost = IntCounter::new("lost_events_total", "Failures the kernel could not send (ring buffer full)")?;
        let undecodable = IntCounter::new("undecodable_events_total", "Ring buffer records socktrace could not read")?;
        let histories_refused = IntCounter::new(
            "histories_refused_total",
            "Sockets that got no history because the kernel's history map was full (their failures may lack a cause; --max-histories)",
        )?;
        let listen_overflows = IntCounter::new(
            "listen_overflows_total",
            "SYNs dropped for full accept queues in the watched network namespaces (ListenOverflows)",
        )?;
        let sockets_tracked = IntGauge::new("sockets_tracked", "Socket histories the kernel holds now")?;
        let probes_in_use = IntGaugeVec::new(
            Opts::new("probe_info", "The probe serving each kernel event on this node (value 1)"),
            &["event", "probe"],
        )?;
        let build = IntGaugeVec::new(
            Opts::new("build_info", "socktrace's version, the kernel and the probe mode (value 1)"),
            &["version", "kernel", "probe_mode"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION"), kernel_release, probe_mode]).set(1);
        for (event, probe) in probes {
            probes_in_use.with_label_values(&[event.as_str(), probe.as_str()]).set(1);
        }
        for c in [&failures, &routine] {
            registry.register(Box::new(c.clone()))?;
        }
        for c in [&lost, &undecodable, &histories_refused, &listen_overflows] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(sockets_tracked.clone()))?;
        registry.register(Box::new(probes_in_use.clone()))?;
        registry.register(Box::new(build))?;
        Ok(Metrics {
            registry,
            with_container,
            failures,
            routine,
            lost,
            undecodable,
            histories_refused,
            listen_overflows,
            sockets_tracked,
            seen: KernelCounts::default(),
            otlp: None,
        })
    }

    /// Exports the OTLP exporter's delivered and dropped records too.
    pub fn watch_otlp(&mut self, stats: std::sync::Arc<super::otlp::ExportStats>) -> Result<()> {
        let sent = IntCounter::new("otlp_sent_total", "Log records the OpenTelemetry Collector accepted")?;
        let dropped = IntCounter::new(
            "otlp_dropped_total",
            "Log records never delivered to the OpenTelemetry Collector (queue full, or sending failed after retries)",
        )?;
        self.registry.register(Box::new(sent.clone()))?;
        self.registry.register(Box::new(dropped.clone()))?;
        self.otlp = Some((stats, sent, dropped, 0, 0));
        Ok(())
    }

    /// One failure the kernel sent, printed or not.
    pub fn record(&self, f: &Failure, d: &Diagnosis) {
        let (errno, cause, state) = crate::summary::label(f, d);
        let call = f.syscall_name();
        let error_type = super::error_type(f.errno, d.cause);
        let mut values: Vec<&str> = vec![&call, &errno, cause, state, error_type];
        let workload = f.cgroup.as_ref().map(|c| &c.workload);
        let container = workload.and_then(|w| w.container.as_ref());
        if self.with_container {
            values.push(container.map(|c| c.runtime.name()).unwrap_or(""));
            values.push(container.map(|c| c.id.as_str()).unwrap_or(""));
            values.push(workload.and_then(|w| w.pod.as_ref()).map(|p| p.uid.as_str()).unwrap_or(""));
        }
        self.failures.with_label_values(&values).inc();
    }

    pub fn record_undecodable(&self) {
        self.undecodable.inc();
    }

    /// Adds what the kernel counted since the last call (its counts are cumulative).
    pub fn update_kernel_counts(&mut self, now: KernelCounts) {
        for &(kind, state, n) in &now.routine {
            let before = self.seen.routine.iter().find(|(k, s, _)| (*k, *s) == (kind, state)).map_or(0, |r| r.2);
            if n > before {
                let (errno, cause, state) = crate::summary::routine_label(kind, state);
                self.routine.with_label_values(&[errno.as_str(), cause, state]).inc_by(n - before);
            }
        }
        self.lost.inc_by(now.lost.saturating_sub(self.seen.lost));
        self.histories_refused.inc_by(now.histories_refused.saturating_sub(self.seen.histories_refused));
        self.listen_overflows.inc_by(now.listen_overflows.saturating_sub(self.seen.listen_overflows));
        self.sockets_tracked.set(now.sockets_tracked as i64);
        self.seen = now;
        if let Some((stats, sent, dropped, sent_seen, dropped_seen)) = &mut self.otlp {
            use std::sync::atomic::Ordering::Relaxed;
            let (s, d) = (stats.sent.load(Relaxed), stats.dropped.load(Relaxed));
            sent.inc_by(s.saturating_sub(*sent_seen));
            dropped.inc_by(d.saturating_sub(*dropped_seen));
            (*sent_seen, *dropped_seen) = (s, d);
        }
    }

    /// The exposition text a scrape gets.
    #[cfg(test)]
    pub fn render(&self) -> String {
        exposition(&self.registry)
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }
}

/// What `--metrics` and `--metrics-labels` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsOptions {
    pub addr: SocketAddr,
    pub labels: Vec<MetricsLabel>,
}

/// The endpoint, bound, waiting for the probes to be known.
pub struct MetricsRequest {
    endpoint: Endpoint,
    labels: Vec<MetricsLabel>,
}

impl MetricsRequest {
    /// Binds the endpoint now (before the probes, while socktrace still has its privileges).
    pub fn bind(opts: &MetricsOptions) -> Result<Self> {
        Ok(MetricsRequest { endpoint: Endpoint::bind(opts.addr)?, labels: opts.labels.clone() })
    }

    /// The registry, with the probes in use, and the endpoint serving it from now on.
    pub fn start(self, report: &crate::summary::ProbeReport) -> Result<Metrics> {
        let probes: Vec<(String, String)> =
            report.used.iter().map(|u| (u.event.to_string(), u.probe.clone())).collect();
        let kernel = crate::kernel::version::kernel_release();
        let metrics = Metrics::new(&self.labels, &kernel, report.mode, &probes)?;
        eprintln!("socktrace: agent: Prometheus metrics at http://{}/metrics", self.endpoint.addr);
        self.endpoint.serve(metrics.registry());
        Ok(metrics)
    }
}

/// The `/metrics` endpoint, bound before the probes are attached (socktrace drops its
/// capabilities then: a port below 1024 needs one) and served on its own thread.
pub struct Endpoint {
    server: std::sync::Arc<tiny_http::Server>,
    pub addr: SocketAddr,
}

impl Endpoint {
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("--metrics {addr}: cannot listen there (in use? a privileged port?)"))?;
        let addr = server.server_addr().to_ip().context("the metrics endpoint has no IP address")?;
        Ok(Endpoint { server: std::sync::Arc::new(server), addr })
    }

    /// Answers scrapes from `registry` until the process ends. A failed answer (the scraper
    /// went away) costs that scrape only.
    pub fn serve(self, registry: Registry) {
        let server = self.server;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in server.incoming_requests() {
                    let path = request.url().split('?').next().unwrap_or("").to_string();
                    let response = match (request.method(), path.as_str()) {
                        (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
                            let body = exposition(&registry);
                            tiny_http::Response::from_string(body).with_header(header(prometheus::TEXT_FORMAT))
                        }
                        (tiny_http::Method::Get, "/") => tiny_http::Response::from_string(
                            "socktrace agent: metrics at /metrics (Prometheus text exposition format)\n",
                        )
                        .with_header(header("text/plain; charset=utf-8")),
                        _ => tiny_http::Response::from_string("not found: socktrace serves /metrics\n")
                            .with_status_code(404)
                            .with_header(header("text/plain; charset=utf-8")),
                    };
                    let _ = request.respond(response);
                }
            })
            .expect("spawning the metrics thread");
    }
}

/// The registry in the text exposition format.
fn exposition(registry: &Registry) -> String {
    prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_else(|e| format!("# {e}\n"))
}

fn header(content_type: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()).expect("a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Container, Runtime, Workload};
    use crate::host::cgroups::CgroupName;

    fn refused() -> (Failure, Diagnosis) {
        use crate::facts::{History, Stamp, StateChange};
        use crate::model::{Syscall, TcpState::*};
        let history = History {
            transitions: vec![
                StateChange { ts_ns: 1_000, old: Some(Close), new: Some(SynSent), in_traced_task: true },
                StateChange { ts_ns: 2_000, old: Some(SynSent), new: Some(Close), in_traced_task: false },
            ],
            rst_received: Some(Stamp { ts_ns: 2_000, state: Some(SynSent), current_tgid: 0 }),
            ..Default::default()
        };
        let mut f = Failure::for_test(Syscall::Connect, Some(crate::model::errno::ECONNREFUSED), Close, history);
        f.cgroup = Some(CgroupName {
            path: "/system.slice/docker-0123456789abcdef.scope".into(),
            workload: Workload {
                container: Some(Container { runtime: Runtime::Docker, id: "0123456789abcdef".into() }),
                pod: None,
            },
        });
        let d = crate::diagnose::diagnose(&f);
        (f, d)
    }

    #[test]
    fn failures_are_counted_with_bounded_labels() {
        let m = Metrics::new(&[], "6.18.0", "auto", &[("state change".into(), "tp_btf/inet_sock_set_state".into())])
            .unwrap();
        let (f, d) = refused();
        m.record(&f, &d);
        m.record(&f, &d);
        let text = m.render();
        let line = text.lines().find(|l| l.starts_with("socktrace_socket_failures_total{")).expect(&text);
        assert!(line.contains("call=\"connect\"") && line.contains("errno=\"ECONNREFUSED\""), "{line}");
        assert!(line.contains("error_type=\"refused\"") && line.ends_with(" 2"), "{line}");
        // Never a pid, a port, an address, or a container unless asked.
        assert!(!line.contains("pid") && !line.contains("127.0.0.1") && !line.contains("docker"), "{line}");
        assert!(text.contains("# TYPE socktrace_socket_failures_total counter"), "{text}");
        assert!(text.contains("socktrace_build_info{kernel=\"6.18.0\",probe_mode=\"auto\",version=\""), "{text}");
        assert!(text.contains("socktrace_probe_info{event=\"state change\",probe=\"tp_btf/inet_sock_set_state\"} 1"));
    }

    #[test]
    fn container_labels_only_when_asked() {
        let m = Metrics::new(&[MetricsLabel::Container], "6.18.0", "auto", &[]).unwrap();
        let (f, d) = refused();
        m.record(&f, &d);
        let text = m.render();
        assert!(text.contains("container_id=\"0123456789abcdef\",container_runtime=\"docker\""), "{text}");
        assert!(text.contains("pod_uid=\"\""), "{text}");
    }

    #[test]
    fn kernel_counts_are_added_as_they_grow() {
        let mut m = Metrics::new(&[], "6.18.0", "auto", &[]).unwrap();
        let would_block = socktrace_common::routine::EAGAIN;
        let counts = |n, lost| KernelCounts {
            routine: vec![(would_block, 1, n)],
            lost,
            sockets_tracked: 3,
            ..Default::default()
        };
        m.update_kernel_counts(counts(5, 1));
        m.update_kernel_counts(counts(7, 1));
        let text = m.render();
        assert!(
            text.contains(
                "socktrace_routine_failures_total{cause=\"would_block\",errno=\"EAGAIN\",state=\"ESTABLISHED\"} 7"
            ),
            "{text}"
        );
        assert!(text.contains("socktrace_lost_events_total 1"), "{text}");
        assert!(text.contains("socktrace_sockets_tracked 3"), "{text}");
    }
}
