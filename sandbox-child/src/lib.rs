//! corral's trampoline: confines itself, then execs the plugin
