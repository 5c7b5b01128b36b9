//! Everything that touches the running kernel: BTF, tracefs, privileges, probe attach.
pub mod btf;
pub mod privileges;
pub mod probes;
pub mod tracefs;
