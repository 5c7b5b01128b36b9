//! Kernel code addresses -> function names, from `/proc/kallsyms`: where a packet was dropped.
//!
//! The table is large (hundreds of thousands of lines), and addresses come rarely (a drop behind
//! a timeout), so nothing is kept of it: each new address is one pass over the file, keeping
//! the nearest symbol at or below it, and the answer is remembered.
//!
//! The file is opened once, before socktrace drops its capabilities: the kernel shows the
//! addresses to whoever opened it with CAP_SYSLOG (`kptr_restrict`), and judges that at open.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek};
use std::path::PathBuf;

pub struct Symbols {
    file: Option<std::fs::File>,
    known: HashMap<u64, Option<String>>,
    /// The whole table, for `--kstack` (many addresses per failure): read once at start.
    table: Option<std::collections::BTreeMap<u64, String>>,
}

/// At most this many addresses are remembered (a bound for a long-running agent).
const REMEMBERED: usize = 4096;

impl Symbols {
    /// Opens `/proc/kallsyms` now (while socktrace still has its capabilities).
    pub fn open() -> Self {
        Self::from_file(PathBuf::from("/proc/kallsyms"))
    }

    fn from_file(path: PathBuf) -> Self {
        Symbols { file: std::fs::File::open(path).ok(), known: HashMap::new(), table: None }
    }

    /// Reads the whole table now (`--kstack`: every frame of every stack is looked up).
    pub fn load_all() -> Self {
        let table = aya::util::kernel_symbols().ok().filter(|t| t.keys().any(|&a| a != 0));
        Symbols { file: None, known: HashMap::new(), table }
    }

    /// `function_at`, or the bare address when it cannot be named.
    pub fn name(&mut self, addr: u64) -> String {
        self.function_at(addr).unwrap_or_else(|| format!("{addr:#x}"))
    }

    /// The function `addr` is in (`name+0x1f`), or None when it cannot be told (no access to
    /// the addresses: kptr_restrict, or not root).
    pub fn function_at(&mut self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        if let Some(table) = &self.table {
            let (at, name) = table.range(..=addr).next_back()?;
            let off = addr - at;
            return (off < 1 << 20).then(|| if off == 0 { name.clone() } else { format!("{name}+{off:#x}") });
        }
        if !self.known.contains_key(&addr) {
            self.prefetch(&[addr]);
        }
        self.known.get(&addr).cloned().flatten()
    }

    /// Names every address of `addrs` not yet known in one pass over the table (a drop's
    /// stack is a dozen addresses: one pass, not twelve); `function_at` then answers them.
    pub fn prefetch(&mut self, addrs: &[u64]) {
        if self.table.is_some() {
            return;
        }
        let mut wanted: Vec<u64> = addrs.iter().copied().filter(|a| *a != 0 && !self.known.contains_key(a)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        let mut best: Vec<Option<(u64, String)>> = vec![None; wanted.len()];
        let read = self.each_code_symbol(|a, name| {
            // The addresses at or above `a`, whose best is below it.
            let from = wanted.partition_point(|&w| w < a);
            for b in &mut best[from..] {
                if b.as_ref().is_none_or(|(at, _)| *at < a) {
                    *b = Some((a, String::from_utf8_lossy(name).into_owned()));
                }
            }
        });
        if !read {
            return;
        }
        if self.known.len() + wanted.len() >= REMEMBERED {
            self.known.clear();
        }
        for (addr, b) in wanted.into_iter().zip(best) {
            let found = b.and_then(|(at, name)| {
                // Farther than any kernel function is long: not in the table's code.
                let off = addr - at;
                (off < 1 << 20).then(|| if off == 0 { name } else { format!("{name}+{off:#x}") })
            });
            self.known.insert(addr, found);
        }
    }

    /// Calls `f` with each code symbol of the table, in one pass from its start; false when
    /// the table cannot be read. Lines are read into one reused buffer, in large reads: the
    /// table has over 100,000 lines, and a string per line cost more than the kernel's own
    /// formatting of them.
    fn each_code_symbol(&self, mut f: impl FnMut(u64, &[u8])) -> bool {
        let Some(mut file) = self.file.as_ref() else { return false };
        if file.seek(std::io::SeekFrom::Start(0)).is_err() {
            return false;
        }
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
            if let Some((a, name)) = code_symbol(&line) {
                f(a, name);
            }
        }
    }
}

/// A code symbol's line of the table (t/T, w/W for weak code): its address (never 0: hidden
/// addresses read as 0) and name (a module's symbols end in a tab and `[module]`).
fn code_symbol(line: &[u8]) -> Option<(u64, &[u8])> {
    let mut parts = line.split(|&b| b == b' ' || b == b'\t' || b == b'\n').filter(|p| !p.is_empty());
    let (a, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if !matches!(kind, b"t" | b"T" | b"w" | b"W") || a.len() > 16 {
        return None;
    }
    let mut addr = 0u64;
    for &d in a {
        addr = (addr << 4) | u64::from((d as char).to_digit(16)?);
    }
    (addr != 0).then_some((addr, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_code_symbol_at_or_below() {
        let dir = std::env::temp_dir().join(format!("socktrace-kallsyms-{}", std::process::id()));
        std::fs::write(
            &dir,
            "ffffffff81000000 T _stext\nffffffff81100000 t nft_do_chain\nffffffff81100800 D some_data\n\
             ffffffff81200000 T tcp_v4_rcv [kernel]\n0000000000000000 T hidden\n",
        )
        .unwrap();
        let mut s = Symbols::from_file(dir.clone());
        // Asked twice: the second pass rewinds the same open file.
        assert_eq!(s.function_at(0xffffffff81000010).as_deref(), Some("_stext+0x10"));
        assert_eq!(s.function_at(0xffffffff81100123).as_deref(), Some("nft_do_chain+0x123"));
        // Data symbols are skipped: still in nft_do_chain.
        assert_eq!(s.function_at(0xffffffff81100900).as_deref(), Some("nft_do_chain+0x900"));
        assert_eq!(s.function_at(0xffffffff81200000).as_deref(), Some("tcp_v4_rcv"));
        assert_eq!(s.function_at(0x1000), None);
        assert_eq!(s.function_at(0), None);
        // Many at once, in one pass: the same answers.
        let mut many = Symbols::from_file(dir.clone());
        let addrs = [0xffffffff81200000, 0xffffffff81000010, 0x1000, 0xffffffff81100900, 0xffffffff81100123];
        many.prefetch(&addrs);
        many.file = None;
        let named: Vec<Option<String>> = addrs.iter().map(|&a| many.function_at(a)).collect();
        assert_eq!(
            named,
            [Some("tcp_v4_rcv"), Some("_stext+0x10"), None, Some("nft_do_chain+0x900"), Some("nft_do_chain+0x123")]
                .map(|n| n.map(str::to_string))
        );
        std::fs::remove_file(dir).unwrap();
    }

    #[cfg(feature = "host-kernel-tests")]
    #[test]
    fn this_kernel_names_its_own_functions() {
        // socktrace runs as root: the addresses are visible.
        let mut s = Symbols::open();
        let line = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let tcp = line.lines().find(|l| l.ends_with(" tcp_v4_rcv")).expect("tcp_v4_rcv in kallsyms");
        let addr = u64::from_str_radix(tcp.split(' ').next().unwrap(), 16).unwrap();
        assert_ne!(addr, 0, "kallsyms shows zero addresses: not root?");
        assert_eq!(s.function_at(addr + 4).as_deref(), Some("tcp_v4_rcv+0x4"));
    }
}
