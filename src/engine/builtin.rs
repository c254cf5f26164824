//! Publications every Meteor client asks for at start-up.
//!
//! Owns only Meteor's defaults; it must not hold test or benchmark handlers (those live in
//! `engine::testing`, registered only with `COMET_TEST_HANDLERS`).

use super::registry::{Publish, Registry};

/// `meteor.loginServiceConfiguration` and `meteor_autoupdate_clientVersions`: both ready with
/// no documents (no OAuth services configured; no client bundle to version, so a Meteor
/// client never sees a reason to reload).
pub fn register_meteor_defaults(registry: &mut Registry) {
    registry.publication("meteor.loginServiceConfiguration", |_sub, _params| async {
        Ok(Publish::Ready)
    });
    registry.publication("meteor_autoupdate_clientVersions", |_sub, _params| async {
        Ok(Publish::Ready)
    });
}
