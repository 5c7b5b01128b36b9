//! Builds the eBPF programs from `socktrace-ebpf/` on every build and leaves the object in
//! OUT_DIR, where `include_bytes_aligned!` embeds it in the binary.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // Which rustup toolchain compiles the eBPF crate: `nightly` (with rust-src) on an ordinary
    // machine; `./x setup` links Debian's rustc-web as `socktrace-ebpf` where rustup has none.
    println!("cargo:rerun-if-env-changed=SOCKTRACE_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("SOCKTRACE_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain.as_deref() {
        None | Some("") | Some("nightly") => aya_build::Toolchain::Nightly,
        Some(name) => aya_build::Toolchain::Custom(name),
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .join("socktrace-ebpf");
    println!("cargo:rerun-if-changed={}", root.with_file_name("socktrace-common").display());
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "socktrace-ebpf", root_dir: root, ..Default::default() }],
        toolchain,
    )
}
