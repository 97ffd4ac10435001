//! The scenario a listener acts out, read from `SCENARIO_CONFIG`: inline
//! JSON, or the path of a JSON or YAML file.
//!
//! Every check lives in the types' deserialisers, so serde_path_to_error
//! can name the exact place of any mistake
//! (`SCENARIO_CONFIG: handlers.OrderRequest.steps[2].sleep.ms: ...`) and a
//! listener with a bad scenario refuses to start instead of failing later.
//!
//! ```yaml
//! max_call_depth: 8            # optional; calls nested deeper fail
//! handlers:
//!   OrderRequest:              # an event type this listener answers
//!     name: order-service      # optional span name (default: the type)
//!     response_type: OrderPlaced   # optional (default: OrderResponse)
//!     steps:
//!       - sleep: { name: validate order, ms: 20 }
//!       - parallel:
//!           name: reserve and charge
//!           steps:
//!             - call: { name: reserve stock, type: InventoryRequest, timeout_ms: 2000 }
//!             - sleep: { name: charge card, ms: { min: 10, max: 80 }, failure_chance: 0.2 }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use common::config::ConfigError;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The environment variable holding the scenario.
pub const ENV_VAR: &str = "SCENARIO_CONFIG";
/// How deep calls may nest unless `max_call_depth` says otherwise.
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 8;
/// How long a call waits for its response unless `timeout_ms` says
/// otherwise.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 5_000;

/// A whole scenario: the event types answered and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// The deepest chain of calls one request may start: a call made at
    /// this depth fails instead of being sent, which ends call cycles.
    #[serde(default = "default_max_call_depth")]
    pub max_call_depth: u32,
    /// Event type → what answering it takes.
    #[serde(deserialize_with = "handlers")]
    pub handlers: BTreeMap<String, HandlerConfig>,
}

/// How one event type is answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// The handler span's name, e.g. the simulated service (default: the
    /// event type).
    pub name: Option<String>,
    /// The response event's type (default: `FooRequest` → `FooResponse`,
    /// anything else gets `Response` appended).
    #[serde(default, deserialize_with = "optional_event_type")]
    pub response_type: Option<String>,
    /// Run in order; the first failure ends the handler with an `Error`.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One thing a handler does. Written with its kind as the key:
/// `{"sleep": {...}}`, `{"call": {...}}`, `{"parallel": {...}}`,
/// `{"sequence": {...}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Sleep(SleepStep),
    Call(CallStep),
    Parallel(GroupStep),
    Sequence(GroupStep),
}

/// Work that takes time and may fail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    pub name: Option<String>,
    pub ms: Millis,
    /// The chance (0.0–1.0) that the step fails once it has slept: a roll
    /// below it is a failure. Without it, nothing is rolled.
    #[serde(default, deserialize_with = "probability")]
    pub failure_chance: Option<f64>,
    /// A failure is reported but does not fail the handler.
    #[serde(default)]
    pub optional: bool,
}

/// Another event sent through public-web (and so the dispatcher), awaited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallStep {
    pub name: Option<String>,
    /// The event type to send: anything the dispatcher routes.
    #[serde(rename = "type", deserialize_with = "event_type")]
    pub event_type: String,
    /// The event's data (`callDepth` is set by the call itself).
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(
        default = "default_call_timeout_ms",
        deserialize_with = "positive_millis"
    )]
    pub timeout_ms: u64,
    #[serde(default)]
    pub optional: bool,
}

/// Nested steps, run all at once (`parallel`) or in order (`sequence`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupStep {
    pub name: Option<String>,
    #[serde(deserialize_with = "non_empty_steps")]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub optional: bool,
}

/// A duration in milliseconds: fixed (`20`) or drawn uniformly from a range
/// for each run (`{min: 10, max: 50}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Millis {
    Fixed(u64),
    Range { min: u64, max: u64 },
}

impl ScenarioConfig {
    /// Reads `SCENARIO_CONFIG`; the error says what is wrong and where.
    pub fn from_env() -> Result<Self, ConfigError> {
        match common::config::var(ENV_VAR) {
            Some(value) => Self::load(&value),
            None => Err(ConfigError::at(
                ENV_VAR,
                "",
                "not set: give a scenario as JSON, or the path of a JSON or YAML \
                 file (see examples/)",
            )),
        }
    }

    /// Parses `value`: JSON when it starts with `{`, else the path of a
    /// file, read as JSON when it ends in `.json` and as YAML otherwise.
    pub fn load(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        if value.starts_with('{') {
            return Self::from_json(value).map_err(|e| e.from(ENV_VAR.to_owned()));
        }
        let origin = format!("{ENV_VAR} ({value})");
        let text = std::fs::read_to_string(value).map_err(|error| {
            ConfigError::at(&origin, "", format_args!("cannot read the file: {error}"))
        })?;
        let is_json = Path::new(value)
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            Self::from_json(&text)
        } else {
            Self::from_yaml(&text)
        };
        parsed.map_err(|e| e.from(origin))
    }

    pub fn from_json(text: &str) -> Result<Self, PathError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut deserializer).map_err(PathError::new)
    }

    pub fn from_yaml(text: &str) -> Result<Self, PathError> {
        // YAML's own spelling of a variant is a tag (`!sleep`); the
        // singleton-map adapter reads `sleep: {...}`, as JSON writes it.
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(
            serde_norway::Deserializer::from_str(text),
            &mut track,
        );
        serde_norway::with::singleton_map_recursive::deserialize(tracked)
            .map_err(|error| PathError::new(serde_path_to_error::Error::new(track.path(), error)))
    }
}

impl HandlerConfig {
    /// The response event's type for requests of `request_type`.
    pub fn response_type(&self, request_type: &str) -> String {
        if let Some(response_type) = &self.response_type {
            return response_type.clone();
        }
        match request_type.strip_suffix("Request") {
            Some(stem) if !stem.is_empty() => format!("{stem}Response"),
            _ => format!("{request_type}Response"),
        }
    }
}

impl Step {
    /// The kind, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Sleep(_) => "sleep",
            Step::Call(_) => "call",
            Step::Parallel(_) => "parallel",
            Step::Sequence(_) => "sequence",
        }
    }

    /// The configured name, or one made of the kind (and a call's type).
    pub fn name(&self) -> String {
        let configured = match self {
            Step::Sleep(step) => &step.name,
            Step::Call(step) => &step.name,
            Step::Parallel(step) | Step::Sequence(step) => &step.name,
        };
        match (configured, self) {
            (Some(name), _) => name.clone(),
            (None, Step::Call(call)) => format!("call {}", call.event_type),
            (None, _) => self.kind().to_owned(),
        }
    }

    /// Whether a failure of this step leaves its parent running.
    pub fn optional(&self) -> bool {
        match self {
            Step::Sleep(step) => step.optional,
            Step::Call(step) => step.optional,
            Step::Parallel(step) | Step::Sequence(step) => step.optional,
        }
    }
}

impl Millis {
    /// This run's duration: the fixed value, or a uniform draw from the range.
    pub fn pick(self) -> u64 {
        match self {
            Millis::Fixed(ms) => ms,
            Millis::Range { min, max } => rand::random_range(min..=max),
        }
    }
}

/// A config that does not parse, with the place in it and the reason.
#[derive(Debug)]
pub struct PathError {
    /// Where, as serde_path_to_error writes it; empty at the top level.
    pub path: String,
    pub message: String,
}

impl PathError {
    fn new<E: fmt::Display>(error: serde_path_to_error::Error<E>) -> Self {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        // serde_norway starts its messages with the path it knows, which is
        // this one or an enclosing one: say it once, the precise one.
        let message = error.inner().to_string();
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !path.is_empty() && path.starts_with(prefix) => rest.to_owned(),
            _ => message,
        };
        Self { path, message }
    }

    fn from(self, origin: String) -> ConfigError {
        ConfigError::at(origin, self.path, self.message)
    }
}

fn default_max_call_depth() -> u32 {
    DEFAULT_MAX_CALL_DEPTH
}

fn default_call_timeout_ms() -> u64 {
    DEFAULT_CALL_TIMEOUT_MS
}

/// Why `name` cannot be an event type, if it cannot: the envelope's rules
/// (non-empty, at most 255 bytes), and not `Error`, which means failure.
fn event_type_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("an event type must not be empty".to_owned())
    } else if name.len() > common::wire::MAX_NAME_LEN {
        Some(format!(
            "an event type is at most {} bytes",
            common::wire::MAX_NAME_LEN
        ))
    } else if name == common::wire::ERROR_EVENT_TYPE {
        Some(format!("{name:?} is reserved for failures"))
    } else {
        None
    }
}

fn event_type<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    match event_type_problem(&name) {
        Some(problem) => Err(de::Error::custom(problem)),
        None => Ok(name),
    }
}

fn optional_event_type<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    event_type(deserializer).map(Some)
}

fn handlers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, HandlerConfig>, D::Error> {
    let handlers = BTreeMap::<String, HandlerConfig>::deserialize(deserializer)?;
    if handlers.is_empty() {
        return Err(de::Error::custom("at least one event type is needed"));
    }
    if let Some(problem) = handlers.keys().find_map(|name| event_type_problem(name)) {
        return Err(de::Error::custom(problem));
    }
    Ok(handlers)
}

fn non_empty_steps<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Step>, D::Error> {
    let steps = Vec::<Step>::deserialize(deserializer)?;
    if steps.is_empty() {
        return Err(de::Error::custom("a group needs at least one step"));
    }
    Ok(steps)
}

fn probability<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let chance = f64::deserialize(deserializer)?;
    if (0.0..=1.0).contains(&chance) {
        Ok(Some(chance))
    } else {
        Err(de::Error::custom(format!(
            "must be between 0.0 and 1.0, got {chance}"
        )))
    }
}

fn positive_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match u64::deserialize(deserializer)? {
        0 => Err(de::Error::custom("must be at least 1 ms")),
        ms => Ok(ms),
    }
}

/// Hand-written so that a mistake inside a range (`ms.max`) keeps its
/// path, which an untagged enum's buffering would lose.
impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MillisVisitor)
    }
}

struct MillisVisitor;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    min: u64,
    max: u64,
}

impl<'de> Visitor<'de> for MillisVisitor {
    type Value = Millis;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("milliseconds: a whole number, or {min, max}")
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Millis, E> {
        Ok(Millis::Fixed(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Millis, E> {
        u64::try_from(ms)
            .map(Millis::Fixed)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Millis, A::Error> {
        let Range { min, max } = Range::deserialize(de::value::MapAccessDeserializer::new(map))?;
        if min > max {
            return Err(de::Error::custom(format!(
                "the range's min ({min}) is above its max ({max})"
            )));
        }
        Ok(Millis::Range { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_error(text: &str) -> String {
        let error = ScenarioConfig::from_json(text).unwrap_err();
        format!("{}: {}", error.path, error.message)
    }

    fn yaml_error(text: &str) -> String {
        let error = ScenarioConfig::from_yaml(text).unwrap_err();
        format!("{}: {}", error.path, error.message)
    }

    #[test]
    fn parses_every_kind_of_step() {
        let config = ScenarioConfig::from_yaml(
            r#"
handlers:
  OrderRequest:
    name: order-service
    steps:
      - sleep: { name: validate, ms: 5 }
      - parallel:
          steps:
            - call: { type: InventoryRequest, data: { sku: A1 }, timeout_ms: 100 }
            - sleep: { ms: { min: 1, max: 3 }, failure_chance: 0.5, optional: true }
      - sequence:
          name: ship
          steps: [ { sleep: { ms: 0 } } ]
"#,
        )
        .unwrap();
        assert_eq!(config.max_call_depth, DEFAULT_MAX_CALL_DEPTH);
        let order = &config.handlers["OrderRequest"];
        assert_eq!(order.response_type("OrderRequest"), "OrderResponse");
        let names: Vec<String> = order.steps.iter().map(Step::name).collect();
        assert_eq!(names, ["validate", "parallel", "ship"]);
        let Step::Parallel(group) = &order.steps[1] else {
            panic!("a parallel group")
        };
        let Step::Call(call) = &group.steps[0] else {
            panic!("a call")
        };
        assert_eq!(group.steps[0].name(), "call InventoryRequest");
        assert_eq!(call.timeout_ms, 100);
        assert_eq!(call.data["sku"], "A1");
        let Step::Sleep(sleep) = &group.steps[1] else {
            panic!("a sleep")
        };
        assert_eq!(sleep.ms, Millis::Range { min: 1, max: 3 });
        assert!(sleep.optional && group.steps[1].optional());
    }

    #[test]
    fn response_type_defaults() {
        let handler = |response_type: Option<&str>| HandlerConfig {
            name: None,
            response_type: response_type.map(str::to_owned),
            steps: Vec::new(),
        };
        assert_eq!(handler(None).response_type("Audit"), "AuditResponse");
        assert_eq!(handler(None).response_type("Request"), "RequestResponse");
        assert_eq!(
            handler(Some("Placed")).response_type("OrderRequest"),
            "Placed"
        );
    }

    #[test]
    fn errors_point_at_the_offending_path() {
        let steps = r#"{"handlers": {"OrderRequest": {"steps": [{"sleep": {"ms": 1}}, {"sleep": {"ms": 1}}, STEP]}}}"#;
        for (step, expected) in [
            (
                r#"{"sleep": {"ms": "fast"}}"#,
                "handlers.OrderRequest.steps[2].sleep.ms: invalid type: string \"fast\"",
            ),
            (
                r#"{"sleep": {"ms": -5}}"#,
                "handlers.OrderRequest.steps[2].sleep.ms: invalid value: integer `-5`",
            ),
            (
                r#"{"sleep": {"ms": {"min": 9, "max": 2}}}"#,
                "handlers.OrderRequest.steps[2].sleep.ms: the range's min (9) is above its max (2)",
            ),
            (
                r#"{"sleep": {"ms": {"min": 1, "max": "x"}}}"#,
                "handlers.OrderRequest.steps[2].sleep.ms.max: invalid type",
            ),
            (
                r#"{"sleep": {"ms": 1, "failure_chance": 1.5}}"#,
                "handlers.OrderRequest.steps[2].sleep.failure_chance: must be between 0.0 and 1.0, got 1.5",
            ),
            (
                r#"{"sleep": {"ms": 1, "fail": 0.5}}"#,
                "handlers.OrderRequest.steps[2].sleep.fail: unknown field `fail`, expected one of",
            ),
            (
                r#"{"sleep": {}}"#,
                "handlers.OrderRequest.steps[2].sleep: missing field `ms`",
            ),
            (
                r#"{"slep": {"ms": 1}}"#,
                "handlers.OrderRequest.steps[2]: unknown variant `slep`",
            ),
            (
                r#"{"call": {"type": ""}}"#,
                "handlers.OrderRequest.steps[2].call.type: an event type must not be empty",
            ),
            (
                r#"{"call": {"type": "Error"}}"#,
                "handlers.OrderRequest.steps[2].call.type: \"Error\" is reserved",
            ),
            (
                r#"{"call": {"type": "A", "timeout_ms": 0}}"#,
                "handlers.OrderRequest.steps[2].call.timeout_ms: must be at least 1 ms",
            ),
            (
                r#"{"parallel": {"steps": []}}"#,
                "handlers.OrderRequest.steps[2].parallel.steps: a group needs at least one step",
            ),
            (
                r#"{"sequence": {"steps": [{"sleep": {"ms": true}}]}}"#,
                "handlers.OrderRequest.steps[2].sequence.steps[0].sleep.ms: invalid type: boolean `true`",
            ),
        ] {
            let error = json_error(&steps.replace("STEP", step));
            assert!(
                error.starts_with(expected),
                "{step}\n  got: {error}\n want: {expected}"
            );
        }
    }

    #[test]
    fn top_level_mistakes() {
        assert!(json_error(r#"{"handlers": {}}"#).starts_with("handlers: at least one event type"));
        assert!(json_error(r#"{}"#).starts_with(": missing field `handlers`"));
        assert!(json_error(r#"{"handlers": {"": {}}}"#).starts_with("handlers: an event type"));
        assert!(json_error(r#"{"handler": {}}"#).starts_with("handler: unknown field `handler`"));
        assert!(json_error(r#"{"handlers": "#).contains("EOF"));
        assert!(
            json_error(r#"{"max_call_depth": -1, "handlers": {"A": {}}}"#)
                .starts_with("max_call_depth: invalid value")
        );
    }

    #[test]
    fn yaml_errors_point_at_the_path_too() {
        let error = yaml_error(
            "handlers:\n  PayRequest:\n    steps:\n      - call: { type: Bank, timeout_ms: soon }\n",
        );
        assert!(
            error.starts_with("handlers.PayRequest.steps[0].call.timeout_ms: invalid type"),
            "{error}"
        );
        // serde_norway's own copy of the path is not repeated.
        assert_eq!(error.matches("handlers.").count(), 1, "{error}");
    }

    #[test]
    fn load_names_the_variable_and_the_file() {
        let error = ScenarioConfig::load(r#"{"handlers": {"A": {"steps": [{"sleep": {}}]}}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "SCENARIO_CONFIG: handlers.A.steps[0].sleep: missing field `ms` at line 1 column 42"
        );
        let error = ScenarioConfig::load("/no/such/scenario.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("SCENARIO_CONFIG (/no/such/scenario.yaml): cannot read the file"),
            "{error}"
        );
    }

    #[test]
    fn the_shipped_examples_load() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        for file in ["scenario-order.yaml", "scenario-chain.yaml"] {
            let path = format!("{examples}/{file}");
            let config = ScenarioConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.handlers.is_empty(), "{file}");
        }
    }

    #[test]
    fn ranges_stay_inside_their_bounds() {
        let range = Millis::Range { min: 3, max: 5 };
        let picks: Vec<u64> = (0..200).map(|_| range.pick()).collect();
        assert!(picks.iter().all(|ms| (3..=5).contains(ms)));
        assert!(picks.contains(&3) && picks.contains(&5));
        assert_eq!(Millis::Fixed(7).pick(), 7);
    }
}
