//! Words the aggregation, the timelines and the page share: strings stored once, what a cause
//! code means, plurals. A leaf: it uses no other file of the report.

use std::collections::{BTreeMap, HashMap};

/// Whether a cause code is a routine outcome (EAGAIN, EINTR, EINPROGRESS, cancelled), by the
/// model's own rule; a code this socktrace does not know is a failure.
pub fn is_routine(cause: &str) -> bool {
    known_cause(cause).is_some_and(|c| c.is_routine())
}

pub fn known_cause(code: &str) -> Option<crate::model::Cause> {
    <crate::model::Cause as clap::ValueEnum>::from_str(code, false).ok()
}

pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Strings seen many times (causes, errnos, states, syscalls, names), stored once.
#[derive(Default, Debug)]
pub struct Names {
    index: HashMap<String, u32>,
    list: Vec<String>,
}

impl Names {
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    pub fn get(&self, id: u32) -> &str {
        &self.list[id as usize]
    }

    /// Counts by cause id as (cause, count): failures before routine outcomes, then largest
    /// first, then by name.
    pub fn by_cause(&self, counts: &BTreeMap<u32, u64>) -> Vec<(String, u64)> {
        let mut by_cause: Vec<(String, u64)> = counts.iter().map(|(&c, &n)| (self.get(c).to_string(), n)).collect();
        by_cause.sort_by(|a, b| is_routine(&a.0).cmp(&is_routine(&b.0)).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        by_cause
    }
}
