//! Builds the eBPF programs from `socktrace-ebpf/` on every build and leaves the object in
//! OUT_DIR, where `include_bytes_aligned!` embeds it in the binary.
//!
//! Without bpf-linker (a machine that only runs `cargo check`/`clippy`, or an editor), the
//! object is an empty stub and a warning says so; such a binary refuses to trace and says how
//! to build the real one. `SOCKTRACE_EBPF_STUB=1` asks for the stub explicitly.
use anyhow::Context as _;
use std::process::Command;

/// Name of the embedded object in OUT_DIR (the eBPF binary's name).
const OBJECT: &str = "socktrace";

/// The rustup toolchain `./x setup` links to Debian's rustc-web where no nightly with
/// rust-src can be installed.
const LINKED_TOOLCHAIN: &str = "socktrace-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SOCKTRACE_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=SOCKTRACE_EBPF_STUB");
    // A bpf-linker installed later must turn a stub build into a real one.
    println!("cargo:rerun-if-env-changed=PATH");
    let forced = std::env::var_os("SOCKTRACE_EBPF_STUB").is_some_and(|v| v == "1");
    if forced || !has_bpf_linker() {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?).join(OBJECT);
        std::fs::write(&out, b"").context("writing the stub eBPF object")?;
        if !forced {
            println!(
                "cargo:warning=bpf-linker not found: socktrace is built without its eBPF programs (enough for \
                 cargo check/clippy); run `./x setup` to install the eBPF toolchain, then build again"
            );
        }
        return Ok(());
    }
    let name = match std::env::var("SOCKTRACE_EBPF_TOOLCHAIN") {
        Ok(name) if !name.is_empty() => name,
        _ => detect_toolchain(),
    };
    if name != "nightly" && std::env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // A stable compiler needs this for `-Z build-std=core`; aya-build passes it on.
        std::env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let toolchain = if name == "nightly" { aya_build::Toolchain::Nightly } else { aya_build::Toolchain::Custom(&name) };
    let ebpf =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.join("socktrace-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf.with_file_name("socktrace-common").display());
    let root = ebpf.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "socktrace-ebpf", root_dir: root, ..Default::default() }],
        toolchain,
    )
    .with_context(|| format!("building the eBPF programs with toolchain {name:?} (run `./x setup` to install one)"))
}

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// nightly with rust-src if rustup has it, else the toolchain `./x setup` linked.
fn detect_toolchain() -> String {
    let nightly_has_src = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|sysroot| std::path::Path::new(&sysroot).join("lib/rustlib/src/rust/library/core").is_dir());
    if nightly_has_src {
        return "nightly".into();
    }
    let linked = Command::new("rustup")
        .args(["run", LINKED_TOOLCHAIN, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if linked {
        LINKED_TOOLCHAIN.into()
    } else {
        "nightly".into()
    }
}
