//! The Kubernetes manifests (`deploy/kubernetes/`): valid against Kubernetes' own schemas
//! (offline, with the `kubernetes-validate` package `./x setup` installs), only the
//! capabilities socktrace needs, and a command line the real binary runs.

use serde_json::Value;
use socktrace_tests::fleet::{http_get, metrics_addr, python_tool, workspace};
use socktrace_tests::Tracer;
use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

fn manifests() -> Vec<PathBuf> {
    let dir = workspace().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

/// Every document of a YAML file, as JSON (PyYAML, which kubernetes-validate brings).
fn documents(path: &Path) -> Vec<Value> {
    let out = Command::new(python_tool("python"))
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    // The oldest Kubernetes still common in fleets, and the newest the package knows.
    for version in ["1.28", "1.37"] {
        let out = Command::new(python_tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .args(manifests())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{version}: {text}");
        let resources: usize = manifests().iter().map(|m| documents(m).len()).sum();
        assert_eq!(text.matches(" passed for resource ").count(), resources, "{text}");
    }
    // The validator rejects what it should: an unknown field, strictly.
    let bad = std::env::temp_dir().join(format!("socktrace-bad-{}.yaml", std::process::id()));
    let daemonset = std::fs::read_to_string(workspace().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(&bad, daemonset.replace("hostPID: true", "hostPID: true\n      hostPIDs: true")).unwrap();
    let out = Command::new(python_tool("kubernetes-validate")).arg("--strict").arg(&bad).output().unwrap();
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success(), "a misspelt field passed");
}

#[test]
fn the_daemonset_asks_for_what_socktrace_needs_and_no_more() {
    let docs = documents(&workspace().join("deploy/kubernetes/daemonset.yaml"));
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["capabilities"]["add"], serde_json::json!(["BPF", "PERFMON", "DAC_READ_SEARCH"]));
    for mount in container["volumeMounts"].as_array().unwrap() {
        assert_eq!(mount["readOnly"], true, "{mount}");
    }
    let paths: Vec<&str> =
        container["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup"]);
    let env = container["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "NODE_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    assert!(
        container["resources"]["limits"]["memory"].is_string() && container["resources"]["requests"]["cpu"].is_string()
    );
    let port = annotations["prometheus.io/port"].as_str().unwrap();
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&format!("--metrics=0.0.0.0:{port}").as_str()), "{args:?}");

    assert!(env.iter().any(|e| e["name"] == "HOST_IP" && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"));
    assert!(args.contains(&"--otlp=http://$(HOST_IP):4318"), "{args:?}");

    // The same command line, run for real: metrics on loopback and an ephemeral port, OTLP to
    // a receiver standing in for the node's Collector (the kubelet expands $(HOST_IP)).
    let receiver = socktrace_tests::fleet::OtlpReceiver::start(0).unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| match a {
            a if a.starts_with("--metrics=") => "--metrics=127.0.0.1:0".to_string(),
            a if a.starts_with("--otlp=") => format!("--otlp=http://127.0.0.1:{}", receiver.port),
            a => a.to_string(),
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Tracer::start(&args).unwrap();
    let addr = metrics_addr(&agent.stderr);
    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("socktrace_build_info"), "{text}");
    // Every process is traced, but never socktrace itself: the scrapes it just answered
    // (connections the client closed first) are not failures of a traced process.
    let own_pid = agent.pid();
    let (status, _) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(15)).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let (events, summary) = out.json().unwrap();
    assert!(summary.is_some(), "{}", out.stdout);
    assert!(!events.iter().any(|e| e["pid"] == own_pid), "socktrace traced itself: {events:#?}");
    // Its last counters reached the "Collector".
    receiver
        .wait_for(Duration::from_secs(10), "the agent's metrics", |got| got.iter().any(|r| r["signal"] == "metrics"))
        .unwrap();
}

/// The Collector example: every component a pipeline names is configured.
#[test]
fn the_collector_pipeline_is_complete() {
    let docs = documents(&workspace().join("deploy/kubernetes/collector.yaml"));
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let config_text = config_map["data"]["config.yaml"].as_str().unwrap();
    let file = std::env::temp_dir().join(format!("socktrace-collector-{}.yaml", std::process::id()));
    std::fs::write(&file, config_text).unwrap();
    let config = documents(&file).remove(0);
    let _ = std::fs::remove_file(&file);
    let pipelines = config["service"]["pipelines"].as_object().unwrap();
    assert!(pipelines.contains_key("logs"));
    for (name, pipeline) in pipelines {
        for kind in ["receivers", "processors", "exporters"] {
            for component in pipeline[kind].as_array().into_iter().flatten() {
                let component = component.as_str().unwrap();
                assert!(config[kind].get(component).is_some(), "pipeline {name}: {kind} {component} is not configured");
            }
        }
    }
    let processors: Vec<&str> =
        pipelines["logs"]["processors"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(processors.contains(&"k8sattributes"), "{processors:?}");
    // Pods are named from the resource attribute the agent sets.
    let association = &config["processors"]["k8sattributes"]["pod_association"][0]["sources"][0];
    assert_eq!(association["name"], "k8s.pod.uid", "{association}");
    // The Collector listens where the agent sends: OTLP/HTTP on the node's port 4318.
    assert_eq!(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"], "0.0.0.0:4318");
    let collector = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let ports = collector["spec"]["template"]["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["containerPort"] == 4318 && p["hostPort"] == 4318), "{ports:?}");
}
