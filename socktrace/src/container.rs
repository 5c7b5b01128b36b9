//! Which container, pod or service a failing call came from, told from its cgroup v2 path
//! alone: the patterns the runtimes actually create (pure: path in, attribution out).
//!
//! The kernel records the calling task's cgroup id; `host::cgroups` turns it into the path
//! relative to the cgroup2 mount, and `attribute` reads the path:
//!
//! | runtime | systemd cgroup driver | cgroupfs driver |
//! |---|---|---|
//! | docker | `…/docker-<id>.scope` | `/docker/<id>` |
//! | containerd (CRI, nerdctl) | `…/cri-containerd-<id>.scope`, `…/nerdctl-<id>.scope` | `/kubepods/…/pod<uid>/<id>` |
//! | CRI-O | `…/crio-<id>.scope` | `/kubepods/…/pod<uid>/<id>` |
//! | podman | `…/libpod-<id>.scope` | `/libpod_parent/libpod-<id>` |
//! | Kubernetes pod | `kubepods[-<qos>]-pod<uid, _ for ->.slice` | `/kubepods[/<qos>]/pod<uid>` |
//! | systemd unit | the innermost `*.service` or `*.scope` | |
//!
//! Under the cgroupfs driver the runtime is not in the path: a container under a pod is
//! reported with runtime `cri`. Resolving a pod UID to its name is the OpenTelemetry
//! Collector's job (its `k8sattributes` processor), not socktrace's.

use serde::Serialize;

/// What a cgroup path says about the workload in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The container, or systemd unit, the process runs in.
    pub container: Option<Container>,
    /// The Kubernetes pod, when the cgroup is below `kubepods`.
    pub pod: Option<Pod>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    pub runtime: Runtime,
    /// The runtime's container id (hex), or the systemd unit's name.
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// The pod's UID, with dashes (as the API server shows it).
    pub uid: String,
    pub qos: QosClass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A container below a Kubernetes pod under the cgroupfs driver: CRI, runtime unnamed.
    Cri,
    /// A systemd service or scope, not a container.
    Systemd,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Cri => "cri",
            Runtime::Systemd => "systemd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn name(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }
}

impl Container {
    /// The short form people type and `docker ps` shows: 12 characters of a hex id.
    pub fn short_id(&self) -> &str {
        if self.runtime == Runtime::Systemd {
            &self.id
        } else {
            &self.id[..self.id.len().min(12)]
        }
    }
}

/// Container ids are hex, 64 characters for every runtime above; fewer are accepted down to
/// 12 so that hand-made or truncated ids still read as ids, never fewer (a unit named
/// `docker-db.scope` is not a container).
fn container_id(s: &str) -> Option<&str> {
    (s.len() >= 12 && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then_some(s)
}

/// A container's cgroup directory name under the systemd driver: `<prefix><id>.scope`.
fn scope_container(component: &str) -> Option<Container> {
    let stem = component.strip_suffix(".scope")?;
    const PREFIXES: &[(&str, Runtime)] = &[
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    PREFIXES.iter().find_map(|(prefix, runtime)| {
        // `crio-conmon-<id>` and `libpod-conmon-<id>` hold the runtime's monitor, not the
        // container: the id check rejects them ("conmon-..." is not hex).
        let id = container_id(stem.strip_prefix(prefix)?)?;
        Some(Container { runtime: *runtime, id: id.to_string() })
    })
}

/// A pod's directory: `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice`.
fn pod_uid(component: &str) -> Option<String> {
    let uid = match component.strip_suffix(".slice") {
        Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
        None => component.strip_prefix("pod")?.to_string(),
    };
    let valid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// kubelet's top cgroup: `kubepods` (cgroupfs), `kubepods.slice`, or with a prefix when the
/// kubelet runs nested (`kubelet-kubepods.slice` on kind nodes, `/docker/<id>/kubepods` ...).
fn is_kubepods(component: &str) -> bool {
    component.strip_suffix(".slice").unwrap_or(component).ends_with("kubepods")
}

/// The pod's QoS class from the directories between kubelet's top cgroup and the pod:
/// a `besteffort`/`burstable` level, or none (guaranteed pods sit directly below the top).
fn qos_of(ancestors: &[&str]) -> QosClass {
    for c in ancestors.iter().rev() {
        let c = c.strip_suffix(".slice").unwrap_or(c);
        if c.ends_with("besteffort") {
            return QosClass::BestEffort;
        }
        if c.ends_with("burstable") {
            return QosClass::Burstable;
        }
        if c.ends_with("kubepods") {
            break;
        }
    }
    QosClass::Guaranteed
}

/// The workload behind a cgroup path (relative to the cgroup2 mount, `/`-separated).
pub fn attribute(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // A pod: a `pod<uid>` directory somewhere below kubelet's top cgroup (which need not be
    // at the root: a kubelet in a container nests it).
    let mut pod = None;
    let mut pod_index = None;
    if let Some(top) = parts.iter().position(|c| is_kubepods(c)) {
        if let Some((i, uid)) = parts.iter().enumerate().skip(top + 1).find_map(|(i, c)| pod_uid(c).map(|u| (i, u))) {
            pod = Some(Pod { uid, qos: qos_of(&parts[top..i]) });
            pod_index = Some(i);
        }
    }
    // The innermost container wins (nested runtimes: a container inside a systemd unit).
    let mut container = None;
    for (i, c) in parts.iter().enumerate().rev() {
        if let Some(found) = scope_container(c) {
            container = Some(found);
            break;
        }
        // cgroupfs drivers: /docker/<id>, /libpod_parent/libpod-<id>, /kubepods/.../pod<uid>/<id>.
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some(id) = container_id(c) {
            let runtime = match parent {
                Some("docker") => Some(Runtime::Docker),
                _ if pod_index.is_some_and(|p| p + 1 == i) => Some(Runtime::Cri),
                _ => None,
            };
            if let Some(runtime) = runtime {
                container = Some(Container { runtime, id: id.to_string() });
                break;
            }
        }
        if parent == Some("libpod_parent") {
            if let Some(id) = c.strip_prefix("libpod-").and_then(container_id) {
                container = Some(Container { runtime: Runtime::Podman, id: id.to_string() });
                break;
            }
        }
    }
    if container.is_none() && pod.is_none() {
        // Not a container: the innermost systemd unit, if any (slices only group units).
        container = parts
            .iter()
            .rev()
            .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
            .map(|unit| Container { runtime: Runtime::Systemd, id: unit.to_string() });
    }
    Workload { container, pod }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9c1a2b7d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";
    const UID: &str = "1b2c3d4e-5f60-4718-93a4-b5c6d7e8f90a";

    fn container(runtime: Runtime) -> Option<Container> {
        Some(Container { runtime, id: ID.into() })
    }

    #[test]
    fn runtimes_under_the_systemd_driver() {
        for (path, runtime) in [
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
            (format!("/system.slice/nerdctl-{ID}.scope"), Runtime::Containerd),
            (format!("/machine.slice/libpod-{ID}.scope"), Runtime::Podman),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
                Runtime::Podman,
            ),
        ] {
            assert_eq!(attribute(&path), Workload { container: container(runtime), pod: None }, "{path}");
        }
        // The monitor beside a container is not the container: it is a systemd scope.
        let w = attribute(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(w.container.unwrap().runtime, Runtime::Systemd);
    }

    #[test]
    fn runtimes_under_the_cgroupfs_driver() {
        assert_eq!(attribute(&format!("/docker/{ID}")).container, container(Runtime::Docker));
        assert_eq!(attribute(&format!("/libpod_parent/libpod-{ID}")).container, container(Runtime::Podman));
        // A hex directory elsewhere is nobody's container.
        assert_eq!(attribute(&format!("/mygroup/{ID}")), Workload::default());
    }

    #[test]
    fn kubernetes_pods_with_their_qos_class() {
        let underscored = UID.replace('-', "_");
        let cases = [
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope"),
                Runtime::Containerd,
                QosClass::Burstable,
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-{ID}.scope"),
                Runtime::CriO,
                QosClass::BestEffort,
            ),
            (format!("/kubepods.slice/kubepods-pod{underscored}.slice/docker-{ID}.scope"), Runtime::Docker, QosClass::Guaranteed),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Runtime::Cri, QosClass::Burstable),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), Runtime::Cri, QosClass::BestEffort),
            (format!("/kubepods/pod{UID}/{ID}"), Runtime::Cri, QosClass::Guaranteed),
        ];
        for (path, runtime, qos) in cases {
            let w = attribute(&path);
            assert_eq!(w.container, container(runtime), "{path}");
            assert_eq!(w.pod, Some(Pod { uid: UID.into(), qos }), "{path}");
        }
        // The pod's sandbox level itself (no container below it yet).
        let w = attribute(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!((w.container, w.pod.map(|p| p.qos)), (None, Some(QosClass::Burstable)));
        // A kubelet running nested: in a kind node, or in a docker container.
        let kind = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{underscored}.slice/cri-containerd-{ID}.scope"
        );
        let w = attribute(&kind);
        assert_eq!(w.container, container(Runtime::Containerd));
        assert_eq!(w.pod, Some(Pod { uid: UID.into(), qos: QosClass::BestEffort }));
        let w = attribute(&format!("/docker/{ID}/kubepods/pod{UID}/{ID}"));
        assert_eq!(w.container, container(Runtime::Cri), "the innermost container");
        assert_eq!(w.pod.map(|p| p.qos), Some(QosClass::Guaranteed));
        // A pod-like name outside kubelet's tree is not a pod.
        assert_eq!(attribute(&format!("/pod{UID}/{ID}")), Workload::default());
    }

    #[test]
    fn systemd_units_and_plain_cgroups() {
        let unit = |p: &str| attribute(p).container.map(|c| (c.runtime, c.id));
        assert_eq!(unit("/system.slice/nginx.service"), Some((Runtime::Systemd, "nginx.service".into())));
        assert_eq!(
            unit("/user.slice/user-1000.slice/session-3.scope"),
            Some((Runtime::Systemd, "session-3.scope".into()))
        );
        // A unit whose name merely looks like a runtime's is still a unit.
        assert_eq!(unit("/system.slice/docker-db.scope"), Some((Runtime::Systemd, "docker-db.scope".into())));
        assert_eq!(unit("/system.slice/docker.service"), Some((Runtime::Systemd, "docker.service".into())));
        assert_eq!(attribute("/"), Workload::default());
        assert_eq!(attribute("/socktrace-test-12"), Workload::default());
        assert_eq!(attribute("/user.slice"), Workload::default());
    }

    #[test]
    fn short_ids() {
        assert_eq!(container(Runtime::Docker).unwrap().short_id(), &ID[..12]);
        let unit = Container { runtime: Runtime::Systemd, id: "nginx.service".into() };
        assert_eq!(unit.short_id(), "nginx.service");
    }
}
