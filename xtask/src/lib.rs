//! build, package and test orchestration
