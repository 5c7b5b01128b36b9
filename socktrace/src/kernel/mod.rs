//! Everything that touches the running kernel: BTF and tracefs (what it offers), offsets (the
//! layouts the programs read), the probe catalogue and modes, loading and attach, privileges.
pub mod adopt;
pub mod btf;
pub mod cgroup;
pub mod config;
pub mod jiffies;
pub mod kallsyms;
pub mod load;
pub mod mapped;
pub mod object;
pub mod offsets;
pub mod privileges;
pub mod probes;
pub mod prog_stats;
pub mod survey;
pub mod tracefs;
pub mod version;
