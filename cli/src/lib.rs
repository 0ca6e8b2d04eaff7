//! the corral CLI and its client library
