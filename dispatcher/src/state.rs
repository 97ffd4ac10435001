//! What every dispatcher handler shares.

use std::sync::Arc;

use common::http::{HasInternalAuth, InternalAuth};

use crate::callback::CallbackUrls;
use crate::listeners::ListenerWatch;
use crate::publisher::Publisher;
use crate::routing::RoutingTable;
use crate::stream::EventStream;
use crate::targets::Targets;

#[derive(Clone)]
pub struct AppState {
    pub routes: Arc<RoutingTable>,
    pub publisher: Arc<Publisher>,
    /// Checked callback URLs, shared with the callback sender.
    pub callback_urls: Arc<CallbackUrls>,
    /// The callback sender's targets: a forward shows its instance is up.
    pub targets: Arc<Targets>,
    /// Whether each routed queue has a consumer.
    pub listeners: Arc<ListenerWatch>,
    /// Where every routed event is recorded.
    pub events: Arc<EventStream>,
    pub auth: InternalAuth,
}

impl HasInternalAuth for AppState {
    fn internal_auth(&self) -> &InternalAuth {
        &self.auth
    }
}
