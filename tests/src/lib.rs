//! integration tests across binaries
