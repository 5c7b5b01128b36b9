#!/bin/sh
# /init of the virtual machines that `cargo xtask vm-test` boots (see xtask/src/vm.rs).
#
# Runs as PID 1 from the initramfs: prepares the few mounts and modules the scenarios need,
# runs each test binary, and reports through the serial console. QEMU exits 0 however the
# tests went, so every binary's exit code and counts travel in a marker line that the host
# parses; a missing marker means the guest died or hung.
#
# /etc/vm-test.env (written by the host) sets MODULES, TESTS, PROBE_MODE and the filter
# arguments for the test binaries as positional parameters.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
# The kernel booted and ran us: whatever fails from here is not a boot failure.
echo "SOCKTRACE-VM-INIT"

say() { echo "vm-init: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# `ip netns add` bind-mounts namespaces under /run/netns; the tests write their files in /tmp.
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# socktrace mounts tracefs itself when needed; mounting it here only helps when reading logs.
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

. /etc/vm-test.env

ip link set lo up
for module in $MODULES; do
    modprobe "$module" || say "modprobe $module failed"
done

uptime() { cut -d' ' -f1 /proc/uptime; }
say "kernel $(uname -r), probe mode $PROBE_MODE, $(nproc) CPUs, booted in $(uptime)s"

# What socktrace makes of this kernel, for whoever reads a failure. A rejected program comes
# with the verifier's log (thousands of lines): its head and tail say what went wrong.
/opt/socktrace/socktrace check --probe-mode "$PROBE_MODE" > /tmp/check.out 2>&1
check_exit=$?
check_lines=$(wc -l < /tmp/check.out)
if [ "$check_lines" -le 80 ]; then
    sed 's/^/vm-init: check: /' /tmp/check.out
else
    head -n 40 /tmp/check.out | sed 's/^/vm-init: check: /'
    say "check: ... $((check_lines - 60)) lines left out ..."
    tail -n 20 /tmp/check.out | sed 's/^/vm-init: check: /'
fi
say "socktrace check --probe-mode $PROBE_MODE exited with $check_exit at $(uptime)s"

export SOCKTRACE_BIN=/opt/socktrace/socktrace
export SCENARIO_BIN=/opt/socktrace/scenario
export CROWD_BIN=/opt/socktrace/crowd
export SOCKTRACE_TEST_PROBE_MODE="$PROBE_MODE"
export RUST_BACKTRACE=1
# Each test's wall time in the log (libtest's --report-time, unstable: unlocked here as for
# the eBPF build), so the matrix's slow tests can be found.
export RUSTC_BOOTSTRAP=1
# Emulated, an older kernel's verifier alone can take minutes over a large program (about 15x
# slower than on the host): give socktrace time to attach or to fail with its own error.
export SOCKTRACE_TEST_ATTACH_TIMEOUT=300

for entry in $TESTS; do
    # `binary` or `binary:filter`: a filter of the matrix's own (the VM's mode runs only part
    # of that binary). libtest runs what matches any filter: one the caller gave adds its
    # tests of that binary, it does not narrow the matrix's.
    test=${entry%%:*}
    only=
    if [ "$test" != "$entry" ]; then only=${entry#*:}; fi
    say "running $test --test-threads=1 $only $*"
    # The output goes both to the console (live) and to a file the counts are read from, so
    # kernel messages on the console cannot garble them.
    (
        # shellcheck disable=SC2086 # $only is one word or none
        "/opt/socktrace/$test" --test-threads=1 -Z unstable-options --report-time $only "$@" 2>&1
        echo $? > "/tmp/$test.exit"
    ) | tee "/tmp/$test.out"
    counts=$(awk '/^test result:/ {
            for (i = 1; i < NF; i++) {
                if ($(i + 1) ~ /^passed/) passed += $i
                if ($(i + 1) ~ /^failed/) failed += $i
            }
        }
        END { printf "passed=%d failed=%d", passed, failed }' "/tmp/$test.out")
    echo "SOCKTRACE-VM-RESULT test=$test exit=$(cat "/tmp/$test.exit") $counts"
    say "$test done at $(uptime)s"
done

echo "SOCKTRACE-VM-DONE"
poweroff -f
# Only if poweroff could not: the kernel's own power-off.
echo o > /proc/sysrq-trigger
sleep 10
