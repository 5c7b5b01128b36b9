//! socktrace: for every failing socket call of a process, the errno and the TCP cause.
//!
//! Data flows one way: kernel programs -> ring buffer -> `event` (decode) -> `diagnose` ->
//! `render` (text, JSON). `kernel` loads and attaches the programs; `session` runs the loop;
//! `orchestrate` puts a run together; `cli` only parses and converts. `container` names the
//! workload behind a cgroup; `export` feeds the same failures to Prometheus (`agent`);
//! `report` turns a JSON capture into an HTML page, without the kernel.

mod check;
mod cli;
mod container;
mod demo;
mod diagnose;
mod event;
mod export;
mod facts;
mod host;
mod kernel;
mod model;
mod orchestrate;
mod render;
mod report;
mod session;
mod summary;
mod target;
mod text;

use clap::Parser as _;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            text::say(&format!("socktrace: error: {}", text::escape_controls(&format!("{e:#}"))));
            cli::EXIT_FAILURE
        }
    };
    std::process::exit(code);
}
