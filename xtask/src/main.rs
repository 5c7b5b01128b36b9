//! Project tasks: `cargo xtask build|test|demo`. Run through `./x`, which first makes sure the
//! eBPF toolchain is installed and exports where it is.

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod image;
mod modgraph;
mod vm;

#[derive(Parser)]
#[command(name = "xtask", about = "socktrace's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build socktrace (the eBPF programs are compiled and embedded by its build script).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// The whole suite: rustfmt and clippy (every crate, the eBPF one too), unit tests of every crate, the end-to-end tests on this kernel (root +
    /// BPF; the scenario suite once more in tracepoint mode), then the scenario suite in QEMU
    /// VMs: Debian's 5.10 and 6.12 kernels in the probe modes of vm::TEST_MATRIX.
    Test {
        /// Only this kernel: skip the VM matrix.
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for the test harness (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Failing calls at a steady rate under socktrace (default 20k/s for 10 minutes): RSS,
    /// accounting and kernel map size must hold. Needs root.
    Soak {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
    },
    /// Slowdown of the traced process under socktrace, strace and bpftrace (those installed),
    /// on four loopback workloads; writes target/bench/report.md and slowdown.svg. Needs root.
    Bench {
        /// Interleaved traced/untraced pairs per workload and tool.
        #[arg(long, default_value_t = 7)]
        pairs: usize,
    },
    /// Shell completions (bash, zsh, fish) and the man page, into target/docs.
    Docs,
    /// What needs no root, no BPF and no VM: rustfmt, clippy (every crate, the eBPF one
    /// too), the module graph (no import cycle), file sizes, and the unit tests that read
    /// nothing of this machine's kernel. `test` runs it first.
    Lint,
    /// The end-to-end scenarios (catalogue, connect) inside QEMU virtual machines booting
    /// Debian's cloud kernels, once per kernel and probe mode. Needs no root.
    VmTest {
        /// Kernel series to boot (repeatable; default: 6.1 and 6.12).
        #[arg(long = "kernel", value_name = "SERIES")]
        kernels: Vec<String>,
        /// socktrace probe mode to run the suite in (repeatable; default: every mode in vm::VM_MODES).
        #[arg(long = "mode", value_name = "MODE")]
        modes: Vec<String>,
        /// Build the guest's static binaries without optimisations (faster to build, slower to run).
        #[arg(long)]
        debug: bool,
        /// Hard wall-clock limit per virtual machine, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = vm::DEFAULT_VM_TIMEOUT.as_secs())]
        timeout: u64,
        /// Virtual machines booted at the same time.
        #[arg(long, value_name = "N", default_value_t = vm::DEFAULT_VM_JOBS)]
        jobs: usize,
        /// Virtual CPUs of each guest.
        #[arg(long, value_name = "N", default_value_t = 2)]
        cpus: u32,
        /// Memory of each guest, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 2048)]
        memory: u32,
        /// Test binaries to run instead of the mode's suite, each BINARY or BINARY:FILTER
        /// (repeatable; e.g. `--tests scale:traced_from_before`).
        #[arg(long = "tests", value_name = "BINARY[:FILTER]")]
        tests: Vec<String>,
        /// Environment of the test binaries (repeatable; e.g. `--env SOCKTRACE_SCALE_CONNECTIONS=36400`).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Arguments for the test binaries after `--` (e.g. a test name filter).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// A minimal container image around the static binary: an OCI layout in target/image/oci
    /// and an archive (push with `skopeo copy oci-archive:... docker://...`).
    Image {
        /// Then check it with skopeo and umoci (what `test` does).
        #[arg(long)]
        check: bool,
    },
    /// Build in release mode and run `socktrace demo`.
    Demo {
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Build { release } => build(release),
        Task::Test { no_vm, args } => test(&args, !no_vm),
        Task::Lint => {
            let started = Instant::now();
            lint()?;
            let mut totals = Totals::default();
            let ok = run_counting(&mut unit_tests(false), &mut totals)?;
            if !ok || totals.failed > 0 {
                bail!("unit tests failed");
            }
            eprintln!(
                "xtask: lint lane took {:.1} min ({} unit tests)",
                started.elapsed().as_secs_f64() / 60.0,
                totals.passed
            );
            Ok(())
        }
        Task::Soak { seconds, rate } => {
            build(true)?;
            let rel = root.join("target/release");
            run(Command::new(rel.join("soak"))
                .arg(rel.join("scenario"))
                .arg(seconds.to_string())
                .arg(rate.to_string())
                .env("SOCKTRACE_BIN", rel.join("socktrace")))
        }
        Task::Bench { pairs } => {
            build(true)?;
            let rel = root.join("target/release");
            run(Command::new(rel.join("bench"))
                .arg(rel.join("scenario"))
                .arg(root.join("target/bench"))
                .arg(pairs.to_string())
                .env("SOCKTRACE_BIN", rel.join("socktrace")))
        }
        Task::Docs => {
            build(true)?;
            let out = root.join("target/docs");
            run(Command::new(root.join("target/release/socktrace")).arg("generate-docs").arg(&out))?;
            eprintln!("xtask: completions and man page in {}", out.display());
            Ok(())
        }
        Task::VmTest { kernels, modes, debug, timeout, jobs, cpus, memory, tests, env, test_args } => {
            let defaults = vm::MatrixOptions::default();
            let opts = vm::MatrixOptions {
                kernels: if kernels.is_empty() { defaults.kernels } else { kernels },
                modes: if modes.is_empty() { defaults.modes } else { modes },
                test_args,
                release: !debug,
                vm_timeout: Duration::from_secs(timeout),
                jobs,
                only: Vec::new(),
                cpus,
                memory_mib: memory,
                tests,
                env,
            };
            vm::vm_test(&root, &opts)
        }
        Task::Image { check } => {
            let image = build_image(&root)?;
            println!("image {}: {} (layout {})", image.tag, image.archive.display(), image.layout.display());
            if check {
                image::check(&image, &root.join("target/image/check"), &socktrace_version(&root)?)?;
                println!("image checked: skopeo inspect and copy, umoci unpack, /socktrace --version");
            }
            Ok(())
        }
        Task::Demo { args } => {
            build(true)?;
            let bin = root.join("target/release/socktrace");
            run(Command::new(bin).arg("demo").args(args))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Waits for `child` at most `limit`, then kills it; None if it had to be killed.
fn wait_with_limit(child: &mut std::process::Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait()?;
    Ok(None)
}

fn build(release: bool) -> Result<()> {
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.args(["build", "--package", "socktrace", "--package", "socktrace-tests"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    eprintln!("xtask: build took {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The container image, from the static release build the VM matrix uses too.
fn build_image(root: &Path) -> Result<image::Image> {
    let binary = vm::build_static_socktrace(root, &vm::static_target_dir(root), true)?;
    image::build(&binary, &root.join("target/image"), &socktrace_version(root)?)
}

/// socktrace's version, from its Cargo.toml (the image is tagged with it).
fn socktrace_version(root: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(root.join("socktrace/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"').map(String::from))
        .context("no version in socktrace/Cargo.toml")
}

fn test(args: &[String], with_vms: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the end-to-end tests load BPF programs: run `./x test` as root (e.g. with sudo)");
    }
    let started = Instant::now();
    lint()?;
    build(false)?;
    // Unit tests run in parallel; the end-to-end tests attach real probes and make real
    // sockets fail, one at a time so their timings cannot disturb each other.
    let mut totals = Totals::default();
    // The unit tests again, with those that check this machine's kernel (BTF offsets,
    // kallsyms, HZ, cgroups): they need root and the running kernel.
    let mut unit = unit_tests(true);
    unit.args(args);
    let unit_ok = run_counting(&mut unit, &mut totals)?;
    // Every end-to-end test in the default probe mode (auto: tp_btf here)...
    let mut e2e = cargo();
    e2e.args(["test", "--no-fail-fast", "--package", "socktrace-tests", "--", "--test-threads=1"]);
    e2e.args(args);
    let e2e_ok = run_counting(&mut e2e, &mut totals)?;
    // ...and the scenario suite again in tracepoint mode: the same labels from classic
    // tracepoint records.
    let mut tracepoint = cargo();
    tracepoint
        .args([
            "test",
            "--no-fail-fast",
            "--package",
            "socktrace-tests",
            "--test",
            "catalogue",
            "--test",
            "connect",
            "--",
            "--test-threads=1",
        ])
        .args(args)
        .env("SOCKTRACE_TEST_PROBE_MODE", "tracepoint");
    eprintln!("xtask: the scenario suite in probe mode tracepoint");
    let tracepoint_ok = run_counting(&mut tracepoint, &mut totals)?;
    let host_minutes = started.elapsed().as_secs_f64() / 60.0;
    let mut vms_ok = true;
    if with_vms {
        let vm_started = Instant::now();
        let pairs = vm::TEST_MATRIX;
        let mut kernels: Vec<String> = pairs.iter().map(|(k, _)| k.to_string()).collect();
        let mut modes: Vec<String> = pairs.iter().map(|(_, m)| m.to_string()).collect();
        kernels.dedup();
        modes.sort();
        modes.dedup();
        let opts = vm::MatrixOptions {
            kernels,
            modes,
            only: pairs.iter().map(|(k, m)| (k.to_string(), m.to_string())).collect(),
            test_args: args.to_vec(),
            ..vm::MatrixOptions::default()
        };
        // The 8-CPU scale VM in the same queue (not when a test filter narrows the run).
        let mut matrices = vec![opts];
        if args.is_empty() {
            matrices.push(vm::scale_vm());
        }
        let outcomes = vm::run_matrices(&workspace_root(), &matrices)?;
        println!("{}", vm::report_table(&outcomes));
        for o in &outcomes {
            totals.passed += o.passed;
            totals.failed += o.failed;
            if !o.ok {
                vms_ok = false;
                println!("{}/{}: {}; console log {}", o.kernel, o.mode, o.problems.join("; "), o.log.display());
                for test in &o.failed_tests {
                    println!("    failed: {test}");
                }
            }
        }
        eprintln!(
            "xtask: host suite {host_minutes:.1} min, VM matrix {:.1} min",
            vm_started.elapsed().as_secs_f64() / 60.0
        );
        // The container image, from the static build just made: built and checked with the
        // tools that consume OCI images (one more test in the count).
        let root = workspace_root();
        let checked = socktrace_version(&root)
            .and_then(|v| build_image(&root).and_then(|i| image::check(&i, &root.join("target/image/check"), &v)));
        match checked {
            Ok(()) => {
                println!("test container image (skopeo inspect/copy, umoci unpack, run) ... ok");
                totals.passed += 1;
            }
            Err(e) => {
                println!("test container image ... FAILED: {e:#}");
                totals.failed += 1;
            }
        }
    }
    // One closing line for the whole suite, whatever the number of test binaries and VMs.
    println!("summary: {} passed, {} failed", totals.passed, totals.failed);
    if !(unit_ok && e2e_ok && tracepoint_ok && vms_ok) || totals.failed > 0 {
        bail!("test suite failed");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    eprintln!("xtask: whole suite took {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}

/// The unit tests of the userspace crates, in parallel; with `kernel`, also those that read
/// this machine's kernel (the `host-kernel-tests` feature: root, BTF, /proc/kallsyms).
fn unit_tests(kernel: bool) -> Command {
    let mut unit = cargo();
    unit.args([
        "test",
        "--no-fail-fast",
        "--package",
        "socktrace",
        "--package",
        "socktrace-common",
        "--package",
        "xtask",
    ]);
    if kernel {
        unit.args(["--features", "socktrace/host-kernel-tests"]);
    }
    unit.args(["--", "--test-threads=2"]);
    unit
}

/// Formatting and lints, the eBPF crate included: `cargo fmt --check`, then clippy with every
/// warning an error. The eBPF crate is linted for the host (as aya's own CI does): the same
/// code, with aya-ebpf's host stubs, and no eBPF toolchain needed for the check.
fn lint() -> Result<()> {
    let started = Instant::now();
    run(cargo().args(["fmt", "--all", "--check"]))
        .context("the tree is not formatted: run `cargo fmt --all` (rustfmt.toml has the style)")?;
    // Every feature: the unit tests that read this machine's kernel are linted too.
    run(cargo().args(["clippy", "--all-targets", "--all-features", "--", "-D", "warnings"]))?;
    let host = host_triple()?;
    run(cargo()
        .args(["clippy", "--package", "socktrace-ebpf", "--target", &host, "--", "-D", "warnings"])
        // Its own target directory: the panic strategy differs from the host build's.
        .env("CARGO_TARGET_DIR", "target/clippy-ebpf")
        .env("RUSTFLAGS", "-C panic=abort"))?;
    modgraph::check(&workspace_root())?;
    file_sizes(&workspace_root())?;
    eprintln!("xtask: fmt, clippy, module graph and file sizes took {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// No source file of the product longer than this before its tests: past it, a file holds
/// more than one thing and wants splitting where its seams are.
const MAX_FILE_LINES: usize = 900;

/// Every `.rs` file of the userspace, kernel and ABI crates within `MAX_FILE_LINES` lines
/// before its first `#[cfg(test)]`.
fn file_sizes(root: &Path) -> Result<()> {
    let mut long = Vec::new();
    for dir in ["socktrace/src", "socktrace-ebpf/src", "socktrace-common/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path)?;
                    let code = text
                        .lines()
                        .take_while(|l| !(l.starts_with("#[cfg(test)]") || l.starts_with("#[cfg(all(test")))
                        .count();
                    if code > MAX_FILE_LINES {
                        long.push(format!("{} ({code} lines)", path.strip_prefix(root)?.display()));
                    }
                }
            }
        }
    }
    if !long.is_empty() {
        bail!("over {MAX_FILE_LINES} lines before the tests: {}", long.join(", "));
    }
    Ok(())
}

/// The host's target triple (named so RUSTFLAGS reach only the linted crate, never the
/// build scripts and proc macros).
fn host_triple() -> Result<String> {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())).arg("-vV").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host line")
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs a `cargo test`, echoing its output and adding up its `test result:` lines.
fn run_counting(cmd: &mut Command, totals: &mut Totals) -> Result<bool> {
    use std::io::BufRead as _;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            totals.passed += count(" passed");
            totals.failed += count(" failed");
        }
    }
    Ok(child.wait()?.success())
}
