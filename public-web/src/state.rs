//! What every public-web handler shares, behind one `Arc`: a request takes
//! a pointer, not a copy.

use common::http::{HasInternalAuth, InternalAuth};

use crate::config::Config;
use crate::dispatcher_client::DispatcherClient;
use crate::pending::PendingRequests;

pub struct AppState {
    pub config: Config,
    /// The requests waiting for their response.
    pub pending: PendingRequests,
    pub dispatcher: DispatcherClient,
}

impl HasInternalAuth for AppState {
    fn internal_auth(&self) -> &InternalAuth {
        &self.config.auth
    }
}
