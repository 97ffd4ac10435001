//! The dispatcher's routing table: the `ROUTES` docker-compose.yml gives it
//! routes every event type the example scenarios answer to
//! scenario-listener's queue, every type they call somewhere, and the
//! listeners' own types to their queues; every routed queue has a listener
//! in the stack; and bin/restart.sh routes exactly the same, so the two
//! tables cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use stack_check::compose::{self, COMPOSE_FILE, Compose};
use stack_check::{files, platform, scenarios};

const RESTART_SCRIPT: &str = "bin/restart.sh";

type Routes = BTreeMap<String, String>;

fn stack() -> Compose {
    Compose::load(&[COMPOSE_FILE])
}

/// The dispatcher's `ROUTES` under `docker compose up` with no `ROUTES` set
/// on the host.
fn compose_routes() -> Routes {
    let env = compose::environment(stack().service("dispatcher"));
    let table = compose::interpolate_unset(
        env.get("ROUTES")
            .expect("the dispatcher's ROUTES is set in the compose file"),
    );
    platform::parse_routes(&table)
        .unwrap_or_else(|e| panic!("{COMPOSE_FILE}: the dispatcher's ROUTES: {e}"))
}

/// The `ROUTES` bin/restart.sh exports with no `ROUTES` set, computed by
/// bash from the script's own lines (from `SCENARIO_TYPES=(` to
/// `export ROUTES=`), so how the script spells the table does not matter.
fn restart_script_routes() -> Routes {
    let script = files::read_text(RESTART_SCRIPT);
    let start = script
        .find("\nSCENARIO_TYPES=(")
        .unwrap_or_else(|| panic!("{RESTART_SCRIPT} no longer defines SCENARIO_TYPES=(...)"));
    let export = start
        + script[start..].find("\nexport ROUTES=").unwrap_or_else(|| {
            panic!("{RESTART_SCRIPT} no longer exports ROUTES after SCENARIO_TYPES")
        })
        + 1;
    let end = script[export..]
        .find('\n')
        .map_or(script.len(), |n| export + n);
    let snippet = format!("{}\nprintf '%s' \"$ROUTES\"\n", &script[start..end]);
    let output = Command::new("bash")
        .args(["-euc", &snippet])
        .env_remove("ROUTES")
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{RESTART_SCRIPT}'s ROUTES lines fail in bash:\n{snippet}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).expect("ROUTES is UTF-8");
    platform::parse_routes(&table).unwrap_or_else(|e| panic!("{RESTART_SCRIPT}: ROUTES: {e}"))
}

fn queue_of(listener: &str) -> &'static str {
    platform::service(listener)
        .queue
        .unwrap_or_else(|| panic!("{listener} consumes no queue"))
}

#[test]
fn every_type_the_examples_answer_goes_to_scenario_listener() {
    let routes = compose_routes();
    let scenario_queue = queue_of("scenario-listener");
    let examples = scenarios::example_files();
    assert!(
        examples.len() >= 2,
        "the order and chain examples are read: {examples:?}"
    );
    for file in &examples {
        let scenario = files::load_yaml(file);
        let handled = scenarios::handled_types(&scenario);
        assert!(!handled.is_empty(), "{file} answers no event type");
        for event_type in &handled {
            assert_eq!(
                routes.get(event_type).map(String::as_str),
                Some(scenario_queue),
                "{file} answers {event_type}: the dispatcher's ROUTES in {COMPOSE_FILE} \
                 must send it to {scenario_queue}"
            );
        }
        // A call to a type nobody routes fails at the dispatcher (422).
        for event_type in scenarios::called_types(&scenario) {
            assert!(
                routes.contains_key(&event_type),
                "{file} calls {event_type}, which the dispatcher's ROUTES in {COMPOSE_FILE} \
                 does not route"
            );
        }
    }
}

#[test]
fn the_listeners_own_types_go_to_their_queues() {
    let routes = compose_routes();
    for (event_type, listener) in [
        ("PingRequest", "ping-listener"),
        ("NthPrimeRequest", "prime-listener"),
    ] {
        assert_eq!(
            routes.get(event_type).map(String::as_str),
            Some(queue_of(listener)),
            "{event_type} goes to {listener}"
        );
    }
}

#[test]
fn every_routed_queue_has_a_listener_and_every_listener_a_route() {
    let routes = compose_routes();
    let compose = stack();
    let services = compose.services();
    // Where each listener in the stack consumes: its QUEUE, or its default.
    let consumed: BTreeMap<String, &str> = platform::listeners()
        .filter(|listener| services.contains_key(listener.name))
        .map(|listener| {
            let env = compose::environment(compose.service(listener.name));
            let queue = env
                .get("QUEUE")
                .cloned()
                .unwrap_or_else(|| listener.queue.expect("a listener").to_owned());
            (queue, listener.name)
        })
        .collect();
    for (event_type, queue) in &routes {
        assert!(
            consumed.contains_key(queue),
            "{event_type} is routed to {queue}, which no listener in {COMPOSE_FILE} consumes"
        );
    }
    let routed: BTreeSet<&String> = routes.values().collect();
    for (queue, listener) in &consumed {
        assert!(
            routed.contains(queue),
            "{listener} consumes {queue}, but ROUTES sends it nothing"
        );
    }
}

#[test]
fn bin_restart_routes_exactly_what_compose_routes() {
    assert_eq!(
        restart_script_routes(),
        compose_routes(),
        "{RESTART_SCRIPT} and {COMPOSE_FILE} must route the same event types to the same queues"
    );
}
