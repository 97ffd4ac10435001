//! What the management API's handlers share.

use std::sync::Arc;
use std::time::Duration;

use common::egress::EgressPolicy;

use crate::store::Store;

pub struct AppState {
    pub store: Store,
    /// Checks a registration's URL as deliveries will be checked.
    pub egress: Arc<EgressPolicy>,
    pub admin_token: Option<Arc<str>>,
    pub rotation_overlap: Duration,
}
