//! tracefs: where classic tracepoints are listed, with the layout of their records.

use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, mounting it at /sys/kernel/tracing when nothing is mounted (some
/// systems do not mount it at boot; aya needs it to attach tracepoints).
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    let rc = unsafe {
        libc::mount(c"nodev".as_ptr(), c"/sys/kernel/tracing".as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {} failed ({err}); \
             mount it with `mount -t tracefs nodev /sys/kernel/tracing`",
            target.display()
        );
    }
    eprintln!("socktrace: mounted tracefs at {}", target.display());
    find().ok_or_else(|| anyhow!("tracefs mounted but {}/events is missing", target.display()))
}

fn find() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.join("events").is_dir())
}

/// One field of a tracepoint record, as its `format` file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub fields: Vec<Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self> {
        let path = tracefs.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("tracepoint {category}:{name} is not available ({})", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses lines like `field:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if !part.is_empty() && decl.is_none() && !part.contains(':') {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                bail!("unreadable field line: {line:?}");
            };
            // The name is the last identifier of the declaration, before any array suffix.
            let decl = decl.split('[').next().unwrap_or(decl);
            let name = decl
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .find(|s| !s.is_empty())
                .ok_or_else(|| anyhow!("no field name in {line:?}"))?;
            fields.push(Field { name: name.to_string(), offset, size });
        }
        if fields.is_empty() {
            bail!("no fields");
        }
        Ok(Self { fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_CONNECT: &str = "name: sys_enter_connect\nID: 2230\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:struct sockaddr * uservaddr;\toffset:24;\tsize:8;\tsigned:0;\n\
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;\n\n\
print fmt: \"fd: 0x%08lx\"\n";

    #[test]
    fn parses_names_offsets_and_sizes() {
        let f = Format::parse(SYS_ENTER_CONNECT).unwrap();
        assert_eq!(f.field("__syscall_nr").unwrap().offset, 8);
        assert_eq!(f.field("fd").unwrap().offset, 16);
        assert_eq!(f.field("uservaddr").unwrap().offset, 24);
        assert_eq!(f.field("saddr").unwrap().size, 28);
        assert_eq!(f.field("common_type").unwrap().size, 2);
        assert!(f.field("ret").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Format::parse("name: x\nformat:\n").is_err());
        assert!(Format::parse("\tfield:int x;\toffset:zz;\tsize:4;").is_err());
    }
}
