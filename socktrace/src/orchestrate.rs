//! Orchestration: check privileges, open the output, attach, run the session, and (for
//! `socktrace -- COMMAND`) start the command and hand back its exit status. It takes domain
//! types (what to trace, how to report), never command-line structs.

use crate::export::prometheus::{MetricsOptions, MetricsRequest};
use crate::kernel::{config::Selection, privileges};
use crate::render::{ColorChoice, Sink};
use crate::session::{Session, SessionOptions};
use crate::target::Child;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// One run of socktrace: what to trace, how to report it, where to write.
#[derive(Clone, Debug)]
pub struct TraceRequest {
    pub selection: Selection,
    pub session: SessionOptions,
    /// Where events and the summary go (stdout when None).
    pub output: Option<PathBuf>,
    pub color: ColorChoice,
    /// A command to start and trace from its first call (with the selection's processes).
    pub command: Vec<String>,
    /// Run the command with socktrace's own privileges instead of the invoking user's (under
    /// sudo): only for socktrace's own demo client.
    pub keep_privileges: bool,
    /// `agent --metrics`: the Prometheus endpoint.
    pub metrics: Option<MetricsOptions>,
    /// `agent --otlp`: the Collector's OTLP/HTTP address.
    pub otlp: Option<String>,
}

/// Runs the request to its end. The exit status: the started command's own, or 0.
pub fn trace(mut req: TraceRequest) -> Result<i32> {
    require_privileges()?;
    // Checked before any probe is attached: a bad path must not cost an attach/detach.
    let sink = Sink::open(req.output.as_deref(), req.color)?;
    // Bound before attach too: a port in use fails early, and binding may need privileges.
    let metrics = req.metrics.as_ref().map(MetricsRequest::bind).transpose()?;
    let exporters = crate::export::Exporters { metrics, otlp: req.otlp.clone() };
    if req.command.is_empty() {
        let session = Session::attach(&req.selection, req.session, sink, exporters)?;
        session.run(|| Ok(()))?;
        return Ok(0);
    }
    let mut child = Child::spawn(&req.command, req.keep_privileges)?;
    req.selection.tgids.insert(0, child.pid());
    // If attaching fails, the Child is dropped before release: its held exec sees EOF and
    // the command exits without running untraced.
    let session = Session::attach(&req.selection, req.session, sink, exporters)?;
    session.run(|| child.release())?;
    // With a started command, its exit status is ours (as with strace).
    child.wait_status()
}

pub fn require_privileges() -> Result<()> {
    if let Some(missing) = privileges::missing() {
        bail!("socktrace needs {missing} to load its eBPF programs: run it as root, e.g. `sudo socktrace ...`");
    }
    Ok(())
}
