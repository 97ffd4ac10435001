//! The platform's own services as the contract fixes them (name, which is
//! also the OTel `service.name` and the Prometheus job; port; queue), and
//! the dispatcher's routing table in the `ROUTES` syntax, so the tests can
//! hold the compose file, the Dockerfile, Prometheus and the devcontainer to
//! one list.

use std::collections::BTreeMap;

/// A service built from this repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RustService {
    pub name: &'static str,
    /// Its `PORT`: the HTTP port, or a listener's health and metrics port.
    pub port: u16,
    /// The queue a listener consumes by default; `None` for the others.
    pub queue: Option<&'static str>,
}

impl RustService {
    /// Listeners consume a queue, publish no host port and scale.
    pub fn is_listener(&self) -> bool {
        self.queue.is_some()
    }
}

/// Every service built from this repository, in the contract's port order.
pub const RUST_SERVICES: [RustService; 5] = [
    RustService {
        name: "public-web",
        port: 3000,
        queue: None,
    },
    RustService {
        name: "dispatcher",
        port: 3001,
        queue: None,
    },
    RustService {
        name: "ping-listener",
        port: 3002,
        queue: Some("ping-request"),
    },
    RustService {
        name: "prime-listener",
        port: 3003,
        queue: Some("prime-request"),
    },
    RustService {
        name: "scenario-listener",
        port: 3004,
        queue: Some("scenario-request"),
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

/// A `ROUTES` table (`Type=queue,Other=queue2`) as the dispatcher reads it:
/// entries and both sides trimmed, empty entries skipped, a type routed
/// twice or an entry without `=` refused, at least one route.
pub fn parse_routes(table: &str) -> Result<BTreeMap<String, String>, String> {
    let mut routes = BTreeMap::new();
    for entry in table.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (event_type, queue) = entry
            .split_once('=')
            .map(|(t, q)| (t.trim(), q.trim()))
            .filter(|(t, q)| !t.is_empty() && !q.is_empty())
            .ok_or_else(|| format!("route {entry:?} is not Type=queue"))?;
        if routes
            .insert(event_type.to_owned(), queue.to_owned())
            .is_some()
        {
            return Err(format!("event type {event_type} is routed twice"));
        }
    }
    if routes.is_empty() {
        return Err("no routes".to_owned());
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_as_the_dispatcher_reads_them() {
        let routes = parse_routes("PingRequest=ping-request,\n NthPrimeRequest = prime-request,")
            .expect("valid");
        assert_eq!(
            routes,
            BTreeMap::from([
                ("NthPrimeRequest".to_owned(), "prime-request".to_owned()),
                ("PingRequest".to_owned(), "ping-request".to_owned()),
            ])
        );
    }

    #[test]
    fn malformed_routes_are_refused() {
        assert!(parse_routes("PingRequest").is_err());
        assert!(parse_routes("A=q,A=r").is_err());
        assert!(parse_routes("A=").is_err());
        assert!(parse_routes(" , ").is_err());
    }

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
}
