//! corral's trampoline: confines itself, then execs the plugin. See the
//! `corral_sandbox` library for the steps and their order.

fn main() {
    corral_sandbox::run()
}
