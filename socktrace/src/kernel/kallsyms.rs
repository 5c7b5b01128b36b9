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
        if let Some(known) = self.known.get(&addr) {
            return known.clone();
        }
        let found = self.lookup(addr);
        if self.known.len() >= REMEMBERED {
            self.known.clear();
        }
        self.known.insert(addr, found.clone());
        found
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
        let Some(mut file) = self.file.as_ref() else { return };
        if file.seek(std::io::SeekFrom::Start(0)).is_err() {
            return;
        }
        let mut best: Vec<Option<(u64, String)>> = vec![None; wanted.len()];
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let Some((a, name)) = code_symbol(&line) else { continue };
            // The addresses at or above `a`, whose best is below it.
            let from = wanted.partition_point(|&w| w < a);
            for (w, b) in wanted[from..].iter().zip(&mut best[from..]) {
                if b.as_ref().is_none_or(|(at, _)| *at < a) && *w >= a {
                    *b = Some((a, name.to_string()));
                }
            }
        }
        if self.known.len() + wanted.len() >= REMEMBERED {
            self.known.clear();
        }
        for (addr, b) in wanted.into_iter().zip(best) {
            let found = b.and_then(|(at, name)| {
                let off = addr - at;
                (off < 1 << 20).then(|| if off == 0 { name } else { format!("{name}+{off:#x}") })
            });
            self.known.insert(addr, found);
        }
    }

    fn lookup(&mut self, addr: u64) -> Option<String> {
        let mut file = self.file.as_ref()?;
        file.seek(std::io::SeekFrom::Start(0)).ok()?;
        let mut best: Option<(u64, String)> = None;
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let Some((a, name)) = code_symbol(&line) else { continue };
            if a > addr || best.as_ref().is_some_and(|(b, _)| *b >= a) {
                continue;
            }
            best = Some((a, name.to_string()));
        }
        let (at, name) = best?;
        // Farther than any kernel function is long: the address is not in the table's code.
        let off = addr - at;
        (off < 1 << 20).then(|| if off == 0 { name } else { format!("{name}+{off:#x}") })
    }
}

/// A code symbol's line of the table (t/T, w/W for weak code): its address (never 0: hidden
/// addresses read as 0) and name.
fn code_symbol(line: &str) -> Option<(u64, &str)> {
    let mut parts = line.split_ascii_whitespace();
    let (a, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if !matches!(kind, "t" | "T" | "w" | "W") {
        return None;
    }
    let a = u64::from_str_radix(a, 16).ok()?;
    (a != 0).then_some((a, name))
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
