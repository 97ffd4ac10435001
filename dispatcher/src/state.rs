//! What every dispatcher handler shares.

use std::sync::Arc;

use crate::callback::CallbackUrls;
use crate::publisher::Publisher;
use crate::routing::RoutingTable;

#[derive(Clone)]
pub struct AppState {
    pub routes: Arc<RoutingTable>,
    pub publisher: Arc<Publisher>,
    /// Parsed callback URLs, shared with the callback sender.
    pub callback_urls: Arc<CallbackUrls>,
}
