//! `--otlp URL`: each failure as an OTLP log record, and socktrace's counters as OTLP metrics,
//! over HTTP/protobuf to an OpenTelemetry Collector (`URL/v1/logs`, `URL/v1/metrics`).
//!
//! Built on `opentelemetry-proto` (the official protobuf types) with its own queue rather than
//! the SDK's batch processors: those drop records silently when their queue is full, and
//! socktrace must count every record it does not deliver (`socktrace.otlp.dropped`, exported
//! both here and to Prometheus). The event loop only converts and enqueues (never blocks);
//! one thread batches, compresses (gzip), sends, and retries with exponential backoff.

use crate::diagnose::Diagnosis;
use crate::facts::Failure;
use anyhow::{bail, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Records waiting to be sent: the bound on the agent's memory for a Collector that is down.
pub const QUEUE_CAPACITY: usize = 8192;
/// Records per request.
const BATCH_SIZE: usize = 512;
/// A batch goes out at the latest this long after its first record.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Counters go out this often.
const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// Attempts per request (the first and its retries), with backoff doubling from the first.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// At the end, what is queued gets this long to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// One attempt's limit, connect to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the exporter counts about itself (shared with the Prometheus endpoint).
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Records delivered (the Collector answered 2xx).
    pub sent: AtomicU64,
    /// Records never delivered: the queue was full, or a request failed for good.
    pub dropped: AtomicU64,
    /// Requests tried again after a failure.
    pub retries: AtomicU64,
}

/// Failure counts by (call, errno, cause, state, error.type), cumulative from the start.
type Counts = BTreeMap<[String; 5], u64>;

/// The exporter's side in the event loop.
pub struct OtlpExporter {
    queue: Option<SyncSender<Item>>,
    deadline: Arc<Mutex<Option<Instant>>>,
    stats: Arc<ExportStats>,
    counts: Arc<Mutex<Counts>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// A failure's log record, and the resource attributes that are its own (its container and
/// pod: semantic conventions put them on the resource, where the Collector's k8sattributes
/// processor looks for `k8s.pod.uid`).
pub struct Record {
    pub resource: Vec<KeyValue>,
    pub log: LogRecord,
}

enum Item {
    Log(Box<Record>),
    /// Flush and end.
    Stop,
}

impl OtlpExporter {
    /// Checks `url` (`http://host:port`, the Collector's OTLP/HTTP receiver) and starts the
    /// sending thread.
    pub fn start(url: &str, host_name: String, stats: Arc<ExportStats>) -> Result<Self> {
        let base = url.trim_end_matches('/');
        let Some(rest) = base.strip_prefix("http://") else {
            if base.starts_with("https://") {
                bail!(
                    "--otlp {url}: this build sends OTLP over plain HTTP only; send to a Collector on the node or \
                     in the cluster (http://...:4318), which can forward over TLS"
                );
            }
            bail!("--otlp {url}: expected the Collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318");
        };
        if rest.is_empty() || rest.contains(['?', '#']) {
            bail!("--otlp {url}: expected http://HOST:PORT (socktrace adds /v1/logs and /v1/metrics)");
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let counts = Arc::new(Mutex::new(Counts::new()));
        let deadline = Arc::new(Mutex::new(None));
        let sender = Sender {
            deadline: deadline.clone(),
            logs_url: format!("{base}/v1/logs"),
            metrics_url: format!("{base}/v1/metrics"),
            resource: resource(&host_name),
            stats: stats.clone(),
            counts: counts.clone(),
            start_ns: now_ns(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(REQUEST_TIMEOUT))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        let worker = std::thread::Builder::new().name("otlp".into()).spawn(move || sender.run(rx))?;
        Ok(OtlpExporter { queue: Some(tx), deadline, stats, counts, worker: Some(worker) })
    }

    /// One failure: counted, and queued as a log record (or counted as dropped: never waits).
    pub fn record(&self, f: &Failure, d: &Diagnosis, wall_ns: u64) {
        let (errno, cause, state) = crate::summary::label(f, d);
        let key = [
            f.syscall_name(),
            errno,
            cause.to_string(),
            state.to_string(),
            super::error_type(f.errno, d.cause).to_string(),
        ];
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Item::Log(Box::new(log_record(f, d, wall_ns)))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what is queued and the final counters (waiting at most SHUTDOWN_GRACE), then
    /// stops the thread.
    pub fn shutdown(&mut self) {
        if let Some(queue) = self.queue.take() {
            *self.deadline.lock().unwrap() = Some(Instant::now() + SHUTDOWN_GRACE);
            // Blocking here is fine: the session is over.
            let _ = queue.send(Item::Stop);
        }
        if let Some(worker) = self.worker.take() {
            // A request in flight finishes its attempt (REQUEST_TIMEOUT at most) first.
            let deadline = Instant::now() + SHUTDOWN_GRACE + REQUEST_TIMEOUT + Duration::from_secs(1);
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }

    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The sending thread.
struct Sender {
    logs_url: String,
    metrics_url: String,
    resource: Resource,
    stats: Arc<ExportStats>,
    counts: Arc<Mutex<Counts>>,
    start_ns: u64,
    agent: ureq::Agent,
    /// Set at shutdown: retries stop when their wait would pass it.
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Sender {
    fn run(self, rx: Receiver<Item>) {
        let mut batch: Vec<Record> = Vec::new();
        let mut first_at: Option<Instant> = None;
        let mut metrics_at = Instant::now() + METRICS_INTERVAL;
        loop {
            let due = first_at.map_or(metrics_at, |t| (t + BATCH_DELAY).min(metrics_at));
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(Item::Log(record)) => {
                    first_at.get_or_insert_with(Instant::now);
                    batch.push(*record);
                }
                Ok(Item::Stop) | Err(RecvTimeoutError::Disconnected) => return self.finish(&rx, batch),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if batch.len() >= BATCH_SIZE || first_at.is_some_and(|t| t.elapsed() >= BATCH_DELAY) {
                first_at = None;
                self.send_logs(std::mem::take(&mut batch));
            }
            if Instant::now() >= metrics_at {
                self.send_metrics();
                metrics_at = Instant::now() + METRICS_INTERVAL;
            }
        }
    }

    /// At the end: what is queued goes out in full batches until the deadline; the rest is
    /// counted as dropped; the counters go last.
    fn finish(&self, rx: &Receiver<Item>, mut batch: Vec<Record>) {
        loop {
            while batch.len() < BATCH_SIZE {
                match rx.try_recv() {
                    Ok(Item::Log(record)) => batch.push(*record),
                    _ => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            if self.past_deadline(Duration::ZERO) {
                let left = batch.len() + rx.try_iter().filter(|i| matches!(i, Item::Log(_))).count();
                self.stats.dropped.fetch_add(left as u64, Ordering::Relaxed);
                break;
            }
            self.send_logs(std::mem::take(&mut batch));
        }
        self.send_metrics();
    }

    /// Once shutting down: whether `ahead` from now is past the deadline.
    fn past_deadline(&self, ahead: Duration) -> bool {
        self.deadline.lock().unwrap().is_some_and(|d| Instant::now() + ahead >= d)
    }

    fn send_logs(&self, records: Vec<Record>) {
        let n = records.len() as u64;
        // One resource per container (or none), in the order they first came.
        let mut groups: Vec<(Vec<KeyValue>, Vec<LogRecord>)> = Vec::new();
        for r in records {
            match groups.iter_mut().find(|(resource, _)| *resource == r.resource) {
                Some((_, logs)) => logs.push(r.log),
                None => groups.push((r.resource, vec![r.log])),
            }
        }
        let request = ExportLogsServiceRequest {
            resource_logs: groups
                .into_iter()
                .map(|(own, logs)| {
                    let mut resource = self.resource.clone();
                    resource.attributes.extend(own);
                    ResourceLogs {
                        resource: Some(resource),
                        scope_logs: vec![ScopeLogs { scope: Some(scope()), log_records: logs, ..Default::default() }],
                        ..Default::default()
                    }
                })
                .collect(),
        };
        if self.post(&self.logs_url, request.encode_to_vec()) {
            self.stats.sent.fetch_add(n, Ordering::Relaxed);
        } else {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counters, cumulative since the start (a Collector turns them into rates).
    fn send_metrics(&self) {
        let now = now_ns();
        let point = |attributes: Vec<KeyValue>, value: u64| NumberDataPoint {
            attributes,
            start_time_unix_nano: self.start_ns,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(value as i64)),
            ..Default::default()
        };
        let sum = |name: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
            name: name.into(),
            description: description.into(),
            unit: "{call}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let failures: Vec<NumberDataPoint> = self
            .counts
            .lock()
            .unwrap()
            .iter()
            .map(|([call, errno, cause, state, error_type], n)| {
                point(
                    vec![
                        kv("socktrace.syscall", call),
                        kv("socktrace.errno", errno),
                        kv("socktrace.cause", cause),
                        kv("network.connection.state", &state.to_ascii_lowercase()),
                        kv("error.type", error_type),
                    ],
                    *n,
                )
            })
            .collect();
        let own = |name: &str, description: &str, n: &AtomicU64| {
            let mut m = sum(name, description, vec![point(Vec::new(), n.load(Ordering::Relaxed))]);
            m.unit = "{record}".into();
            m
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: vec![
                        sum(
                            "socktrace.socket.failures",
                            "Failing socket calls, by call, errno, cause and state",
                            failures,
                        ),
                        own(
                            "socktrace.otlp.dropped",
                            "Log records never delivered (queue full, or sending failed)",
                            &self.stats.dropped,
                        ),
                        own("socktrace.otlp.sent", "Log records delivered", &self.stats.sent),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        // Counters lost now are sent again, cumulative, next time: nothing to count.
        let _ = self.post(&self.metrics_url, request.encode_to_vec());
    }

    /// POSTs `body` (gzip), retrying what may succeed later (no answer, 429, 502-504) with
    /// exponential backoff. True when the Collector accepted it.
    fn post(&self, url: &str, body: Vec<u8>) -> bool {
        let body = gzip(&body);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let result = self
                .agent
                .post(url)
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "gzip")
                .send(&body[..]);
            let retryable = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        return true;
                    }
                    log::debug!("otlp: {url} answered {status}");
                    matches!(status, 429 | 502 | 503 | 504)
                }
                Err(e) => {
                    log::debug!("otlp: {url}: {e}");
                    true
                }
            };
            let out_of_time = self.past_deadline(backoff);
            if !retryable || attempt == ATTEMPTS || out_of_time {
                return false;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        false
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "socktrace".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }
}

fn resource(host_name: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", "socktrace"),
            kv("service.version", env!("CARGO_PKG_VERSION")),
            kv("host.name", host_name),
        ],
        ..Default::default()
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

/// A failure as a log record: OpenTelemetry's semantic-convention names where they exist,
/// `socktrace.*` for the rest; the body is the line an engineer reads. The container and pod
/// go to the record's resource.
pub fn log_record(f: &Failure, d: &Diagnosis, wall_ns: u64) -> Record {
    let mut resource = Vec::new();
    let errno = f.errno_label();
    let call = f.syscall_name();
    let mut attributes = vec![
        kv_int("process.pid", f.pid as i64),
        kv_int("thread.id", f.tid as i64),
        kv("process.executable.name", &crate::text::escape_bytes(&f.comm)),
        kv("error.type", super::error_type(f.errno, d.cause)),
        kv("socktrace.syscall", &call),
        kv("socktrace.errno", &errno),
        kv("socktrace.cause", d.cause.code()),
        kv("socktrace.explanation", &d.explain),
    ];
    if let Some(state) = d.state {
        attributes.push(kv("network.connection.state", &state.name().to_ascii_lowercase()));
    }
    if let Some(age) = d.cause_age_ns(f.ts_ns) {
        attributes.push(kv_int("socktrace.cause_age_ns", age as i64));
    }
    if f.fd >= 0 {
        attributes.push(kv_int("socktrace.fd", f.fd as i64));
    }
    let transport = if f.is_tcp {
        Some("tcp")
    } else if f.sock_type == libc::SOCK_DGRAM as u16 && f.family != socktrace_common::net::AF_UNIX {
        Some("udp")
    } else if f.family == socktrace_common::net::AF_UNIX {
        Some("unix")
    } else {
        None
    };
    if let Some(t) = transport {
        attributes.push(kv("network.transport", t));
    }
    if let Some(peer) = f.remote {
        attributes.push(kv("network.peer.address", &peer.ip().to_string()));
        attributes.push(kv_int("network.peer.port", peer.port() as i64));
        attributes.push(kv("network.type", if peer.is_ipv4() { "ipv4" } else { "ipv6" }));
    }
    if let Some(local) = f.local {
        attributes.push(kv("network.local.address", &local.ip().to_string()));
        attributes.push(kv_int("network.local.port", local.port() as i64));
    }
    if let Some(c) = &f.cgroup {
        attributes.push(kv("socktrace.cgroup", &crate::text::escape_bytes(c.path.as_bytes())));
        if let Some(container) = &c.workload.container {
            if container.runtime == crate::container::Runtime::Systemd {
                attributes.push(kv("socktrace.systemd_unit", &crate::text::escape_bytes(container.id.as_bytes())));
            } else {
                resource.push(kv("container.id", &container.id));
                resource.push(kv("container.runtime", container.runtime.name()));
            }
        }
        if let Some(pod) = &c.workload.pod {
            resource.push(kv("k8s.pod.uid", &pod.uid));
            resource.push(kv("socktrace.k8s.pod.qos", pod.qos.name()));
        }
    }
    let body = format!("{call}() = -{errno} ({}): {}", d.cause.code(), d.explain);
    let log = LogRecord {
        time_unix_nano: wall_ns,
        observed_time_unix_nano: now_ns(),
        severity_number: SeverityNumber::Warn as i32,
        severity_text: "WARN".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        attributes,
        ..Default::default()
    };
    Record { resource, log }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let stats = Arc::new(ExportStats::default());
        for bad in ["127.0.0.1:4318", "https://collector:4318", "http://", "http://x:4318/?a"] {
            assert!(OtlpExporter::start(bad, "h".into(), stats.clone()).is_err(), "{bad}");
        }
    }

    /// A read that failed with ECONNRESET, diagnosed.
    fn reset_read() -> (Failure, Diagnosis) {
        let f = Failure::for_test(
            crate::model::Syscall::Read,
            Some(crate::model::errno::ECONNRESET),
            crate::model::TcpState::Close,
            Default::default(),
        );
        let d = crate::diagnose::diagnose(&f);
        (f, d)
    }

    /// A Collector that is not there: records beyond the queue's capacity are dropped and
    /// counted, never waited for; what was queued is counted as dropped once sending fails
    /// for good at shutdown.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let stats = Arc::new(ExportStats::default());
        // Port 1 on loopback: nothing listens, every attempt fails at once.
        let mut exporter = OtlpExporter::start("http://127.0.0.1:1", "h".into(), stats.clone()).unwrap();
        let (f, d) = reset_read();
        let n = QUEUE_CAPACITY + 1000;
        let started = Instant::now();
        for _ in 0..n {
            exporter.record(&f, &d, 1);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "recording never waits");
        assert!(stats.dropped.load(Ordering::Relaxed) >= 1000 - BATCH_SIZE as u64);
        exporter.shutdown();
        assert_eq!(stats.sent.load(Ordering::Relaxed), 0);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), n as u64, "every record is accounted for");
        let counts = exporter.counts.lock().unwrap();
        assert_eq!(counts.values().sum::<u64>(), n as u64);
    }

    #[test]
    fn records_use_semantic_convention_names() {
        let (f, d) = reset_read();
        let r = log_record(&f, &d, 42).log;
        let keys: Vec<&str> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
        for key in [
            "process.pid",
            "process.executable.name",
            "error.type",
            "network.peer.address",
            "network.peer.port",
            "network.transport",
            "socktrace.cause",
        ] {
            assert!(keys.contains(&key), "{key}: {keys:?}");
        }
        assert_eq!(r.time_unix_nano, 42);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
    }
}
