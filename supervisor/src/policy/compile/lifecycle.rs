//! The supervisor's side of a plugin's life: call, start, grace and
//! heartbeat timeouts, the restart backoff and crash-loop rule, and which
//! clients may call it.

use super::limits::Limits;
use super::{Context, Recorder};
use corral_protocol::policy::{RestartPolicy, Timeouts};

pub(super) fn timeouts(cx: &Context<'_>, limits: &Limits, rec: &mut Recorder<'_>) -> Timeouts {
    let t = &cx.policy.timeouts;
    rec.cite_policy("timeouts.start", t.start, "timeouts.start");
    Timeouts {
        call: limits.timeout.0,
        start: t.start.0,
        grace: t.grace.0,
        heartbeat: t.heartbeat.0,
    }
}

pub(super) fn restart(cx: &Context<'_>, rec: &mut Recorder<'_>) -> RestartPolicy {
    let r = &cx.policy.restart;
    let restart = RestartPolicy {
        backoff_initial: r.backoff_initial.0,
        backoff_max: r.backoff_max.0,
        jitter: r.jitter,
        crash_loop_failures: r.crash_loop_failures,
        crash_loop_window: r.crash_loop_window.0,
    };
    rec.cite_policy(
        "restart.crash_loop",
        format!(
            "{} failures in {}",
            restart.crash_loop_failures, r.crash_loop_window
        ),
        "restart.crash_loop_failures",
    );
    restart
}

pub(super) fn allowed_callers(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Option<Vec<String>> {
    let callers = cx.rules.and_then(|r| r.allowed_callers.clone());
    if let Some(callers) = &callers {
        rec.cite_policy(
            "allowed_callers",
            callers.join(", "),
            &cx.rules_key("allowed_callers"),
        );
    }
    callers
}
