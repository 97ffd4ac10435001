//! What every dispatcher handler shares.

use std::sync::Arc;

use common::http::{HasInternalAuth, InternalAuth};

use crate::callback::CallbackUrls;
use crate::listeners::ListenerWatch;
use crate::publisher::Publisher;
use crate::routing::RoutingTable;
use crate::stream::EventStream;

#[derive(Clone)]
pub struct AppState {
    pub routes: Arc<RoutingTable>,
    pub publisher: Arc<Publisher>,
    /// Checked callback URLs, shared with the callback sender.
    pub callback_urls: Arc<CallbackUrls>,
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
