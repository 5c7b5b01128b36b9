//! Fleet mode: container and pod attribution from real cgroups named as the runtimes name
//! theirs, `--container`, and `socktrace agent` feeding a real Prometheus server (Debian's)
//! and an OTLP/HTTP receiver that decodes with OpenTelemetry's official protobufs.

use serde_json::{json, Value};
use socktrace_tests::fleet::{cgroup2_root, http_get, metrics_addr, otlp_attr, OtlpReceiver, Prometheus, TestCgroup};
use socktrace_tests::{proc_status_kib, require_root, Netns, Scenario, Tracer};
use std::time::{Duration, Instant};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");
const POD_UID: &str = "1b2c3d4e-5f60-4718-93a4-b5c6d7e8f90a";

/// A container id as the runtimes make them: 64 hex digits, this process's pid first (so a
/// test's ids share a prefix, and no two runs collide).
fn container_id(salt: u32) -> String {
    format!("{:08x}{:056x}", std::process::id(), salt as u128 * 0x9e37_79b9_7f4a_7c15)
}

/// The test's own top cgroup, `socktrace-TAG-PID`.
fn top(tag: &str) -> String {
    format!("socktrace-{tag}-{}", std::process::id())
}

/// A series without labels, from the exposition text (0 when absent).
fn metric_value(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

/// The sum of every `socktrace_socket_failures_total` series in the exposition text.
fn failures_total(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("socktrace_socket_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `value` of an instant query that must return exactly one series.
fn single_value(prometheus: &Prometheus, promql: &str) -> String {
    let series = prometheus.wait_for(promql, Duration::from_secs(30)).unwrap();
    assert_eq!(series.len(), 1, "{promql}: {series:#?}");
    series[0]["value"][1].as_str().unwrap().to_string()
}

/// The agent traces a cgroup holding two containers (a docker container in this network
/// namespace, and a Kubernetes pod's containerd container, systemd-driver layout, in a network
/// namespace of its own) while a real Prometheus scrapes it: the exact counts per container
/// and cause come back through Prometheus's HTTP API, with pod UID and OpenTelemetry's
/// error.type, and no label carries a pid, port or address. The agent outlives the
/// processes; its JSON events name each one's container and pod.
#[test]
fn prometheus_counts_failures_per_container_and_cause() {
    require_root();
    let top = top("prom");
    let docker_id = container_id(1);
    let cri_id = container_id(2);
    let underscored = POD_UID.replace('-', "_");
    let docker = TestCgroup::create(&format!("{top}/system.slice/docker-{docker_id}.scope")).unwrap();
    let pod = TestCgroup::create(&format!(
        "{top}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{cri_id}.scope"
    ))
    .unwrap();
    let ns = Netns::new("fleet");
    let mut a = Scenario::start(SCENARIO, &["refused-many", "3"]).unwrap();
    let mut b = Scenario::start(SCENARIO, &["--netns", &ns.name, "reset", "read", "v4"]).unwrap();
    docker.add(a.pid).unwrap();
    pod.add(b.pid).unwrap();
    let root = cgroup2_root().join(&top);
    let agent = Tracer::start(&[
        "agent",
        "--cgroup",
        root.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
        "--metrics-labels",
        "container",
        "--json",
    ])
    .unwrap();
    let addr = metrics_addr(&agent.stderr);
    let prometheus = Prometheus::start(addr).unwrap();
    let (a_pid, b_pid) = (a.pid, b.pid);
    a.go().unwrap();
    b.go().unwrap();
    a.finish().unwrap();
    let b_steps = b.finish().unwrap();
    assert!(b_steps.iter().any(|s| s["step"] == "read" && s["errno"] == 104), "{b_steps:?}");

    let failures = |container: &str, errno: &str| {
        format!(
            "sum by (container_id, cause, errno) (socktrace_socket_failures_total{{container_id=\"{container}\",\
             errno=\"{errno}\"}})"
        )
    };
    assert_eq!(single_value(&prometheus, &failures(&docker_id, "ECONNREFUSED")), "3");
    assert_eq!(single_value(&prometheus, &failures(&cri_id, "ECONNRESET")), "1");
    assert_eq!(single_value(&prometheus, &failures(&cri_id, "EPIPE")), "1");
    // Every series of the two containers, with its labels.
    let series = prometheus
        .wait_for(
            &format!("socktrace_socket_failures_total{{container_id=~\"{docker_id}|{cri_id}\"}}"),
            Duration::from_secs(10),
        )
        .unwrap();
    for s in &series {
        let m = s["metric"].as_object().unwrap();
        for forbidden in ["pid", "port", "sport", "dport", "addr", "saddr", "daddr", "peer"] {
            assert!(!m.contains_key(forbidden), "{forbidden}: {m:?}");
        }
        let (runtime, pod_uid) =
            if m["container_id"] == docker_id.as_str() { ("docker", "") } else { ("containerd", POD_UID) };
        // Prometheus stores an empty label as no label.
        let pod_label = m.get("pod_uid").and_then(Value::as_str).unwrap_or("");
        assert_eq!((m["container_runtime"].as_str(), pod_label), (Some(runtime), pod_uid), "{m:?}");
        assert_eq!(m["cause"], "rst_received", "{m:?}");
    }
    let refused = series.iter().find(|s| s["metric"]["errno"] == "ECONNREFUSED").unwrap();
    assert_eq!(
        (
            refused["metric"]["call"].as_str(),
            refused["metric"]["state"].as_str(),
            refused["metric"]["error_type"].as_str()
        ),
        (Some("connect"), Some("SYN_SENT"), Some("refused"))
    );
    let reset = series.iter().find(|s| s["metric"]["errno"] == "ECONNRESET").unwrap();
    assert_eq!(
        (reset["metric"]["call"].as_str(), reset["metric"]["error_type"].as_str()),
        (Some("read"), Some("reset"))
    );
    // The scrape itself, and the agent's own series.
    assert_eq!(prometheus.wait_for("up{job=\"socktrace\"} == 1", Duration::from_secs(10)).unwrap().len(), 1);
    let build = prometheus.wait_for("socktrace_build_info", Duration::from_secs(10)).unwrap();
    assert!(build[0]["metric"]["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{build:#?}");
    let probes = prometheus.wait_for("socktrace_probe_info{event=\"failing call\"}", Duration::from_secs(10)).unwrap();
    assert!(probes[0]["metric"]["probe"].as_str().is_some_and(|p| p.contains("sys_exit")), "{probes:#?}");
    prometheus.wait_for("socktrace_lost_events_total == 0", Duration::from_secs(10)).unwrap();
    prometheus.wait_for("socktrace_sockets_tracked >= 0", Duration::from_secs(10)).unwrap();

    // The exposition text as served: typed, with help.
    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE socktrace_socket_failures_total counter"), "{text}");
    assert!(text.contains("# HELP socktrace_socket_failures_total "), "{text}");
    assert_eq!(http_get(addr, "/nothing").unwrap().0, 404);

    // Both processes are gone; the agent is not.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(http_get(addr, "/metrics").unwrap().0, 200, "the agent outlives the processes it traced");
    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(15)).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let (events, summary) = out.json().unwrap();
    assert!(summary.is_some());
    let ev = events.iter().find(|e| e["pid"] == a_pid).unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(ev["schema"], 9);
    assert_eq!(ev["container"], json!({"runtime": "docker", "id": docker_id}));
    assert_eq!(ev["pod"], Value::Null);
    assert_eq!(ev["cgroup"], format!("/{top}/system.slice/docker-{docker_id}.scope"));
    let ev = events
        .iter()
        .find(|e| e["pid"] == b_pid && e["errno"] == "ECONNRESET")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(ev["container"], json!({"runtime": "containerd", "id": cri_id}));
    assert_eq!(ev["pod"], json!({"uid": POD_UID, "qos": "burstable"}));
}

/// `--otlp`: a refused connect made in a container arrives as an OTLP log record, decoded by
/// OpenTelemetry's official protobufs, with semantic-convention attributes and the container
/// on its resource; the receiver refuses the first request (503) and the agent retries it.
/// Then the receiver goes away for 10 s and comes back: the agent goes on, what it could not
/// deliver is counted as dropped and exported (to Prometheus and over OTLP), what comes after
/// is delivered, and its memory stays bounded.
#[test]
fn otlp_logs_and_metrics_survive_a_collector_outage() {
    require_root();
    let mut receiver = OtlpReceiver::start(1).unwrap();
    let id = container_id(6);
    let cgroup = TestCgroup::create(&format!("{}/docker-{id}.scope", top("otlp"))).unwrap();
    let mut scenario = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    cgroup.add(scenario.pid).unwrap();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let agent =
        Tracer::start(&["agent", "--container", &id[..12], "--otlp", &url, "--metrics", "127.0.0.1:0"]).unwrap();
    assert!(
        agent.stderr.contains(&format!("container {}: cgroup /{}/docker-", &id[..12], top("otlp"))),
        "{}",
        agent.stderr
    );
    let metrics = metrics_addr(&agent.stderr);
    let rss_kib = |pid: u32| proc_status_kib(pid, "VmRSS:").expect("the agent's VmRSS");
    let pid = scenario.pid.to_string();
    scenario.go().unwrap();
    scenario.finish().unwrap();
    let records = |requests: &[Value]| -> Vec<Value> {
        let mut out = Vec::new();
        for r in requests.iter().filter(|r| r["signal"] == "logs") {
            for rl in r["request"]["resourceLogs"].as_array().into_iter().flatten() {
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    for rec in sl["logRecords"].as_array().into_iter().flatten() {
                        let mut rec = rec.clone();
                        rec["resource"] = rl["resource"].clone();
                        out.push(rec);
                    }
                }
            }
        }
        out
    };
    let of_pid = |requests: &[Value], pid: &str| -> Option<Value> {
        records(requests).into_iter().find(|r| otlp_attr(&r["attributes"], "process.pid") == Some(pid))
    };
    let requests = receiver
        .wait_for(Duration::from_secs(30), "the failure's log record", |got| of_pid(got, &pid).is_some())
        .unwrap();
    assert_eq!(requests[0]["status"], 503, "the first request was refused: {:#?}", requests[0]);
    let logs = requests.iter().find(|r| r["signal"] == "logs").unwrap();
    assert_eq!(
        (logs["content_type"].as_str(), logs["content_encoding"].as_str()),
        (Some("application/x-protobuf"), Some("gzip"))
    );
    let record = of_pid(&requests, &pid).unwrap();
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
        ("process.executable.name", "scenario"),
    ] {
        assert_eq!(otlp_attr(a, key), Some(want), "{key}: {record:#}");
    }
    assert!(otlp_attr(a, "network.peer.port").is_some_and(|p| p.parse::<u16>().is_ok()), "{record:#}");
    assert!(otlp_attr(a, "socktrace.explanation").is_some_and(|e| e.contains("nothing listens")), "{record:#}");
    assert_eq!(record["severityNumber"], "SEVERITY_NUMBER_WARN");
    let body = record["body"]["stringValue"].as_str().unwrap();
    assert!(body.starts_with("connect() = -ECONNREFUSED (rst_received): "), "{record:#}");
    // The container is the record's resource, where a Collector's k8sattributes looks.
    let resource = &record["resource"]["attributes"];
    assert_eq!(otlp_attr(resource, "container.id"), Some(id.as_str()), "{record:#}");
    assert_eq!(otlp_attr(resource, "container.runtime"), Some("docker"), "{record:#}");
    assert_eq!(otlp_attr(resource, "service.name"), Some("socktrace"));
    assert!(otlp_attr(resource, "host.name").is_some_and(|h| !h.is_empty()), "{record:#}");
    assert_eq!(otlp_attr(a, "container.id"), None, "on the resource, not the record");
    let rss_before = rss_kib(agent.pid());

    // The Collector goes away for 10 s, failures go on; then it comes back.
    receiver.stop();
    let outage = Instant::now();
    let mut during = Vec::new();
    while outage.elapsed() < Duration::from_secs(10) {
        let mut s = Scenario::start(SCENARIO, &["refused-many", "20"]).unwrap();
        cgroup.add(s.pid).unwrap();
        during.push(s.pid);
        s.go().unwrap();
        s.finish().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    receiver.restart().unwrap();
    let mut after = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    cgroup.add(after.pid).unwrap();
    let after_pid = after.pid.to_string();
    after.go().unwrap();
    after.finish().unwrap();
    receiver
        .wait_for(Duration::from_secs(30), "a record made after the outage", |got| of_pid(got, &after_pid).is_some())
        .unwrap();
    // Dropped records, counted and exported: on /metrics...
    let deadline = Instant::now() + Duration::from_secs(15);
    let dropped = loop {
        let (_, text) = http_get(metrics, "/metrics").unwrap();
        let n: u64 = metric_value(&text, "socktrace_otlp_dropped_total");
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(dropped > 0, "records sent during the outage are counted as dropped");
    // The ring buffer's pages (16 MiB here) become resident as events pass through them.
    assert!(rss_kib(agent.pid()) < rss_before + 48 * 1024, "memory stays bounded through the outage");

    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(30)).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let line = out.stderr.lines().find(|l| l.contains("agent: OTLP: ")).unwrap_or_else(|| panic!("{}", out.stderr));
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
    let (sent, lost) = (numbers[0], numbers[1]);
    let made = 1 + during.len() as u64 * 20 + 1;
    assert_eq!(sent + lost, made, "every record is delivered or counted as dropped: {line}");
    assert!(lost >= dropped, "{line}");
    // ...and over OTLP: the final counters, a cumulative sum per label set.
    let requests = receiver
        .wait_for(Duration::from_secs(10), "the final metrics", |got| got.iter().any(|r| r["signal"] == "metrics"))
        .unwrap();
    let last = requests.iter().rfind(|r| r["signal"] == "metrics").unwrap();
    let all = last["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"].as_array().unwrap();
    let sum_of =
        |name: &str| all.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name}: {all:#?}")).clone();
    let failures = sum_of("socktrace.socket.failures");
    assert_eq!(failures["sum"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE");
    assert_eq!(failures["sum"]["isMonotonic"], true);
    let points = failures["sum"]["dataPoints"].as_array().unwrap();
    let refused = points.iter().find(|p| otlp_attr(&p["attributes"], "error.type") == Some("refused")).unwrap();
    assert_eq!(refused["asInt"], made.to_string());
    let exported_drops =
        sum_of("socktrace.otlp.dropped")["sum"]["dataPoints"][0]["asInt"].as_str().unwrap_or("0").to_string();
    assert_eq!(exported_drops, lost.to_string());
}

/// A selection that can span several containers (a cgroup holding a docker container, in
/// docker's cgroupfs layout, and a Kubernetes pod's container, cgroupfs layout) names each
/// failure's container: JSON carries the pod's UID and QoS class, text lines a container
/// column.
#[test]
fn failures_name_their_container_and_pod() {
    require_root();
    let top = top("multi");
    let docker_id = container_id(2);
    let cri_id = container_id(3);
    let docker = TestCgroup::create(&format!("{top}/docker/{docker_id}")).unwrap();
    let pod = TestCgroup::create(&format!("{top}/kubepods/besteffort/pod{POD_UID}/{cri_id}")).unwrap();
    let root = cgroup2_root().join(&top);
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
    assert_eq!(ev["container"], json!({"runtime": "docker", "id": docker_id}), "{ev:#}");
    assert_eq!(ev["pod"], Value::Null, "{ev:#}");
    assert_eq!(ev["cgroup"], format!("/{top}/docker/{docker_id}"), "{ev:#}");
    let ev = of(b);
    assert_eq!(ev["container"], json!({"runtime": "cri", "id": cri_id}), "{ev:#}");
    assert_eq!(ev["pod"], json!({"uid": POD_UID, "qos": "besteffort"}), "{ev:#}");

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
    let top = top("select");
    let _one = TestCgroup::create(&format!("{top}/docker-{}.scope", container_id(4))).unwrap();
    let _two = TestCgroup::create(&format!("{top}-b/docker-{}.scope", container_id(5))).unwrap();
    let socktrace =
        |args: &[&str]| std::process::Command::new(socktrace_tests::socktrace_bin()).args(args).output().unwrap();
    // Both test containers start with this process's pid in hex.
    let out = socktrace(&["--container", &container_id(4)[..8], "--summary"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("matches 2 containers") && err.contains("give more of the id"), "{err}");
    let out = socktrace(&["--container", "0123456789abcdef0123", "--summary"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no container with an id starting with"), "{err}");
    let out = socktrace(&["agent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics ADDR, --otlp URL, --json, or -o FILE"), "{err}");
    let out = socktrace(&["agent", "--otlp", "https://collector:4318"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain HTTP only"), "{err}");
}

/// A day's worth of spread: failures towards 10,000 distinct peers and from 1,000 containers'
/// cgroups. Without container labels the failure counter keeps one series per label set of
/// the closed vocabulary; with them, one more per container and no more; no label ever
/// holds a peer; the agent's memory grows by little.
#[test]
fn labels_stay_bounded_under_many_peers_and_containers() {
    require_root();
    let top = top("spread");
    let containers = TestCgroup::create(&format!("{top}/containers")).unwrap();
    for i in 0..1000 {
        std::fs::create_dir(containers.path.join(format!("docker-{}.scope", container_id(10_000 + i)))).unwrap();
    }
    let root = cgroup2_root().join(&top);
    for labels in [&[][..], &["--metrics-labels", "container"][..]] {
        let mut scenario = Scenario::start(SCENARIO, &["spread", "10000", containers.path.to_str().unwrap()]).unwrap();
        containers.add(scenario.pid).unwrap();
        let mut args = vec!["agent", "--cgroup", root.to_str().unwrap(), "--metrics", "127.0.0.1:0"];
        args.extend_from_slice(labels);
        let agent = Tracer::start(&args).unwrap();
        let addr = metrics_addr(&agent.stderr);
        let rss = |pid: u32| proc_status_kib(pid, "VmRSS:").expect("the agent's VmRSS");
        let rss_before = rss(agent.pid());
        scenario.go().unwrap();
        let steps = scenario.finish().unwrap();
        let peers = steps.iter().find(|s| s["step"] == "peers").unwrap()["refused"].as_u64().unwrap();
        assert_eq!(peers, 10_000, "{steps:?}");
        assert_eq!(steps.iter().find(|s| s["step"] == "cgroups").unwrap()["visited"], 1000);
        // Every failure counted (the agent reads the ring buffer as it fills).
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            let (_, text) = http_get(addr, "/metrics").unwrap();
            let counted = failures_total(&text) + metric_value(&text, "socktrace_lost_events_total");
            if counted >= 11_000 || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("socktrace_socket_failures_total{")).collect();
        let total = failures_total(&text);
        // Every failure is counted, or counted as lost (a full ring buffer): none vanishes.
        let lost: u64 = metric_value(&text, "socktrace_lost_events_total");
        assert_eq!(total + lost, 11_000, "{labels:?}: lost {lost}, {series:#?}");
        let refused = series.iter().filter(|l| l.contains("errno=\"ECONNREFUSED\"")).count();
        if labels.is_empty() {
            assert_eq!(refused, 1, "one series for every refused connect: {series:#?}");
        } else {
            // The top cgroup (no container) and one per container.
            assert_eq!(refused, 1001, "{}", series.len());
        }
        assert!(!series.iter().any(|l| l.contains("127.0.0.1") || l.contains("port")), "{series:#?}");
        let rss_after = rss(agent.pid());
        // Bounded: the ring buffer's pages (16 MiB on this host) become resident as events pass
        // through them, the rest is the agent's own.
        assert!(rss_after < rss_before + 48 * 1024, "{labels:?}: RSS {rss_before} KiB -> {rss_after} KiB");
        agent.signal(libc::SIGTERM);
        assert!(agent.wait(Duration::from_secs(15)).unwrap().status.success());
    }
}
