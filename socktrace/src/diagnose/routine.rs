//! Routine outcomes of non-blocking and signal-driven code (EAGAIN, EINTR, EINPROGRESS, an
//! io_uring request cancelled): named, never a TCP cause.

use super::Diagnosis;
use crate::facts::Failure;
use crate::model::{errno::*, Cause};
use socktrace_common::routine;

/// The routine outcome `e` is, if it is one.
pub fn routine_outcome(f: &Failure, e: i32) -> Option<Diagnosis> {
    let kind = routine::kind_of(e)?;
    let explain = match kind {
        routine::EAGAIN if f.is_send() => match f.resource {
            Some(r) if r.sndbuf > 0 => format!(
                "the socket's send buffer is full ({} of {} bytes queued) and it is non-blocking (or SO_SNDTIMEO \
                 expired): retry when writable",
                r.wmem_queued, r.sndbuf
            ),
            _ => "the socket's send buffer is full and it is non-blocking (or SO_SNDTIMEO expired): retry when writable"
                .into(),
        },
        routine::EAGAIN => {
            "nothing to read yet on a non-blocking socket (or SO_RCVTIMEO expired): retry when readable".into()
        }
        routine::EINTR if is_restart(e) => format!(
            "a signal interrupted the blocking call ({} is the kernel's internal code; the program sees EINTR or a restarted call)",
            name(e)
        ),
        routine::EINTR => "a signal interrupted the blocking call before it completed".into(),
        routine::ECANCELED => "the io_uring request was cancelled before it completed (IORING_OP_ASYNC_CANCEL, a linked \
                               timeout that fired, or the ring was torn down)"
            .into(),
        routine::ETIME => "the io_uring timeout expired".into(),
        _ => "non-blocking connect started; its result comes later through SO_ERROR or a failing read/write".into(),
    };
    Some(Diagnosis::new(Cause::of_routine(kind), f.state_now, None, explain))
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use super::super::test_support::{check_rows, failure, Row};
    use crate::facts::History;
    use crate::model::{errno::*, Cause, IoUringOp, Syscall, TcpState::*};
    use socktrace_common::ResourceFacts;

    #[test]
    fn routine_rows() {
        let none = History::default;
        check_rows(&[
            Row::new(
                "EAGAIN",
                failure(Syscall::Read, Some(EAGAIN), Established, none()),
                Cause::WouldBlock,
                Some(Established),
            ),
            Row::new(
                "EINTR",
                failure(Syscall::Read, Some(EINTR), Established, none()),
                Cause::Interrupted,
                Some(Established),
            ),
            Row::new(
                "ERESTARTSYS",
                failure(Syscall::Read, Some(ERESTARTSYS), Established, none()),
                Cause::Interrupted,
                Some(Established),
            ),
            Row::new(
                "EINPROGRESS",
                failure(Syscall::Connect, Some(EINPROGRESS), SynSent, none()),
                Cause::InProgress,
                Some(SynSent),
            ),
            Row::new(
                "io_uring send cancelled",
                failure(Syscall::IoUring(IoUringOp::Send), Some(ECANCELED), Established, none()),
                Cause::Cancelled,
                Some(Established),
            ),
        ]);
    }

    #[test]
    fn eagain_on_send_says_how_full_the_buffer_is() {
        let r = ResourceFacts { sndbuf: 4608, wmem_queued: 4608, ..Default::default() };
        let dg = diagnose(&crate::facts::Failure {
            resource: Some(r),
            ..failure(Syscall::Write, Some(EAGAIN), Established, History::default())
        });
        assert_eq!(dg.cause, Cause::WouldBlock);
        assert!(dg.explain.contains("send buffer is full (4608 of 4608 bytes queued)"), "{}", dg.explain);
    }
}
