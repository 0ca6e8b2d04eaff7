//! The `corral` command line tool's shared pieces: exit codes and output
//! formatting.

pub mod exit;
pub mod render;
