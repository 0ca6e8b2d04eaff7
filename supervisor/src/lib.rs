//! corral's supervisor library and the corrald daemon
