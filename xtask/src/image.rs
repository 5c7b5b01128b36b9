//! `cargo xtask image`: a minimal container image around the static socktrace binary, as an
//! OCI image layout (`target/image/oci/`) and the same as an archive
//! (`target/image/socktrace-VERSION.oci.tar`), with no container engine needed to build it:
//! `skopeo copy oci-archive:target/image/socktrace-VERSION.oci.tar docker://REGISTRY/socktrace:VERSION`
//! pushes it, `podman load -i` loads it.
//!
//! One layer holds `/socktrace` and nothing else (the binary is static: no libc, no shell).
//! The build is reproducible: fixed timestamps and owners, so the same binary gives the same
//! digests.

use anyhow::{Context as _, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// What was built.
pub struct Image {
    pub layout: PathBuf,
    pub archive: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
}

/// Builds the image from `binary` into `out_dir` (replacing what is there).
pub fn build(binary: &Path, out_dir: &Path, version: &str) -> Result<Image> {
    let layout = out_dir.join("oci");
    let _ = fs::remove_dir_all(&layout);
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let write_blob = |bytes: &[u8]| -> Result<(String, u64)> {
        let digest = hex(&Sha256::digest(bytes));
        fs::write(blobs.join(&digest), bytes)?;
        Ok((format!("sha256:{digest}"), bytes.len() as u64))
    };

    // The layer: a tar with the binary at /socktrace, then gzip.
    let program = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(program.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "socktrace", &program[..])?;
    let layer_tar = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&layer_tar)));
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &layer_tar)?;
    let (layer_digest, layer_size) = write_blob(&gz.finish()?)?;

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/socktrace"],
            "Cmd": ["agent", "--metrics=0.0.0.0:9464"],
            "ExposedPorts": {"9464/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "socktrace",
                "org.opencontainers.image.description": "Explains every failing socket call: the errno and the TCP cause",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.licenses": "MIT OR Apache-2.0"
            }
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cargo xtask image"}]
    });
    let (config_digest, config_size) = write_blob(serde_json::to_string(&config)?.as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = write_blob(serde_json::to_string(&manifest)?.as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": version}
        }]
    });
    fs::write(layout.join("index.json"), serde_json::to_string(&index)?)?;
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;

    // The same layout as one file, what `oci-archive:` transports read.
    let archive = out_dir.join(format!("socktrace-{version}.oci.tar"));
    let mut tar = tar::Builder::new(fs::File::create(&archive)?);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", &layout)?;
    tar.finish()?;
    Ok(Image { layout, archive, tag: version.to_string(), manifest_digest })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the image with the tools that consume OCI images (Debian's skopeo and umoci): the
/// layout and the archive read, every blob matches its digest, and the unpacked root
/// filesystem runs: `/socktrace --version` prints `version`, and the runtime configuration
/// starts the agent. Each check that fails says which.
pub fn check(image: &Image, scratch: &Path, version: &str) -> Result<()> {
    use std::process::Command;
    let run = |cmd: &mut Command| -> Result<String> {
        let out = cmd.output().with_context(|| format!("running {cmd:?} (./x setup installs skopeo and umoci)"))?;
        anyhow::ensure!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch)?;
    let layout_ref = format!("oci:{}:{}", image.layout.display(), image.tag);
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &layout_ref]))?;
    let digest = format!("sha256:{}", hex(&Sha256::digest(raw.as_bytes())));
    anyhow::ensure!(
        digest == image.manifest_digest,
        "skopeo reads manifest {digest}, the index names {}",
        image.manifest_digest
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--config", &layout_ref]))?)?;
    anyhow::ensure!(inspect["config"]["Entrypoint"] == json!(["/socktrace"]), "entrypoint: {inspect}");
    // Copying verifies every blob against its digest.
    let copy = scratch.join("copy");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", image.archive.display()))
        .arg(format!("dir:{}", copy.display())))?;
    let bundle = scratch.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{}", image.layout.display(), image.tag))
        .arg(&bundle))?;
    let runtime: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("config.json"))?)?;
    anyhow::ensure!(
        runtime["process"]["args"] == json!(["/socktrace", "agent", "--metrics=0.0.0.0:9464"]),
        "the unpacked image starts {}",
        runtime["process"]["args"]
    );
    let printed = run(Command::new(bundle.join("rootfs/socktrace")).arg("--version"))?;
    anyhow::ensure!(printed.trim() == format!("socktrace {version}"), "the image's binary says {printed:?}");
    let entries: Vec<_> = fs::read_dir(bundle.join("rootfs"))?.flatten().map(|e| e.file_name()).collect();
    anyhow::ensure!(entries == ["socktrace"], "the image holds more than the binary: {entries:?}");
    let _ = fs::remove_dir_all(scratch);
    Ok(())
}
