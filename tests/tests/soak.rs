//! The soak, short: 30 s of failing calls over many short-lived sockets at 20k/s (or as fast
//! as this machine goes). Every failing call is accounted for, socktrace's memory stays flat,
//! and the kernel's per-socket map does not keep dead sockets. (`cargo xtask soak` runs the
//! 10-minute version.)

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

#[test]
fn soak_30s() {
    let r = socktrace_tests::soak::run(SCENARIO, 30, 20_000).unwrap();
    println!("{r}");
    assert_eq!(r.seen + r.lost, r.expected, "every failing call accounted for: {r}");
    assert!(r.expected >= 30 * 2_000, "the workload ran: {r}");
    assert!(r.rss_growth() <= 0.10, "RSS flat within 10%: {r}");
    assert!(r.sockets_tracked <= 1024, "dead sockets leave the kernel map: {r}");
}
