//! The platform's own services as their crates define them (name, which is
//! also the OTel `service.name` and the Prometheus job; default port;
//! queue; whether PostgreSQL holds its state), and routing tables read by the dispatcher's own parser, so the
//! tests hold the compose file, the Dockerfile, Prometheus and the
//! devcontainer to what the services really do.

use std::collections::BTreeMap;

use dispatcher::routing::RoutingTable;

/// A service built from this repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RustService {
    pub name: &'static str,
    /// Its `PORT`: the HTTP port, or a listener's health and metrics port.
    pub port: u16,
    /// The queue a listener consumes by default; `None` for the others.
    pub queue: Option<&'static str>,
    /// Keeps its state in PostgreSQL (`DATABASE_URL`): the webhook-sender.
    pub database: bool,
}

impl RustService {
    /// Listeners consume a queue, publish no host port and scale.
    pub fn is_listener(&self) -> bool {
        self.queue.is_some()
    }

    /// public-web and the dispatcher: the two ends of the internal hops,
    /// signed with the shared `CALLBACK_SECRET`.
    pub fn signs_internal_hops(&self) -> bool {
        !self.is_listener() && !self.database
    }
}

/// Every service built from this repository, in port order.
pub const RUST_SERVICES: [RustService; 6] = [
    RustService {
        name: public_web::SERVICE_NAME,
        port: public_web::DEFAULT_PORT,
        queue: None,
        database: false,
    },
    RustService {
        name: dispatcher::SERVICE_NAME,
        port: dispatcher::DEFAULT_PORT,
        queue: None,
        database: false,
    },
    RustService {
        name: ping_listener::SERVICE_NAME,
        port: ping_listener::DEFAULT_PORT,
        queue: Some(ping_listener::DEFAULT_QUEUE),
        database: false,
    },
    RustService {
        name: prime_listener::SERVICE_NAME,
        port: prime_listener::DEFAULT_PORT,
        queue: Some(prime_listener::DEFAULT_QUEUE),
        database: false,
    },
    RustService {
        name: scenario_listener::SERVICE_NAME,
        port: scenario_listener::DEFAULT_PORT,
        queue: Some(scenario_listener::DEFAULT_QUEUE),
        database: false,
    },
    RustService {
        name: webhook_sender::SERVICE_NAME,
        port: webhook_sender::DEFAULT_PORT,
        queue: None,
        database: true,
    },
];

/// The services that consume a queue.
pub fn listeners() -> impl Iterator<Item = &'static RustService> {
    RUST_SERVICES.iter().filter(|s| s.is_listener())
}

/// The service named `name`; panics for a name the contract does not know.
pub fn service(name: &str) -> &'static RustService {
    RUST_SERVICES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not one of the platform's services"))
}

/// A `ROUTES` table (`Type=queue,Other=queue2`) as the dispatcher reads
/// it, as event type → queue.
pub fn parse_routes(table: &str) -> Result<BTreeMap<String, String>, String> {
    let table: RoutingTable = table.parse()?;
    Ok(table
        .routes()
        .map(|(kind, queue)| (kind.to_owned(), queue.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_the_services_with_a_queue() {
        let names: Vec<&str> = listeners().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["ping-listener", "prime-listener", "scenario-listener"]
        );
        assert_eq!(service("prime-listener").port, 3003);
        assert!(!service("dispatcher").is_listener());
    }

    #[test]
    fn the_hops_are_signed_between_public_web_and_the_dispatcher() {
        let names: Vec<&str> = RUST_SERVICES
            .iter()
            .filter(|s| s.signs_internal_hops())
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["public-web", "dispatcher"]);
        assert_eq!(service("webhook-sender").port, 3006);
        assert!(service("webhook-sender").database);
    }
}
