//! What every public-web handler shares, behind one `Arc`: a request takes
//! a pointer, not a copy.

use common::http::{HasInternalAuth, InternalAuth};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatcher_client::DispatcherClient;
use crate::live::Live;
use crate::pending::PendingRequests;

pub struct AppState {
    pub config: Config,
    /// The requests waiting for their response.
    pub pending: PendingRequests,
    pub dispatcher: DispatcherClient,
    /// Live subscriptions: the event stream's hub and the token checks.
    pub live: Live,
    /// Cancelled at shutdown: WebSockets and SSE streams end, since a
    /// server waits for its requests in flight.
    pub shutdown: CancellationToken,
}

impl HasInternalAuth for AppState {
    fn internal_auth(&self) -> &InternalAuth {
        &self.config.auth
    }
}
