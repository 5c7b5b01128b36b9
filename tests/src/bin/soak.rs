//! `cargo xtask soak`: failing calls at a steady rate for a long time under socktrace; reports
//! memory, accounting and the kernel map's size, and fails if any of them drifts.
//!
//! Usage: soak SCENARIO_BIN [SECONDS] [RATE]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().unwrap_or_else(|| "scenario".into());
    let seconds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600);
    let rate = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    eprintln!("soak: {rate} failing calls/s for {seconds} s under socktrace ...");
    let report = match socktrace_tests::soak::run(&scenario, seconds, rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: failed: {e:#}");
            std::process::exit(1);
        }
    };
    println!("{report}");
    let mut ok = true;
    if report.seen + report.lost != report.expected {
        eprintln!(
            "soak: FAIL: {} failing calls not accounted for",
            report.expected as i64 - (report.seen + report.lost) as i64
        );
        ok = false;
    }
    if report.rss_growth() > 0.10 {
        eprintln!("soak: FAIL: RSS grew {:.1}% (limit 10%)", report.rss_growth() * 100.0);
        ok = false;
    }
    if report.sockets_tracked > 1024 {
        eprintln!("soak: FAIL: {} socket histories left in the kernel", report.sockets_tracked);
        ok = false;
    }
    std::process::exit(if ok { 0 } else { 1 });
}
