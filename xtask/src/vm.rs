//! `cargo xtask vm-test`: the end-to-end scenario suite (test binaries `catalogue`,
//! `connect` and `doors`) inside QEMU virtual machines that boot Debian's cloud kernels, one VM per
//! (kernel, probe mode).
//!
//! Why it is built this way: these machines have no KVM (QEMU emulates the CPU: TCG), and the
//! cloud kernels have no 9p or virtio-fs, so everything the guest needs travels in an
//! initramfs built per run: static test binaries, busybox, the host's own `ip`, `nft`, `ss`,
//! `sysctl` and `setpriv` with their shared libraries, and the few kernel modules the
//! scenarios load. Results come back over the serial console; QEMU exits 0 on power-off
//! whatever happened, so the guest prints a marker line per test binary with its exit code.
//!
//! Layout under target/vm/: `cache/` the downloaded kernel packages (kept between runs),
//! `kernels/` their extracted trees, `build/` the static build (its own target directory, so
//! it never waits for nor invalidates the host build), `run/<kernel>-<mode>/` each VM's
//! initramfs, `logs/<kernel>-<mode>.log` each VM's console.

use anyhow::{bail, ensure, Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kernel series booted by default: Debian 11's (5.10, through a private apt configuration:
/// see `AptSource`) and Debian 12's cloud kernels (the oldest and newest there).
pub const VM_KERNELS: &[&str] = &["5.10", "6.1", "6.12"];

/// Probe modes the suite runs in by default (`--probe-mode` of socktrace): the classic and the
/// kprobe probes everywhere, and `auto`, what a user gets without the option (BTF tracepoints
/// where the kernel has them, the failing-call program's included).
pub const VM_MODES: &[&str] = &["tracepoint", "kprobe", "auto"];

/// The kernel × mode pairs `./x test` boots (`./x vm-test` boots every pair of VM_KERNELS ×
/// VM_MODES): the oldest kernel and the newest, every mode. The oldest in tracepoint mode (the
/// classic records, the error report derived at close, io_uring without its request; the
/// doors run whole in this mode only); the newest in what a user gets by default (auto) and
/// with the kprobe stand-ins. 6.1's VMs are left to `./x vm-test`: its verifier makes them
/// about three times as long as 6.12's, and the full matrix does not fit CI's time beside the
/// host suite.
pub const TEST_MATRIX: &[(&str, &str)] = &[("5.10", "tracepoint"), ("6.12", "kprobe"), ("6.12", "auto")];

/// The test binaries of `socktrace-tests` that make up the scenario suite.
const SUITE_TESTS: &[&str] = &["catalogue", "connect", "doors"];

/// The test binaries built for the guests: the suite's, and `scale`, run only when asked
/// (`--tests`, and the scale VM of `./x test`).
const GUEST_TESTS: &[&str] = &["catalogue", "connect", "doors", "scale"];

/// The VM `./x test` boots beside TEST_MATRIX: the scale test's connections traced from before
/// they exist, on 8 virtual CPUs, where a history map split per CPU (65,536 / 8 = 8,192 each,
/// charged to the CPU a socket was created on) would evict: 36,400 connections from two
/// client processes, under emulation. 4 GiB, so socktrace sizes its ring buffer as on a
/// production host.
pub fn scale_vm() -> MatrixOptions {
    MatrixOptions {
        kernels: vec!["6.12".into()],
        modes: vec!["auto".into()],
        cpus: 8,
        memory_mib: 4096,
        tests: vec!["scale:traced_from_before".into()],
        env: vec!["SOCKTRACE_SCALE_CONNECTIONS=36400".into()],
        ..MatrixOptions::default()
    }
}

/// The suite's binaries run in `mode` on the kernel `series`, each with the test-name filter
/// it runs under, if any. `doors` (io_uring, copy paths, UDP, sockets older than the trace)
/// runs whole in tracepoint mode only: what most of it tests does not depend on how the TCP
/// events are probed (the kprobe stand-ins are the catalogue's business), and the matrix must
/// fit CI's time. `auto` runs the catalogue (every label through the BTF tracepoints) and the
/// io_uring doors, whose hook the mode chooses (BTF and raw tracepoints in auto); not on 5.10,
/// whose io_uring events carry no request: the door is unwatched there in every mode, as
/// tracepoint mode checks.
fn suite_tests(series: &str, mode: &str) -> Vec<(&'static str, Option<&'static str>)> {
    match mode {
        "auto" if series == "5.10" => vec![("catalogue", None)],
        "auto" => vec![("catalogue", None), ("doors", Some("io_uring"))],
        "kprobe" => SUITE_TESTS.iter().filter(|t| **t != "doors").map(|t| (*t, None)).collect(),
        _ => SUITE_TESTS.iter().map(|t| (*t, None)).collect(),
    }
}

/// Kernel modules the scenarios need, loaded in the guest before the tests (with whatever
/// they depend on): veth pairs, nftables with `reject` (inet: icmpx, ip: icmp), and the
/// socket diagnostics behind `ss -K`. Built-in ones are skipped.
const GUEST_MODULES: &[&str] = &["veth", "nf_tables", "nft_reject_inet", "nft_reject_ipv4", "inet_diag", "tcp_diag"];

/// Host tools the tests run, copied into the guest with their shared libraries. The real
/// ones rather than busybox applets: the tests rely on `ip netns`, `ss -K` with filters,
/// `setpriv --bounding-set`, and nftables syntax that busybox does not have.
const GUEST_TOOLS: &[&str] = &["ip", "nft", "ss", "sysctl", "setpriv"];

/// The guest's /init.
const INIT_SCRIPT: &str = include_str!("vm_init.sh");

/// The static build's target: the guest is x86_64 whatever builds it, and naming the target
/// keeps `+crt-static` away from proc macros, build scripts and the eBPF sub-build.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
const GUEST_RUSTFLAGS_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS";
/// Static, and no debug info of our own (smaller initramfs; backtraces keep symbol names).
const GUEST_RUSTFLAGS: &str = "-C target-feature=+crt-static -C debuginfo=0 -C strip=debuginfo";

const INIT_MARKER: &str = "SOCKTRACE-VM-INIT";
const RESULT_MARKER: &str = "SOCKTRACE-VM-RESULT";
const DONE_MARKER: &str = "SOCKTRACE-VM-DONE";

/// Boots per VM when the guest dies before /init runs, or of an emulator fault after it
/// (EMULATOR_FAULTS). Once in about ten boots here, QEMU 7.2's multi-threaded TCG let a vCPU
/// hit the int3 of kernel text that the other vCPU was patching at boot ("Oops: int3" in a
/// static branch of sched_clock_cpu, then a panic): the emulator, not the suite, so such a
/// boot is tried again.
const BOOT_ATTEMPTS: u32 = 2;

/// VMs run side by side by default. Measured here (2 cores, no KVM): a guest running the
/// suite keeps about one host core busy (its tests mostly wait on the network's timers, and
/// the scenario and socktrace take turns), so two at once nearly halve the matrix's wall time
/// without starving either; more than the host's cores would.
pub const DEFAULT_VM_JOBS: usize = 2;

/// Default hard wall-clock limit for one VM, boot to power-off.
pub const DEFAULT_VM_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// What to run: every kernel × every mode, each test binary with `test_args`.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// Kernel series, e.g. "6.1", "6.12".
    pub kernels: Vec<String>,
    /// socktrace probe modes, e.g. "tracepoint".
    pub modes: Vec<String>,
    /// Extra arguments for the test binaries (e.g. a test name filter).
    pub test_args: Vec<String>,
    /// Build the static binaries with `--release`. The default, by measurement (6.12 guest,
    /// whole suite): 149 s per VM in release against 352 s in debug (BTF parsing and the like
    /// are CPU-bound, and emulated), for a cold build of 213 s against 130 s, once.
    pub release: bool,
    /// Hard wall-clock limit per VM.
    pub vm_timeout: Duration,
    /// VMs booted at the same time.
    pub jobs: usize,
    /// When not empty, only these (kernel, mode) pairs of `kernels` × `modes`.
    pub only: Vec<(String, String)>,
    /// Virtual CPUs and memory of each guest.
    pub cpus: u32,
    pub memory_mib: u32,
    /// Test binaries to run instead of the mode's suite, each `binary` or `binary:filter`
    /// (one of GUEST_TESTS).
    pub tests: Vec<String>,
    /// Environment of the test binaries, each NAME=value.
    pub env: Vec<String>,
}

impl MatrixOptions {
    /// What one VM of this matrix is called in labels, logs and run directories.
    fn vm_name(&self, series: &str, mode: &str, sep: char) -> String {
        match self.cpus {
            2 => format!("{series}{sep}{mode}"),
            n => format!("{series}{sep}{mode}{sep}{n}cpu"),
        }
    }

    /// The test binaries a VM runs, each with the filter it runs under, if any.
    fn tests_for(&self, series: &str, mode: &str) -> Vec<(String, Option<String>)> {
        if self.tests.is_empty() {
            return suite_tests(series, mode)
                .into_iter()
                .map(|(t, f)| (t.to_string(), f.map(str::to_string)))
                .collect();
        }
        self.tests
            .iter()
            .map(|t| match t.split_once(':') {
                Some((binary, filter)) => (binary.to_string(), Some(filter.to_string())),
                None => (t.clone(), None),
            })
            .collect()
    }
}

impl Default for MatrixOptions {
    fn default() -> Self {
        MatrixOptions {
            kernels: VM_KERNELS.iter().map(|s| s.to_string()).collect(),
            modes: VM_MODES.iter().map(|s| s.to_string()).collect(),
            test_args: Vec::new(),
            release: true,
            vm_timeout: DEFAULT_VM_TIMEOUT,
            jobs: DEFAULT_VM_JOBS,
            only: Vec::new(),
            cpus: 2,
            memory_mib: 2048,
            tests: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// How one VM's run went.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The series asked for ("6.1") and the kernel actually booted (`uname -r`).
    pub kernel: String,
    pub kernel_release: String,
    pub mode: String,
    pub passed: u64,
    pub failed: u64,
    /// Names of the tests that failed, as libtest printed them.
    pub failed_tests: Vec<String>,
    pub duration: Duration,
    /// Boots it took (more than 1 when the guest died before /init).
    pub boots: u32,
    /// Every test binary reported, exited 0, and no test failed.
    pub ok: bool,
    /// Why the run is not ok, beyond failed tests (timeout, a binary that never reported).
    pub problems: Vec<String>,
    pub log: PathBuf,
}

/// Builds the static binaries once, then boots one VM per (kernel, mode), `opts.jobs` at a
/// time. An `Err` means the matrix could not be run at all (build, download); a VM whose
/// tests fail or hang is an outcome with `ok == false`.
pub fn run_matrix(root: &Path, opts: &MatrixOptions) -> Result<Vec<VmOutcome>> {
    run_matrices(root, std::slice::from_ref(opts))
}

/// Several matrices in one queue (the first's build, jobs and time limit for all): their VMs
/// share the host's cores as one matrix's do.
pub fn run_matrices(root: &Path, matrices: &[MatrixOptions]) -> Result<Vec<VmOutcome>> {
    ensure!(
        std::env::consts::ARCH == "x86_64",
        "vm-test boots Debian's amd64 kernels with this host's tools: it needs an x86_64 host"
    );
    let first = matrices.first().context("no matrix to run")?;
    for opts in matrices {
        ensure!(!opts.kernels.is_empty() && !opts.modes.is_empty(), "no kernel or no mode to run");
        for mode in &opts.modes {
            // It names files and goes into the guest's shell script.
            ensure!(
                !mode.is_empty() && mode.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "probe mode {mode:?}: expected a word like tracepoint or kprobe"
            );
        }
        if !opts.tests.is_empty() {
            for (test, _) in opts.tests_for("", "") {
                ensure!(GUEST_TESTS.contains(&test.as_str()), "test binary {test:?}: expected one of {GUEST_TESTS:?}");
            }
        }
        for var in &opts.env {
            ensure!(
                var.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }),
                "environment {var:?}: expected NAME=value"
            );
        }
    }
    let vm_dir = root.join("target/vm");
    let binaries = build_static_binaries(root, &static_target_dir(root), first.release)?;
    let mut series: Vec<&String> = matrices.iter().flat_map(|o| &o.kernels).collect();
    series.sort();
    series.dedup();
    let kernels = series.into_iter().map(|series| prepare_kernel(&vm_dir, series)).collect::<Result<Vec<_>>>()?;
    let logs = vm_dir.join("logs");
    fs::create_dir_all(&logs)?;
    // Longest first (measured: the 6.1 guests are the slowest, kprobe mode the quickest), so
    // that the last VM to start is a short one.
    let mut runs: Vec<(usize, &GuestKernel, &str, &MatrixOptions)> = Vec::new();
    for opts in matrices {
        for kernel in kernels.iter().filter(|k| opts.kernels.contains(&k.series)) {
            for mode in &opts.modes {
                let wanted = opts.only.is_empty() || opts.only.iter().any(|(k, m)| *k == kernel.series && m == mode);
                if wanted {
                    runs.push((runs.len(), kernel, mode.as_str(), opts));
                }
            }
        }
    }
    let expected = |k: &GuestKernel, mode: &str| {
        let series_rank = match k.series.as_str() {
            "6.1" => 0,
            "5.10" => 1,
            _ => 2,
        };
        (series_rank, mode == "kprobe")
    };
    let mut queue = runs.clone();
    queue.sort_by_key(|(_, k, mode, _)| expected(k, mode));
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(queue));
    let jobs = first.jobs.clamp(1, runs.len().max(1));
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let Some((index, kernel, mode, opts)) = queue.lock().unwrap().pop_front() else { break };
                let outcome = run_one(kernel, mode, &binaries, &vm_dir, &logs, opts);
                let failed = outcome.is_err();
                results.lock().unwrap().push((index, outcome));
                if failed {
                    // The matrix cannot be run (initramfs, QEMU missing): stop taking VMs.
                    queue.lock().unwrap().clear();
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);
    let outcomes = results.into_iter().map(|(_, o)| o).collect::<Result<Vec<_>>>()?;
    Ok(outcomes)
}

/// One VM: its initramfs, its boots (again when the guest died before /init), its verdict.
fn run_one(
    kernel: &GuestKernel,
    mode: &str,
    binaries: &SuiteBinaries,
    vm_dir: &Path,
    logs: &Path,
    opts: &MatrixOptions,
) -> Result<VmOutcome> {
    let label = opts.vm_name(&kernel.series, mode, '/');
    let run_dir = vm_dir.join("run").join(opts.vm_name(&kernel.series, mode, '-'));
    let tests = opts.tests_for(&kernel.series, mode);
    let initramfs = build_initramfs(&run_dir, kernel, binaries, mode, &tests, opts)?;
    let size = fs::metadata(&initramfs)?.len();
    eprintln!("xtask: [{label}] initramfs {} ({:.1} MiB)", initramfs.display(), size as f64 / 1048576.0);
    let log = logs.join(format!("{}.log", opts.vm_name(&kernel.series, mode, '-')));
    let mut boots = 1;
    let mut console = boot(&label, kernel, &initramfs, opts, &log, false)?;
    while (!console.init_started() || console.emulator_fault().is_some()) && !console.timed_out && boots < BOOT_ATTEMPTS
    {
        match console.emulator_fault() {
            Some(fault) => eprintln!(
                "xtask: [{label}] the guest kernel died of an emulator fault ({fault}, see BOOT_ATTEMPTS): booting again"
            ),
            None => eprintln!(
                "xtask: [{label}] the guest died before /init ran (an emulator fault at boot, see BOOT_ATTEMPTS): booting again"
            ),
        }
        boots += 1;
        console = boot(&label, kernel, &initramfs, opts, &log, true)?;
    }
    let mut outcome = judge(kernel, mode, &tests, console, boots, log);
    if opts.cpus != 2 {
        outcome.mode = format!("{mode}/{}cpu", opts.cpus);
    }
    Ok(outcome)
}

/// `cargo xtask vm-test`: the matrix, a table of its outcomes, and an error if any failed.
pub fn vm_test(root: &Path, opts: &MatrixOptions) -> Result<()> {
    let outcomes = run_matrix(root, opts)?;
    println!("{}", report_table(&outcomes));
    for o in outcomes.iter().filter(|o| !o.ok) {
        println!("{}/{}: {}; console log {}", o.kernel, o.mode, o.problems.join("; "), o.log.display());
        for test in &o.failed_tests {
            println!("    failed: {test}");
        }
    }
    let (passed, failed) = outcomes.iter().fold((0, 0), |(p, f), o| (p + o.passed, f + o.failed));
    println!("summary: {passed} passed, {failed} failed");
    if outcomes.iter().any(|o| !o.ok) {
        bail!("vm-test failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

pub fn report_table(outcomes: &[VmOutcome]) -> String {
    let mut s = format!(
        "{:<8} {:<32} {:<12} {:>6} {:>6} {:>8}  result\n",
        "kernel", "release", "mode", "passed", "failed", "time"
    );
    for o in outcomes {
        s.push_str(&format!(
            "{:<8} {:<32} {:<12} {:>6} {:>6} {:>7.0}s  {}\n",
            o.kernel,
            o.kernel_release,
            o.mode,
            o.passed,
            o.failed,
            o.duration.as_secs_f64(),
            match (o.ok, o.boots) {
                (true, 1) => "ok".to_string(),
                (true, n) => format!("ok (boot {n}: the first died of an emulator fault)"),
                (false, _) => "FAILED".to_string(),
            }
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Static binaries

/// The binaries that go into every guest.
struct SuiteBinaries {
    socktrace: PathBuf,
    scenario: PathBuf,
    /// The connection crowds of the scale test.
    crowd: PathBuf,
    /// (name, path) of each test binary in GUEST_TESTS.
    tests: Vec<(String, PathBuf)>,
}

/// The static socktrace binary (the guests' and the container image's), built in
/// `target_dir`.
pub fn build_static_socktrace(root: &Path, target_dir: &Path, release: bool) -> Result<PathBuf> {
    let mut socktrace_build =
        static_cargo(root, target_dir, release, &["build", "--package", "socktrace", "--bin", "socktrace"]);
    let artifacts = cargo_artifacts(&mut socktrace_build)?;
    find_artifact(&artifacts, "socktrace", false)
}

/// Where the static build goes (shared by the VMs and the image: built once for both).
pub fn static_target_dir(root: &Path) -> PathBuf {
    root.join("target/vm/build")
}

fn build_static_binaries(root: &Path, target_dir: &Path, release: bool) -> Result<SuiteBinaries> {
    let started = Instant::now();
    let socktrace = build_static_socktrace(root, target_dir, release)?;

    let mut tests_build =
        static_cargo(root, target_dir, release, &["test", "--no-run", "--package", "socktrace-tests"]);
    for t in GUEST_TESTS {
        tests_build.args(["--test", t]);
    }
    let artifacts = cargo_artifacts(&mut tests_build)?;
    let scenario = find_artifact(&artifacts, "scenario", false)?;
    let crowd = find_artifact(&artifacts, "crowd", false)?;
    let tests = GUEST_TESTS
        .iter()
        .map(|t| Ok((t.to_string(), find_artifact(&artifacts, t, true)?)))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "xtask: static {} build of socktrace, scenario and {} took {:.1}s",
        if release { "release" } else { "debug" },
        GUEST_TESTS.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(SuiteBinaries { socktrace, scenario, crowd, tests })
}

/// `cargo SUBCOMMAND_ARGS` for the static build, in its own target directory.
fn static_cargo(root: &Path, target_dir: &Path, release: bool, subcommand_args: &[&str]) -> Command {
    let mut cmd = crate::cargo();
    cmd.args(subcommand_args);
    if release {
        cmd.arg("--release");
    }
    cmd.current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .env(GUEST_RUSTFLAGS_VAR, GUEST_RUSTFLAGS)
        // Both would override the target-specific flags (and reach the eBPF sub-build).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// One compiled executable, from cargo's JSON messages.
#[derive(Debug)]
struct Artifact {
    name: String,
    /// Built as a test harness (`cargo test`), not as a plain binary.
    test: bool,
    executable: PathBuf,
}

/// Runs `cargo build|test ...` with JSON messages (diagnostics still rendered on stderr)
/// and returns the executables it produced.
fn cargo_artifacts(cmd: &mut Command) -> Result<Vec<Artifact>> {
    cmd.args(["--target", GUEST_TARGET, "--message-format=json-render-diagnostics"]);
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("static build failed ({}): {cmd:?}", out.status);
    }
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_artifacts(json_lines: &str) -> Vec<Artifact> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            Some(Artifact {
                name: msg["target"]["name"].as_str()?.to_string(),
                test: msg["profile"]["test"].as_bool().unwrap_or(false),
                executable: PathBuf::from(msg["executable"].as_str()?),
            })
        })
        .collect()
}

fn find_artifact(artifacts: &[Artifact], name: &str, test: bool) -> Result<PathBuf> {
    artifacts
        .iter()
        .find(|a| a.name == name && a.test == test)
        .map(|a| a.executable.clone())
        .with_context(|| format!("cargo reported no executable for {name} (test harness: {test})"))
}

// ---------------------------------------------------------------------------------------------
// Kernels

/// A Debian cloud kernel, unpacked, with the guest's module tree prepared.
struct GuestKernel {
    /// As asked for: "6.1".
    series: String,
    /// `uname -r` of the kernel: "6.1.0-56-cloud-amd64".
    release: String,
    vmlinuz: PathBuf,
    /// A tree holding lib/modules/RELEASE with just the needed modules, uncompressed, and
    /// their modules.dep, for busybox's modprobe.
    modules_root: PathBuf,
    /// The modules of GUEST_MODULES that are not built in: what the guest modprobes.
    modules_to_load: Vec<String>,
}

fn prepare_kernel(vm_dir: &Path, series: &str) -> Result<GuestKernel> {
    ensure!(
        !series.is_empty() && series.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "kernel series {series:?}: expected something like 6.1 or 6.12"
    );
    let deb = kernel_deb(vm_dir, series)?;
    let stem = deb.file_stem().and_then(|s| s.to_str()).context("package file name")?.to_string();
    let unpacked = vm_dir.join("kernels").join(&stem);
    let tree = unpacked.join("tree");
    let complete = unpacked.join(".complete");
    if !complete.exists() {
        eprintln!("xtask: unpacking {}", deb.display());
        let _ = fs::remove_dir_all(&unpacked);
        fs::create_dir_all(&tree)?;
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        fs::write(&complete, "")?;
    }
    let release = single_dir_entry(&tree.join("lib/modules"))?;
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    ensure!(vmlinuz.exists(), "{} has no {}", deb.display(), vmlinuz.display());
    let modules = tree.join("lib/modules").join(&release);
    // Debian's packages do not ship modules.dep: their postinst runs depmod.
    if !modules.join("modules.dep").exists() {
        crate::run(Command::new("depmod").arg("-b").arg(&tree).arg(&release))?;
    }
    let deps = parse_modules_dep(&fs::read_to_string(modules.join("modules.dep"))?);
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut modules_to_load = Vec::new();
    for &m in GUEST_MODULES {
        if deps.contains_key(m) {
            modules_to_load.push(m.to_string());
        } else if !builtin.contains(m) {
            bail!("kernel {release} has no module {m} (neither built in nor in modules.dep)");
        }
    }
    let closure = module_closure(&deps, &modules_to_load)?;

    // The guest's tree: only the closure, decompressed here (busybox's modprobe may not read
    // .ko.xz), with its own modules.dep.
    let modules_root = unpacked.join("guest-modules");
    let _ = fs::remove_dir_all(&modules_root);
    let guest_modules = modules_root.join("lib/modules").join(&release);
    for rel in &closure {
        let (plain, decompressor) = match rel.rsplit_once('.') {
            Some((plain, "xz")) => (plain, Some("xz")),
            Some((plain, "zst")) => (plain, Some("zstd")),
            Some((plain, "gz")) => (plain, Some("gzip")),
            _ => (rel.as_str(), None),
        };
        let dest = guest_modules.join(plain);
        fs::create_dir_all(dest.parent().unwrap())?;
        match decompressor {
            None => {
                fs::copy(modules.join(rel), &dest)?;
            }
            Some(tool) => {
                let out = Command::new(tool)
                    .arg("-dc")
                    .arg(modules.join(rel))
                    .output()
                    .with_context(|| format!("running {tool}"))?;
                ensure!(out.status.success(), "{tool} -dc {rel} failed: {}", String::from_utf8_lossy(&out.stderr));
                fs::write(&dest, out.stdout)?;
            }
        }
    }
    for f in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
        if modules.join(f).exists() {
            fs::copy(modules.join(f), guest_modules.join(f))?;
        }
    }
    crate::run(Command::new("depmod").arg("-b").arg(&modules_root).arg(&release))?;
    eprintln!(
        "xtask: kernel {series}: {release}, modules {} ({} files with dependencies)",
        if modules_to_load.is_empty() { "none".to_string() } else { modules_to_load.join(" ") },
        closure.len()
    );
    Ok(GuestKernel { series: series.to_string(), release, vmlinuz, modules_root, modules_to_load })
}

/// Where apt finds a kernel series: the machine's own lists (Debian 12's kernels), or, for
/// series the machine's release does not carry (5.10 is Debian 11's), a private apt
/// configuration under target/vm/apt-SUITE that reads the same Debian mirror with that suite,
/// so the system's apt is never touched.
enum AptSource {
    System,
    Private { suite: &'static str, dir: PathBuf },
}

impl AptSource {
    fn for_series(vm_dir: &Path, series: &str) -> AptSource {
        match series {
            "5.10" => AptSource::Private { suite: "bullseye", dir: vm_dir.join("apt-bullseye") },
            _ => AptSource::System,
        }
    }

    /// apt's options for this source.
    fn options(&self) -> Vec<String> {
        match self {
            AptSource::System => Vec::new(),
            AptSource::Private { dir, .. } => [
                format!("Dir::Etc::SourceList={}", dir.join("sources.list").display()),
                "Dir::Etc::SourceParts=/nonexistent".into(),
                format!("Dir::State={}", dir.join("state").display()),
                format!("Dir::Cache={}", dir.join("cache").display()),
                "Debug::NoLocking=1".into(),
            ]
            .into_iter()
            .flat_map(|o| ["-o".to_string(), o])
            .collect(),
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options());
        c
    }

    /// Writes the private configuration (the machine's Debian mirror, with this suite and its
    /// security suite) and fetches its lists, once.
    fn prepare(&self) -> Result<()> {
        let AptSource::Private { suite, dir } = self else { return Ok(()) };
        let lists = dir.join("state/lists");
        let fetched = fs::read_dir(&lists)
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains(suite))));
        if fetched {
            return Ok(());
        }
        fs::create_dir_all(lists.join("partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        let mirror = debian_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
        let security = format!("{}-security", mirror.trim_end_matches('/'));
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        fs::write(
            dir.join("sources.list"),
            format!(
                "deb [signed-by={keyring}] {mirror} {suite} main\ndeb [signed-by={keyring}] {security} {suite}-security main\n"
            ),
        )?;
        eprintln!("xtask: fetching Debian {suite}'s package lists into {}", dir.display());
        crate::run(self.command("apt-get").args(["update", "-qq", "-o", "APT::Sandbox::User=root"]))
    }

    /// Names of packages this source knows that start with `prefix` and end with `suffix`.
    fn packages(&self, prefix: &str, suffix: &str) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("running apt-cache (vm-test downloads Debian's kernels with apt)")?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|n| n.ends_with(suffix)).map(str::to_string).collect())
    }
}

/// The Debian mirror this machine's apt uses (`URIs:` of a deb822 source, or a `deb` line),
/// for the private configurations.
fn debian_mirror() -> Option<String> {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.push(fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts.iter().flat_map(|t| t.lines()).find_map(|l| {
        let l = l.trim();
        let uri = if let Some(rest) = l.strip_prefix("URIs:") {
            rest.split_whitespace().next()
        } else if let Some(rest) = l.strip_prefix("deb ") {
            rest.split_whitespace().find(|w| w.starts_with("http"))
        } else {
            None
        }?;
        (uri.ends_with("/debian") || uri.ends_with("/debian/")).then(|| uri.to_string())
    })
}

/// The newest `linux-image-SERIES.*-cloud-amd64-unsigned` package as a .deb in the cache:
/// downloaded once, reused afterwards (with no network). When the archive no longer serves
/// the newest build (seen for Debian 11's security updates), the next older one is taken, and
/// the log says so.
fn kernel_deb(vm_dir: &Path, series: &str) -> Result<PathBuf> {
    let cache = vm_dir.join("cache");
    fs::create_dir_all(&cache)?;
    let prefix = format!("linux-image-{series}.");
    let suffix = "-cloud-amd64-unsigned";
    let source = AptSource::for_series(vm_dir, series);
    let cached = |package: &str| -> Result<Option<PathBuf>> {
        let mut debs: Vec<PathBuf> = fs::read_dir(&cache)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
            })
            .collect();
        debs.sort();
        Ok(debs.pop())
    };
    // A kernel of this series already here: no network needed.
    let cached_names: Vec<String> = fs::read_dir(&cache)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.split('_').next().map(str::to_string))
        .collect();
    if let Some(p) = newest_package(&cached_names, &prefix, suffix) {
        return Ok(cached(&p)?.expect("listed in the cache"));
    }
    if let Err(e) = source.prepare() {
        eprintln!("xtask: could not fetch package lists for {series}: {e:#}");
    }
    let mut known = source.packages(&prefix, suffix)?;
    if known.is_empty() && matches!(source, AptSource::System) && is_root() {
        eprintln!("xtask: apt knows no {prefix}*{suffix}: running apt-get update");
        crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
        known = source.packages(&prefix, suffix)?;
    }
    let mut tried = Vec::new();
    while let Some(package) = newest_package(&known, &prefix, suffix) {
        known.retain(|k| *k != package);
        // Into a scratch directory first, so an interrupted download never looks cached.
        let partial = cache.join("partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        eprintln!("xtask: downloading {package}");
        // Root's apt would otherwise try to drop to the _apt user, who cannot write here.
        let ok = source
            .command("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
            .current_dir(&partial)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("xtask: the archive does not serve {package}: trying the next older build");
            tried.push(package);
            continue;
        }
        for entry in fs::read_dir(&partial)? {
            let path = entry?.path();
            fs::rename(&path, cache.join(path.file_name().unwrap()))?;
        }
        fs::remove_dir(&partial)?;
        return cached(&package)?.with_context(|| format!("apt-get download {package} left no .deb"));
    }
    if tried.is_empty() {
        bail!("no Debian package {prefix}*{suffix} known to apt: run `apt-get update` (as root)");
    }
    bail!("the archive served none of {}", tried.join(", "))
}

/// The newest of `names` of the form PREFIX<version>SUFFIX, comparing the numbers in
/// <version> ("0-56" in linux-image-6.1.0-56-cloud-amd64-unsigned, "117+deb12" in
/// linux-image-6.12.117+deb12-cloud-amd64-unsigned) numerically.
fn newest_package(names: &[String], prefix: &str, suffix: &str) -> Option<String> {
    names
        .iter()
        .filter_map(|n| {
            let version = n.strip_prefix(prefix)?.strip_suffix(suffix)?;
            // "linux-image-6.1." must not take linux-image-6.12.*: the version starts with a digit
            // and, for 6.1, is "0-ABI".
            if !version.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let key: Vec<u64> = version.split(|c: char| !c.is_ascii_digit()).filter_map(|d| d.parse().ok()).collect();
            Some((key, n))
        })
        .max()
        .map(|(_, n)| n.clone())
}

/// modules.dep: module name -> (its path, the paths of everything it depends on).
fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            Some((module_name(path), (path.to_string(), deps)))
        })
        .collect()
}

/// kernel/net/ipv4/tcp_diag.ko.xz -> tcp_diag (module names use '_' where files may use '-').
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let name = file.split(".ko").next().unwrap_or(file);
    name.replace('-', "_")
}

/// The paths of `wanted` and everything they depend on (modules.dep lists the full closure
/// of each module already; following it again costs nothing and guards against a partial one).
fn module_closure(deps: &BTreeMap<String, (String, Vec<String>)>, wanted: &[String]) -> Result<BTreeSet<String>> {
    let mut paths = BTreeSet::new();
    let mut todo: Vec<String> = wanted.to_vec();
    while let Some(name) = todo.pop() {
        let (path, needs) = deps.get(&name).with_context(|| format!("module {name} is not in modules.dep"))?;
        if paths.insert(path.clone()) {
            todo.extend(needs.iter().map(|p| module_name(p)));
        }
    }
    Ok(paths)
}

fn single_dir_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel release in {}, found {names:?}", dir.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Initramfs

/// Assembles the guest's root in `run_dir/root` and packs it into `run_dir/initramfs.cpio`
/// (uncompressed: QEMU loads it as fast either way, and the emulated kernel would spend
/// seconds inflating it).
fn build_initramfs(
    run_dir: &Path,
    kernel: &GuestKernel,
    binaries: &SuiteBinaries,
    mode: &str,
    tests: &[(String, Option<String>)],
    opts: &MatrixOptions,
) -> Result<PathBuf> {
    let root = run_dir.join("root");
    let _ = fs::remove_dir_all(&root);
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "etc", "bin", "usr/bin", "var", "opt/socktrace"] {
        fs::create_dir_all(root.join(dir))?;
    }
    // iproute2 keeps network namespaces in /var/run/netns; the kernel runs /sbin/modprobe.
    std::os::unix::fs::symlink("../run", root.join("var/run"))?;
    std::os::unix::fs::symlink("bin", root.join("sbin"))?;

    // Busybox (static) for the shell and everything else /init uses.
    let busybox = find_program("busybox")?;
    let busybox_libs = shared_libraries(&busybox)?;
    ensure!(busybox_libs.is_empty(), "{} is not static: install busybox-static", busybox.display());
    fs::copy(&busybox, root.join("bin/busybox"))?;
    let applets = Command::new(&busybox).arg("--list").output().context("busybox --list")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !GUEST_TOOLS.contains(&applet) {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }

    // The host's tools, with the libraries and the loader they link with, at the paths the
    // loader will look for them.
    let mut libraries = BTreeSet::new();
    for tool in GUEST_TOOLS {
        let path = find_program(tool)?;
        fs::copy(&path, root.join("usr/bin").join(tool)).with_context(|| format!("copying {}", path.display()))?;
        libraries.extend(shared_libraries(&path)?);
    }
    for lib in &libraries {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(lib));
        fs::create_dir_all(dest.parent().unwrap())?;
        fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }

    let opt = root.join("opt/socktrace");
    fs::copy(&binaries.socktrace, opt.join("socktrace"))?;
    fs::copy(&binaries.scenario, opt.join("scenario"))?;
    fs::copy(&binaries.crowd, opt.join("crowd"))?;
    for (name, path) in &binaries.tests {
        fs::copy(path, opt.join(name))?;
    }

    copy_tree(&kernel.modules_root, &root)?;

    // `setpriv --reuid=65534` needs no name, but tools print nicer with these.
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    // Each as `binary` or `binary:filter` (see vm_init.sh).
    let tests: Vec<String> = tests
        .iter()
        .filter(|(name, _)| binaries.tests.iter().any(|(n, _)| n == name))
        .map(|(name, filter)| match filter {
            Some(f) => format!("{name}:{f}"),
            None => name.to_string(),
        })
        .collect();
    let exports: String = opts
        .env
        .iter()
        .filter_map(|var| var.split_once('='))
        .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
        .collect();
    let env = format!(
        "MODULES={}\nTESTS={}\nPROBE_MODE={}\n{exports}set -- {}\n",
        shell_quote(&kernel.modules_to_load.join(" ")),
        shell_quote(&tests.join(" ")),
        shell_quote(mode),
        opts.test_args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    );
    fs::write(root.join("etc/vm-test.env"), env)?;
    let init = root.join("init");
    fs::write(&init, INIT_SCRIPT)?;
    set_mode(&init, 0o755)?;

    let initramfs = run_dir.join("initramfs.cpio");
    write_cpio(&root, &initramfs)?;
    fs::remove_dir_all(&root)?;
    Ok(initramfs)
}

/// `name` on PATH or in the sbin directories (which a non-root PATH may lack), resolved to the
/// real file.
fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| fs::canonicalize(&p).unwrap_or(p));
    found.with_context(|| format!("{name} not found on this host (./x setup installs it)"))
}

/// The shared libraries (and dynamic loader) `binary` loads, as `ldd` resolves them; empty for
/// a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": static.
        return Ok(Vec::new());
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not found") {
            bail!("a library is missing: {line}");
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)";
        // the vDSO ("linux-vdso.so.1 (0x...)") has no file.
        let resolved = line.split_once("=>").map_or(line, |(_, r)| r.trim());
        let path = resolved.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Copies the tree under `from` into `to` (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&dest)?;
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Packs `root` as a newc cpio archive owned by root (the guest's files must be root's
/// whoever builds them). Directories come before their contents, symlinks stay symlinks.
fn write_cpio(root: &Path, archive: &Path) -> Result<()> {
    let mut names = Vec::new();
    list_tree(root, Path::new(""), &mut names)?;
    let mut list = Vec::new();
    for n in &names {
        list.extend_from_slice(n.as_os_str().as_encoded_bytes());
        list.push(0);
    }
    let mut cpio = Command::new("cpio")
        .args(["--create", "--format=newc", "--null", "--owner=0:0", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(archive)?)
        .spawn()
        .context("running cpio (./x setup installs it)")?;
    cpio.stdin.take().unwrap().write_all(&list)?;
    let status = cpio.wait()?;
    ensure!(status.success(), "cpio failed: {status}");
    Ok(())
}

fn list_tree(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        out.push(path.clone());
        if entry.file_type()?.is_dir() {
            list_tree(root, &path, out)?;
        }
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------------
// Booting and judging

/// What a VM printed, and how it ended.
struct Console {
    lines: Vec<String>,
    duration: Duration,
    timed_out: bool,
}

impl Console {
    fn init_started(&self) -> bool {
        self.lines.iter().any(|l| l.contains(INIT_MARKER))
    }

    /// The guest kernel died of one of the emulator's own faults (see EMULATOR_FAULTS).
    fn emulator_fault(&self) -> Option<&'static str> {
        if !self.lines.iter().any(|l| l.contains("Kernel panic")) {
            return None;
        }
        EMULATOR_FAULTS.iter().copied().find(|f| self.lines.iter().any(|l| l.contains(f)))
    }
}

/// Oopses that QEMU's multi-threaded TCG causes in a sound kernel, seen here in guests that
/// ran the suite: a vCPU executing kernel text that another vCPU is patching (a static key
/// enabled as socktrace attaches: "Oops: int3" in plain kernel code), and a double fault in
/// the slab allocator's cmpxchg16b fast path, with garbage flags, while the verifier
/// allocated. A guest that dies of one is booted once more (BOOT_ATTEMPTS); one that dies of
/// anything else is a failure.
const EMULATOR_FAULTS: &[&str] = &["Oops: int3", "traps: PANIC: double fault"];

/// Boots `kernel` with `initramfs` in QEMU, echoing the console live (prefixed with `label`)
/// and saving it to `log` (after what it holds, when `append`); kills QEMU after `limit`.
fn boot(
    label: &str,
    kernel: &GuestKernel,
    initramfs: &Path,
    opts: &MatrixOptions,
    log: &Path,
    append: bool,
) -> Result<Console> {
    let limit = opts.vm_timeout;
    // More vCPUs than the suite's two run on one emulator thread: QEMU's multi-threaded TCG
    // lets a vCPU execute kernel text while another patches it (a static key enabled as
    // socktrace attaches), and an 8-CPU guest died that way ("Oops: int3" in inet_ehashfn)
    // after /init, where booting again does not help. One thread emulates the same 8 CPUs.
    let accel = if opts.cpus > 2 { "tcg,thread=single" } else { "tcg,thread=multi" };
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", accel, "-cpu", "max"])
        .args(["-smp", &opts.cpus.to_string(), "-m", &opts.memory_mib.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // panic=-1 with -no-reboot: a guest panic ends QEMU at once instead of waiting for
        // the time limit. loglevel=4 keeps routine kernel messages off the console.
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "xtask: [{label}] booting {} ({}), time limit {}s",
        kernel.release,
        kernel.vmlinuz.display(),
        limit.as_secs()
    );
    let started = Instant::now();
    let mut child = qemu.spawn().context("starting qemu-system-x86_64 (./x setup installs qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<String>();
    // Both end when QEMU closes its output, which disconnects the channel.
    spawn_line_reader(child.stdout.take().unwrap(), tx.clone());
    spawn_line_reader(child.stderr.take().unwrap(), tx);
    let mut log_file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("creating {}", log.display()))?;
    writeln!(log_file, "xtask: booting {} with {}", kernel.release, initramfs.display())?;
    let mut lines = Vec::new();
    let deadline = started + limit;
    let mut timed_out = false;
    loop {
        // Checked before every line too: a guest that prints without end must not outlive it.
        let left = deadline.saturating_duration_since(Instant::now());
        let received = if left.is_zero() { Err(mpsc::RecvTimeoutError::Timeout) } else { rx.recv_timeout(left) };
        match received {
            Ok(line) => {
                println!("[{label}] {line}");
                writeln!(log_file, "{line}")?;
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let msg = format!("xtask: [{label}] no power-off within {}s: killing QEMU", limit.as_secs());
                eprintln!("{msg}");
                writeln!(log_file, "{msg}")?;
                let _ = child.kill();
                break;
            }
        }
    }
    // QEMU closed its output (it is exiting) or was killed: either way it ends promptly.
    let status = crate::wait_with_limit(&mut child, Duration::from_secs(30))?;
    let duration = started.elapsed();
    if let Some(status) = status.filter(|s| !s.success()) {
        let msg = format!("xtask: [{label}] QEMU exited with {status}");
        eprintln!("{msg}");
        writeln!(log_file, "{msg}")?;
    }
    Ok(Console { lines, duration, timed_out })
}

fn spawn_line_reader(r: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // The serial console ends lines with \r\n.
                    let line = strip_terminal_escapes(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// The firmware clears the screen and toggles line wrap (ESC c, ESC [ ... letter): noise in a
/// log.
fn strip_terminal_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // Parameters and intermediates up to the final byte (a letter, @, ~ ...).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// One test binary's marker line: `SOCKTRACE-VM-RESULT test=NAME exit=CODE passed=N failed=M`.
#[derive(Debug, PartialEq)]
struct BinaryResult {
    test: String,
    exit: Option<i32>,
    passed: u64,
    failed: u64,
}

fn parse_result_marker(line: &str) -> Option<BinaryResult> {
    // Tolerates kernel messages printed on the same console line before the marker.
    let rest = &line[line.find(RESULT_MARKER)? + RESULT_MARKER.len()..];
    let mut fields = BTreeMap::new();
    for word in rest.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            fields.insert(k, v);
        }
    }
    Some(BinaryResult {
        test: fields.get("test")?.to_string(),
        exit: fields.get("exit").and_then(|v| v.parse().ok()),
        passed: fields.get("passed").and_then(|v| v.parse().ok()).unwrap_or(0),
        failed: fields.get("failed").and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

fn judge(
    kernel: &GuestKernel,
    mode: &str,
    tests: &[(String, Option<String>)],
    console: Console,
    boots: u32,
    log: PathBuf,
) -> VmOutcome {
    let results: Vec<BinaryResult> = console.lines.iter().filter_map(|l| parse_result_marker(l)).collect();
    let mut problems = Vec::new();
    if console.timed_out {
        problems.push(format!("timed out after {:.0}s (QEMU killed)", console.duration.as_secs_f64()));
    }
    if let Some(panic) = console.lines.iter().find(|l| l.contains("Kernel panic")) {
        problems.push(format!("the guest kernel panicked: {}", panic.trim()));
    }
    for (test, _) in tests {
        match results.iter().find(|r| r.test == *test) {
            None => problems.push(format!("{test} never reported a result (the guest stopped early)")),
            Some(r) if r.exit != Some(0) => problems.push(format!(
                "{test} exited with {}",
                r.exit.map_or("an unknown status".to_string(), |c| c.to_string())
            )),
            Some(_) => {}
        }
    }
    if !console.timed_out && !console.lines.iter().any(|l| l.contains(DONE_MARKER)) && problems.is_empty() {
        problems.push("the guest never reached the end of /init".to_string());
    }
    let passed = results.iter().map(|r| r.passed).sum();
    let failed = results.iter().map(|r| r.failed).sum();
    let failed_tests = console.lines.iter().filter_map(|l| failed_test_name(l).map(str::to_string)).collect();
    VmOutcome {
        kernel: kernel.series.clone(),
        kernel_release: kernel.release.clone(),
        mode: mode.to_string(),
        passed,
        failed,
        failed_tests,
        duration: console.duration,
        boots,
        ok: problems.is_empty() && failed == 0,
        problems,
        log,
    }
}

/// The test a libtest line says failed: "test NAME ... FAILED", with or without the
/// "<1.234s>" that --report-time appends.
fn failed_test_name(line: &str) -> Option<&str> {
    let (name, rest) = line.strip_prefix("test ")?.split_once(" ... FAILED")?;
    (rest.is_empty() || rest.starts_with(" <")).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_are_read_with_and_without_report_time() {
        assert_eq!(failed_test_name("test a_b ... FAILED"), Some("a_b"));
        assert_eq!(failed_test_name("test a_b ... FAILED <12.034s>"), Some("a_b"));
        assert_eq!(failed_test_name("test a_b ... ok <1.000s>"), None);
        assert_eq!(failed_test_name("[x] test a_b ... FAILED"), None);
    }

    #[test]
    fn newest_kernel_package_compares_numbers_not_text() {
        let names: Vec<String> = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-54-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        ]
        .map(String::from)
        .to_vec();
        let suffix = "-cloud-amd64-unsigned";
        assert_eq!(
            newest_package(&names, "linux-image-6.1.", suffix).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64-unsigned")
        );
        let names: Vec<String> =
            ["linux-image-6.12.99+deb12-cloud-amd64-unsigned", "linux-image-6.12.117+deb12-cloud-amd64-unsigned"]
                .map(String::from)
                .to_vec();
        assert_eq!(
            newest_package(&names, "linux-image-6.12.", suffix).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(newest_package(&names, "linux-image-6.1.", suffix), None);
    }

    #[test]
    fn module_closure_follows_modules_dep() {
        let dep =
            "kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz kernel/lib/libcrc32c.ko.xz\n\
                   kernel/net/netfilter/nfnetlink.ko.xz:\n\
                   kernel/lib/libcrc32c.ko.xz:\n\
                   kernel/drivers/net/veth.ko.xz:\n\
                   kernel/net/ipv4/tcp-diag.ko.xz: kernel/net/ipv4/inet_diag.ko.xz\n\
                   kernel/net/ipv4/inet_diag.ko.xz:\n";
        let deps = parse_modules_dep(dep);
        let closure = module_closure(&deps, &["nf_tables".into(), "tcp_diag".into()]).unwrap();
        assert_eq!(
            closure.into_iter().collect::<Vec<_>>(),
            [
                "kernel/lib/libcrc32c.ko.xz",
                "kernel/net/ipv4/inet_diag.ko.xz",
                "kernel/net/ipv4/tcp-diag.ko.xz",
                "kernel/net/netfilter/nf_tables.ko.xz",
                "kernel/net/netfilter/nfnetlink.ko.xz"
            ]
        );
        assert!(module_closure(&deps, &["nope".into()]).is_err());
    }

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            ["/lib/x86_64-linux-gnu/libmnl.so.0", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn emulator_faults_are_told_from_other_panics() {
        let console = |lines: &[&str]| Console {
            lines: lines.iter().map(|l| l.to_string()).collect(),
            duration: Duration::from_secs(1),
            timed_out: false,
        };
        let double = console(&[
            "[  259.554549] traps: PANIC: double fault, error_code: 0x0",
            "[  259.560473] Kernel panic - not syncing: Fatal exception in interrupt",
        ]);
        assert_eq!(double.emulator_fault(), Some("traps: PANIC: double fault"));
        let int3 = console(&["Oops: int3: 0000 [#2] PREEMPT SMP NOPTI", "Kernel panic - not syncing: Fatal exception"]);
        assert_eq!(int3.emulator_fault(), Some("Oops: int3"));
        let bug = console(&["BUG: kernel NULL pointer dereference", "Kernel panic - not syncing: Fatal exception"]);
        assert_eq!(bug.emulator_fault(), None);
        assert_eq!(console(&["Oops: int3 (recovered)"]).emulator_fault(), None, "no panic, no retry");
    }

    #[test]
    fn result_markers_survive_kernel_noise() {
        assert_eq!(
            parse_result_marker(
                "[   12.3] random: crng SOCKTRACE-VM-RESULT test=catalogue exit=101 passed=17 failed=2"
            ),
            Some(BinaryResult { test: "catalogue".into(), exit: Some(101), passed: 17, failed: 2 })
        );
        assert_eq!(parse_result_marker("SOCKTRACE-VM-RESULT test=connect exit= passed=0 failed=0").unwrap().exit, None);
        assert_eq!(parse_result_marker("test result: ok. 3 passed"), None);
    }

    #[test]
    fn terminal_escapes_are_dropped() {
        assert_eq!(
            strip_terminal_escapes("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(strip_terminal_escapes("plain [1] text"), "plain [1] text");
    }

    #[test]
    fn shell_quoting_keeps_arguments_whole() {
        assert_eq!(shell_quote("it's a test"), r"'it'\''s a test'");
    }
}
