//! Host services: which of them the plugin may use, in its own names, and
//! how those names become real ones. Granted like any permission (from
//! `[grantable]` or `[plugins.<name>] grant`), refused by name.

use super::{CompileError, Context, Recorder};
use corral_protocol::services::ServiceGrants;

pub(super) fn grant(
    _cx: &Context<'_>,
    _rec: &mut Recorder<'_>,
) -> Result<ServiceGrants, CompileError> {
    Ok(ServiceGrants::default())
}
