//! The kernel's tick rate (`CONFIG_HZ`), to turn the jiffies some socket fields hold (when a
//! socket last sent and received) into time. The kernel does not export HZ; /proc/timer_list
//! shows the monotonic clock and `jiffies` read together, and jiffies start at
//! `INITIAL_JIFFIES` = 2^32 - 300 * HZ (they wrap five minutes after boot, by design), so
//! `HZ = (jiffies - 2^32) / (seconds since boot - 300)`. Away from that five-minute mark one
//! reading suffices; near it, two readings 200 ms apart give the rate instead.

/// The tick rates Linux can be built with.
const RATES: [u32; 4] = [100, 250, 300, 1000];

/// The kernel's HZ, or None if /proc/timer_list cannot be read (it needs root) or the
/// measured rate is not one Linux has.
pub fn hz() -> Option<u32> {
    let (t0, j0) = read_timer_list()?;
    let secs = t0 as f64 / 1e9;
    let rate = if (secs - 300.0).abs() > 30.0 {
        (j0 as f64 - 4_294_967_296.0) / (secs - 300.0)
    } else {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (t1, j1) = read_timer_list()?;
        (j1.saturating_sub(j0)) as f64 / ((t1.saturating_sub(t0)) as f64 / 1e9)
    };
    nearest_rate(rate)
}

/// The Linux rate within 5% of `measured`.
fn nearest_rate(measured: f64) -> Option<u32> {
    RATES.into_iter().find(|&r| (measured - r as f64).abs() < r as f64 * 0.05)
}

/// `now at N nsecs` and the first `jiffies: N`, which the kernel prints together.
fn read_timer_list() -> Option<(u64, u64)> {
    use std::io::{BufRead as _, BufReader};
    let f = std::fs::File::open("/proc/timer_list").ok()?;
    let mut now = None;
    // Bounded: the first tick device's block comes within the first few hundred lines per CPU.
    for line in BufReader::new(f).lines().take(100_000) {
        let line = line.ok()?;
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("now at ") {
            now = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("jiffies: ") {
            return Some((now?, rest.trim().parse().ok()?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_round_to_the_ones_linux_has() {
        // 6,402,472 jiffies past the wrap, 25,910.1 s after boot: HZ 250.
        assert_eq!(super::nearest_rate(6_402_472.0 / (25_910.1 - 300.0)), Some(250));
        assert_eq!(super::nearest_rate(1003.0), Some(1000));
        assert_eq!(super::nearest_rate(180.0), None);
    }

    /// The real /proc/timer_list of this machine (the tests run as root).
    #[cfg(feature = "host-kernel-tests")]
    #[test]
    fn this_kernel_has_a_rate() {
        assert!(super::hz().is_some());
    }
}
