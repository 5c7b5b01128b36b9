//! Fleet mode: container attribution from real cgroups named as the runtimes name theirs,
//! `--container`, and `socktrace agent` scraped by a real Prometheus server (Debian's).

use serde_json::Value;
use socktrace_tests::fleet::{http_get, otlp_attr, OtlpReceiver, Prometheus, TestCgroup};
use socktrace_tests::{require_root, Scenario, Tracer};
use std::net::SocketAddr;
use std::time::Duration;

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

/// A container id as docker makes them: 64 hex digits (unique per test run).
fn container_id(salt: u32) -> String {
    format!("{:08x}{:056x}", std::process::id(), salt as u128 * 0x9e37_79b9_7f4a_7c15)
}

/// The docker container's cgroup (systemd driver) under a test-owned top directory.
fn docker_cgroup(tag: &str, id: &str) -> TestCgroup {
    TestCgroup::create(&format!("socktrace-{tag}-{}/docker-{id}.scope", std::process::id())).unwrap()
}

/// The metrics address the agent announced on stderr.
fn metrics_addr(stderr: &str) -> SocketAddr {
    let line =
        stderr.lines().find(|l| l.contains("Prometheus metrics at http://")).unwrap_or_else(|| panic!("{stderr}"));
    let url = line.split("http://").nth(1).unwrap();
    url.trim_end_matches("/metrics").parse().unwrap()
}

/// The agent, selecting one container by the first 12 characters of its id, feeds a real
/// Prometheus: the refused connect made inside the container is a series labelled with call,
/// errno, cause, state, OpenTelemetry's error.type and (asked for) the container; no label
/// carries a pid, port or address. The agent outlives the process it traced, and its JSON
/// events name the container and its cgroup.
#[test]
fn agent_feeds_a_real_prometheus_with_container_labels() {
    require_root();
    let id = container_id(1);
    let cgroup = docker_cgroup("agent", &id);
    let mut scenario = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    cgroup.add(scenario.pid).unwrap();
    let agent = Tracer::start(&[
        "agent",
        "--container",
        &id[..12],
        "--metrics",
        "127.0.0.1:0",
        "--metrics-labels",
        "container",
        "--json",
    ])
    .unwrap();
    assert!(agent.stderr.contains(&format!("container {}: cgroup /socktrace-agent-", &id[..12])), "{}", agent.stderr);
    let addr = metrics_addr(&agent.stderr);
    let prometheus = Prometheus::start(addr).unwrap();
    scenario.go().unwrap();
    let scenario_pid = scenario.pid;
    let steps = scenario.finish().unwrap();
    let connect = steps.iter().find(|s| s["step"] == "connect").unwrap();
    assert_eq!(connect["errno"], 111);

    let query = format!(
        "socktrace_socket_failures_total{{call=\"connect\",errno=\"ECONNREFUSED\",cause=\"rst_received\",\
         state=\"SYN_SENT\",error_type=\"refused\",container_runtime=\"docker\",container_id=\"{id}\"}}"
    );
    let series = prometheus.wait_for(&query, Duration::from_secs(30)).unwrap();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert_eq!(series[0]["value"][1], "1", "{series:#?}");
    let labels = series[0]["metric"].as_object().unwrap();
    for forbidden in ["pid", "port", "sport", "dport", "addr", "saddr", "daddr", "peer"] {
        assert!(!labels.contains_key(forbidden), "{forbidden}: {labels:?}");
    }
    // The scrape itself, and the agent's own series.
    let up = prometheus.wait_for("up{job=\"socktrace\"} == 1", Duration::from_secs(10)).unwrap();
    assert_eq!(up.len(), 1);
    let build = prometheus.wait_for("socktrace_build_info", Duration::from_secs(10)).unwrap();
    assert!(build[0]["metric"]["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{build:#?}");
    let probes = prometheus.wait_for("socktrace_probe_info{event=\"failing call\"}", Duration::from_secs(10)).unwrap();
    assert!(probes[0]["metric"]["probe"].as_str().is_some_and(|p| p.contains("sys_exit")), "{probes:#?}");
    prometheus.wait_for("socktrace_lost_events_total == 0", Duration::from_secs(10)).unwrap();

    // The exposition text as served: counters typed, help given.
    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE socktrace_socket_failures_total counter"), "{text}");
    assert!(text.contains("# HELP socktrace_socket_failures_total "), "{text}");
    assert_eq!(http_get(addr, "/nothing").unwrap().0, 404);

    // The traced process is gone; the agent is not.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(http_get(addr, "/metrics").unwrap().0, 200, "the agent outlives the processes it traced");
    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(15)).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let (events, summary) = out.json().unwrap();
    assert!(summary.is_some());
    let ev = events.iter().find(|e| e["pid"] == scenario_pid).unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(ev["schema"], 5);
    assert_eq!(ev["container"], serde_json::json!({"runtime": "docker", "id": id}));
    assert_eq!(ev["pod"], Value::Null);
    let path = ev["cgroup"].as_str().unwrap();
    assert!(path.starts_with("/socktrace-agent-") && path.ends_with(&format!("/docker-{id}.scope")), "{path}");
    drop(cgroup);
}

/// `--otlp`: the refused connect made in a container arrives as an OTLP log record, decoded by
/// OpenTelemetry's official protobufs, with semantic-convention attributes; the receiver
/// refuses the first request (503) and the agent retries it; at the end the counters arrive
/// as a cumulative OTLP sum, and the agent accounts for every record.
#[test]
fn agent_sends_otlp_logs_and_metrics() {
    require_root();
    let receiver = OtlpReceiver::start(1).unwrap();
    let id = container_id(6);
    let cgroup = docker_cgroup("otlp", &id);
    let mut scenario = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    cgroup.add(scenario.pid).unwrap();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let agent = Tracer::start(&["agent", "--container", &id[..12], "--otlp", &url]).unwrap();
    scenario.go().unwrap();
    let pid = scenario.pid.to_string();
    scenario.finish().unwrap();
    let records = |requests: &[Value]| -> Vec<Value> {
        requests
            .iter()
            .filter(|r| r["signal"] == "logs")
            .flat_map(|r| r["request"]["resourceLogs"].as_array().cloned().unwrap_or_default())
            .flat_map(|rl| {
                let resource = rl["resource"].clone();
                rl["scopeLogs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|sl| sl["logRecords"].as_array().cloned().unwrap_or_default())
                    .map(move |mut rec| {
                        rec["resource"] = resource.clone();
                        rec
                    })
            })
            .collect()
    };
    let requests = receiver
        .wait_for(Duration::from_secs(30), "the failure's log record", |got| {
            records(got).iter().any(|r| otlp_attr(&r["attributes"], "process.pid") == Some(pid.as_str()))
        })
        .unwrap();
    assert_eq!(requests[0]["status"], 503, "the first request was refused: {:#?}", requests[0]);
    let logs = requests.iter().find(|r| r["signal"] == "logs").unwrap();
    assert_eq!(logs["content_type"], "application/x-protobuf");
    assert_eq!(logs["content_encoding"], "gzip");
    let record = records(&requests)
        .into_iter()
        .find(|r| otlp_attr(&r["attributes"], "process.pid") == Some(pid.as_str()))
        .unwrap();
    let a = &record["attributes"];
    for (key, want) in [
        ("error.type", "refused"),
        ("socktrace.errno", "ECONNREFUSED"),
        ("socktrace.cause", "rst_received"),
        ("socktrace.syscall", "connect"),
        ("network.connection.state", "syn_sent"),
        ("network.transport", "tcp"),
        ("network.type", "ipv4"),
        ("network.peer.address", "127.0.0.1"),
        ("container.id", id.as_str()),
        ("container.runtime", "docker"),
        ("process.executable.name", "scenario"),
    ] {
        assert_eq!(otlp_attr(a, key), Some(want), "{key}: {record:#}");
    }
    assert!(otlp_attr(a, "network.peer.port").is_some_and(|p| p.parse::<u16>().is_ok()), "{record:#}");
    assert_eq!(record["severityNumber"], "SEVERITY_NUMBER_WARN");
    assert!(
        record["body"]["stringValue"].as_str().unwrap().starts_with("connect() = -ECONNREFUSED (rst_received): "),
        "{record:#}"
    );
    assert_eq!(otlp_attr(&record["resource"]["attributes"], "service.name"), Some("socktrace"));
    assert!(otlp_attr(&record["resource"]["attributes"], "host.name").is_some_and(|h| !h.is_empty()), "{record:#}");

    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(30)).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("OTLP: 1 log records delivered, 0 dropped, 1 retries"), "{}", out.stderr);
    // The final counters: a cumulative, monotonic sum with the failure's labels.
    let requests = receiver
        .wait_for(Duration::from_secs(10), "the final metrics", |got| got.iter().any(|r| r["signal"] == "metrics"))
        .unwrap();
    let metrics = requests.iter().rfind(|r| r["signal"] == "metrics").unwrap();
    let all: Vec<&Value> =
        metrics["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"].as_array().unwrap().iter().collect();
    let failures = all.iter().find(|m| m["name"] == "socktrace.socket.failures").unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(failures["sum"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE");
    assert_eq!(failures["sum"]["isMonotonic"], true);
    let points = failures["sum"]["dataPoints"].as_array().unwrap();
    let refused = points
        .iter()
        .find(|p| otlp_attr(&p["attributes"], "error.type") == Some("refused"))
        .unwrap_or_else(|| panic!("{points:#?}"));
    assert_eq!(refused["asInt"], "1");
    let dropped = all.iter().find(|m| m["name"] == "socktrace.otlp.dropped").unwrap();
    assert_eq!(dropped["sum"]["dataPoints"][0]["asInt"].as_str().unwrap_or("0"), "0", "{dropped:#}");
    drop(cgroup);
}

/// A selection that can span several containers (a cgroup holding a docker container, in
/// docker's cgroupfs layout, and a Kubernetes pod's container) names each failure's container;
/// JSON carries the pod's UID and QoS class, text lines a container column.
#[test]
fn failures_name_their_container_and_pod() {
    require_root();
    let top = format!("socktrace-multi-{}", std::process::id());
    let docker_id = container_id(2);
    let cri_id = container_id(3);
    let pod_uid = "1b2c3d4e-5f60-4718-93a4-b5c6d7e8f90a";
    let docker = TestCgroup::create(&format!("{top}/docker/{docker_id}")).unwrap();
    let pod = TestCgroup::create(&format!("{top}/kubepods/burstable/pod{pod_uid}/{cri_id}")).unwrap();
    let root = socktrace_tests::fleet::cgroup2_root().join(&top);
    // Two refused connects, one in each container, under `--cgroup` of their common parent.
    let run = |extra: &[&str]| {
        let mut a = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
        let mut b = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
        docker.add(a.pid).unwrap();
        pod.add(b.pid).unwrap();
        let mut args = vec!["--cgroup", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        let t = Tracer::start(&args).unwrap();
        let pids = (a.pid, b.pid);
        a.go().unwrap();
        b.go().unwrap();
        a.finish().unwrap();
        b.finish().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        t.signal(libc::SIGINT);
        let out = t.wait(Duration::from_secs(15)).unwrap();
        assert!(out.status.success(), "{}", out.stderr);
        (out, pids.0, pids.1)
    };
    let (out, a, b) = run(&["--json"]);
    let (events, _) = out.json().unwrap();
    let of = |pid: u32| events.iter().find(|e| e["pid"] == pid).unwrap_or_else(|| panic!("{events:#?}")).clone();
    let ev = of(a);
    assert_eq!(ev["container"], serde_json::json!({"runtime": "docker", "id": docker_id}), "{ev:#}");
    assert_eq!(ev["pod"], Value::Null, "{ev:#}");
    assert_eq!(ev["cgroup"], format!("/{top}/docker/{docker_id}"), "{ev:#}");
    let ev = of(b);
    assert_eq!(ev["container"], serde_json::json!({"runtime": "cri", "id": cri_id}), "{ev:#}");
    assert_eq!(ev["pod"], serde_json::json!({"uid": pod_uid, "qos": "burstable"}), "{ev:#}");

    let (out, a, b) = run(&["--color=never"]);
    let line_of = |pid: u32| {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!(" {pid}/{pid} ")))
            .unwrap_or_else(|| panic!("no line for {pid}: {}", out.stdout))
            .to_string()
    };
    assert!(line_of(a).contains(&format!("docker:{}", &docker_id[..12])), "{}", line_of(a));
    assert!(line_of(b).contains(&format!("cri:{}", &cri_id[..12])), "{}", line_of(b));
}

/// `--container` resolves an id prefix to one container's cgroup, or says why it cannot.
#[test]
fn container_selection_is_checked() {
    require_root();
    let id = container_id(4);
    let _one = docker_cgroup("select", &id);
    let _two =
        TestCgroup::create(&format!("socktrace-select2-{}/docker-{}.scope", std::process::id(), container_id(5)))
            .unwrap();
    let socktrace =
        |args: &[&str]| std::process::Command::new(socktrace_tests::socktrace_bin()).args(args).output().unwrap();
    // Both test containers start with this process's pid in hex.
    let shared = &id[..8];
    let out = socktrace(&["--container", shared, "--summary"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("matches 2 containers") && err.contains("give more of the id"), "{err}");
    let out = socktrace(&["--container", "0123456789abcdef0123", "--summary"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no container with an id starting with"), "{err}");
    let out = socktrace(&["agent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics ADDR, --otlp URL, --json, or -o FILE"), "{err}");
}
