//! The routing table: which queue each event type goes to. Configuration
//! (`ROUTES`), not code, so a new event type needs no dispatcher change.

use std::collections::HashMap;

/// Event type → queue. Written `Type=queue,Other=queue2`; the default
/// routes `PingRequest` to `ping-request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable(HashMap<String, String>);

impl RoutingTable {
    pub fn queue_for(&self, event_type: &str) -> Option<&str> {
        self.0.get(event_type).map(String::as_str)
    }

    /// Every route, as (event type, queue).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(kind, queue)| (kind.as_str(), queue.as_str()))
    }

    /// Every queue some event type is routed to.
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        let mut queues: Vec<&str> = self.0.values().map(String::as_str).collect();
        queues.sort_unstable();
        queues.dedup();
        queues.into_iter()
    }
}

impl Default for RoutingTable {
    fn default() -> Self {
        "PingRequest=ping-request"
            .parse()
            .expect("the default routing table parses")
    }
}

impl std::str::FromStr for RoutingTable {
    type Err = String;

    fn from_str(table: &str) -> Result<Self, Self::Err> {
        let mut routes = HashMap::new();
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
        Ok(RoutingTable(routes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let table: RoutingTable = "PingRequest=ping-request, NthPrimeRequest = prime-request"
            .parse()
            .unwrap();
        assert_eq!(table.queue_for("NthPrimeRequest"), Some("prime-request"));
        assert_eq!(table.queue_for("Nope"), None);
    }

    #[test]
    fn refuses_malformed_routes() {
        assert!("PingRequest".parse::<RoutingTable>().is_err());
        assert!("A=q,A=r".parse::<RoutingTable>().is_err());
        assert!("".parse::<RoutingTable>().is_err());
    }
}
