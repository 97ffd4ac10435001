//! Rules that select events from the event stream: the filter dialects of
//! the CloudEvents Subscriptions API (`exact`, `prefix`, `suffix`, `all`,
//! `any`, `not`), parsed and checked once, then evaluated per event.
//!
//! Live subscriptions and webhooks both select events with them, so they
//! live here, with one parser: a subscriber's filters are client input, and
//! anything this module does not understand (a dialect, an attribute, a
//! value that is not a string, a filter too large) is refused with an error
//! that names it and where it is, never ignored: an ignored clause would
//! widen what a subscriber receives.
//!
//! A subscription is a list of filters, all of which must match. Each
//! filter is a JSON object with exactly one dialect:
//!
//! - `{"exact": {"type": "PingResponse"}}`, `{"prefix": {"type": "Order"}}`,
//!   `{"suffix": {"data.region": "-eu"}}`: one attribute, compared as a
//!   string, case-sensitively; an event without the attribute does not
//!   match;
//! - `{"all": [..]}`, `{"any": [..]}`: one or more filters, all or any of
//!   which must match;
//! - `{"not": {..}}`: one filter, which must not match.
//!
//! The attributes are the event's `type`, `id`, `source` (the service that
//! produced it) and `direction` (`request` or `response`), and
//! `data.<field>` for a top-level field of its data that is a string, a
//! number or a boolean (numbers and booleans compare as their JSON text).

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

/// Deepest nesting of `all`/`any`/`not` accepted.
pub const MAX_DEPTH: usize = 8;
/// Most filter expressions in one subscription, nested ones included.
pub const MAX_EXPRESSIONS: usize = 64;
/// Longest value a filter may compare with, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;

/// One filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Exact(Attribute, String),
    Prefix(Attribute, String),
    Suffix(Attribute, String),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
}

/// What a comparison reads of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    Type,
    Id,
    Source,
    Direction,
    /// A top-level field of the event's data.
    Data(String),
}

impl Attribute {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "type" => Some(Self::Type),
            "id" => Some(Self::Id),
            "source" => Some(Self::Source),
            "direction" => Some(Self::Direction),
            _ => {
                let field = name.strip_prefix("data.")?;
                (!field.is_empty()).then(|| Self::Data(field.to_owned()))
            }
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Type => f.write_str("type"),
            Self::Id => f.write_str("id"),
            Self::Source => f.write_str("source"),
            Self::Direction => f.write_str("direction"),
            Self::Data(field) => write!(f, "data.{field}"),
        }
    }
}

/// An event as filters see it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub source: &'a str,
    pub direction: &'a str,
    pub data: &'a Map<String, Value>,
}

impl<'a> Subject<'a> {
    /// The attribute's value as a string; `None` when the event has none
    /// (or a data field that is not a scalar).
    fn get(&self, attribute: &Attribute) -> Option<Cow<'a, str>> {
        match attribute {
            Attribute::Type => Some(Cow::Borrowed(self.kind)),
            Attribute::Id => Some(Cow::Borrowed(self.id)),
            Attribute::Source => Some(Cow::Borrowed(self.source)),
            Attribute::Direction => Some(Cow::Borrowed(self.direction)),
            Attribute::Data(field) => match self.data.get(field)? {
                Value::String(text) => Some(Cow::Borrowed(text.as_str())),
                Value::Number(number) => Some(Cow::Owned(number.to_string())),
                Value::Bool(flag) => Some(Cow::Owned(flag.to_string())),
                Value::Null | Value::Array(_) | Value::Object(_) => None,
            },
        }
    }
}

impl Filter {
    /// Whether `subject` passes this filter.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        match self {
            Self::Exact(attribute, value) => subject.get(attribute).is_some_and(|v| v == *value),
            Self::Prefix(attribute, value) => subject
                .get(attribute)
                .is_some_and(|v| v.starts_with(value.as_str())),
            Self::Suffix(attribute, value) => subject
                .get(attribute)
                .is_some_and(|v| v.ends_with(value.as_str())),
            Self::All(filters) => filters.iter().all(|f| f.matches(subject)),
            Self::Any(filters) => filters.iter().any(|f| f.matches(subject)),
            Self::Not(filter) => !filter.matches(subject),
        }
    }

    /// The filter as the JSON it was parsed from.
    pub fn to_json(&self) -> Value {
        let comparison = |dialect: &str, attribute: &Attribute, value: &str| serde_json::json!({ dialect: { attribute.to_string(): value } });
        match self {
            Self::Exact(a, v) => comparison("exact", a, v),
            Self::Prefix(a, v) => comparison("prefix", a, v),
            Self::Suffix(a, v) => comparison("suffix", a, v),
            Self::All(filters) => {
                serde_json::json!({ "all": filters.iter().map(Self::to_json).collect::<Vec<_>>() })
            }
            Self::Any(filters) => {
                serde_json::json!({ "any": filters.iter().map(Self::to_json).collect::<Vec<_>>() })
            }
            Self::Not(filter) => serde_json::json!({ "not": filter.to_json() }),
        }
    }
}

/// A subscription's filters, all of which must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters(pub Vec<Filter>);

impl Filters {
    /// Parses and checks a JSON list of filters.
    pub fn parse(value: &Value) -> Result<Self, FilterError> {
        let mut parser = Parser { expressions: 0 };
        let list = value
            .as_array()
            .ok_or_else(|| FilterError::new("filters", Problem::NotAList))?;
        list.iter()
            .enumerate()
            .map(|(at, filter)| parser.filter(filter, &format!("filters[{at}]"), 1))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `subject` passes every filter (an empty list passes all).
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        self.0.iter().all(|filter| filter.matches(subject))
    }
}

/// Why filters were refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct FilterError {
    /// Where in the input: `filters[0].all[1].exact`.
    pub path: String,
    pub problem: Problem,
}

impl FilterError {
    fn new(path: impl Into<String>, problem: Problem) -> Self {
        Self {
            path: path.into(),
            problem,
        }
    }
}

/// What is wrong with a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("expected a list of filters")]
    NotAList,
    #[error("expected an object with one dialect (exact, prefix, suffix, all, any or not)")]
    NotAnExpression,
    #[error("a filter has exactly one dialect, this one has {0}")]
    DialectCount(usize),
    #[error("unknown dialect {0:?} (expected exact, prefix, suffix, all, any or not)")]
    UnknownDialect(String),
    #[error("expected an object with exactly one attribute")]
    NotOneAttribute,
    #[error("unknown attribute {0:?} (expected type, id, source, direction or data.<field>)")]
    UnknownAttribute(String),
    #[error("expected a non-empty string")]
    NotAString,
    #[error("the value is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong,
    #[error("expected a non-empty list of filters")]
    EmptyList,
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_EXPRESSIONS} filter expressions")]
    TooMany,
}

struct Parser {
    expressions: usize,
}

impl Parser {
    fn filter(&mut self, value: &Value, path: &str, depth: usize) -> Result<Filter, FilterError> {
        let error = |problem| FilterError::new(path, problem);
        if depth > MAX_DEPTH {
            return Err(error(Problem::TooDeep));
        }
        self.expressions += 1;
        if self.expressions > MAX_EXPRESSIONS {
            return Err(error(Problem::TooMany));
        }
        let object = value
            .as_object()
            .ok_or_else(|| error(Problem::NotAnExpression))?;
        let mut dialects = object.iter();
        let (Some((dialect, body)), None) = (dialects.next(), dialects.next()) else {
            return Err(error(Problem::DialectCount(object.len())));
        };
        let path = format!("{path}.{dialect}");
        match dialect.as_str() {
            "exact" => comparison(body, &path).map(|(a, v)| Filter::Exact(a, v)),
            "prefix" => comparison(body, &path).map(|(a, v)| Filter::Prefix(a, v)),
            "suffix" => comparison(body, &path).map(|(a, v)| Filter::Suffix(a, v)),
            "all" => self.list(body, &path, depth).map(Filter::All),
            "any" => self.list(body, &path, depth).map(Filter::Any),
            "not" => self
                .filter(body, &path, depth + 1)
                .map(|f| Filter::Not(Box::new(f))),
            other => Err(FilterError::new(
                path.clone(),
                Problem::UnknownDialect(other.to_owned()),
            )),
        }
    }

    fn list(
        &mut self,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Vec<Filter>, FilterError> {
        let list = value
            .as_array()
            .filter(|list| !list.is_empty())
            .ok_or_else(|| FilterError::new(path, Problem::EmptyList))?;
        list.iter()
            .enumerate()
            .map(|(at, filter)| self.filter(filter, &format!("{path}[{at}]"), depth + 1))
            .collect()
    }
}

/// `{"<attribute>": "<value>"}` of `exact`, `prefix` and `suffix`.
fn comparison(body: &Value, path: &str) -> Result<(Attribute, String), FilterError> {
    let object = body
        .as_object()
        .filter(|object| object.len() == 1)
        .ok_or_else(|| FilterError::new(path, Problem::NotOneAttribute))?;
    let (name, value) = object.iter().next().expect("one attribute");
    let path = format!("{path}.{name}");
    let attribute = Attribute::parse(name)
        .ok_or_else(|| FilterError::new(path.clone(), Problem::UnknownAttribute(name.clone())))?;
    let value = value
        .as_str()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| FilterError::new(path.clone(), Problem::NotAString))?;
    if value.len() > MAX_VALUE_LEN {
        return Err(FilterError::new(path, Problem::ValueTooLong));
    }
    Ok((attribute, value.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn data() -> Map<String, Value> {
        json!({"region": "eu-west", "count": 3, "urgent": true, "nested": {"a": 1}, "none": null})
            .as_object()
            .unwrap()
            .clone()
    }

    fn check(filters: Value, expected: bool) {
        let data = data();
        let subject = Subject {
            kind: "OrderCreated",
            id: "o-1",
            source: "dispatcher",
            direction: "request",
            data: &data,
        };
        let parsed = Filters::parse(&filters).unwrap_or_else(|e| panic!("{filters}: {e}"));
        assert_eq!(parsed.matches(&subject), expected, "{filters}");
    }

    #[test]
    fn every_dialect_matches_what_it_says() {
        for (filters, expected) in [
            (json!([]), true),
            (json!([{"exact": {"type": "OrderCreated"}}]), true),
            (json!([{"exact": {"type": "ordercreated"}}]), false),
            (json!([{"prefix": {"type": "Order"}}]), true),
            (json!([{"suffix": {"type": "Created"}}]), true),
            (json!([{"suffix": {"type": "Order"}}]), false),
            (json!([{"exact": {"id": "o-1"}}]), true),
            (json!([{"exact": {"source": "dispatcher"}}]), true),
            (json!([{"exact": {"direction": "response"}}]), false),
            (json!([{"prefix": {"data.region": "eu-"}}]), true),
            (json!([{"exact": {"data.count": "3"}}]), true),
            (json!([{"exact": {"data.urgent": "true"}}]), true),
            // Missing fields and fields that are not scalars never match...
            (json!([{"exact": {"data.missing": "x"}}]), false),
            (json!([{"prefix": {"data.nested": "{"}}]), false),
            (json!([{"prefix": {"data.none": "n"}}]), false),
            // ...so their negation always does.
            (json!([{"not": {"exact": {"data.missing": "x"}}}]), true),
            (
                json!([{"all": [{"prefix": {"type": "Order"}}, {"exact": {"data.region": "eu-west"}}]}]),
                true,
            ),
            (
                json!([{"all": [{"prefix": {"type": "Order"}}, {"exact": {"data.region": "us"}}]}]),
                false,
            ),
            (
                json!([{"any": [{"exact": {"type": "X"}}, {"exact": {"type": "OrderCreated"}}]}]),
                true,
            ),
            (
                json!([{"any": [{"exact": {"type": "X"}}, {"exact": {"type": "Y"}}]}]),
                false,
            ),
            (json!([{"not": {"exact": {"type": "OrderCreated"}}}]), false),
            // The list is ANDed.
            (
                json!([{"prefix": {"type": "Order"}}, {"exact": {"direction": "response"}}]),
                false,
            ),
        ] {
            check(filters, expected);
        }
    }

    #[test]
    fn what_is_not_understood_is_refused_by_name() {
        for (filters, message) in [
            (
                json!({"exact": {"type": "X"}}),
                "filters: expected a list of filters",
            ),
            (
                json!(["exact"]),
                "filters[0]: expected an object with one dialect",
            ),
            (
                json!([{}]),
                "filters[0]: a filter has exactly one dialect, this one has 0",
            ),
            (
                json!([{"exact": {"type": "X"}, "prefix": {"type": "X"}}]),
                "filters[0]: a filter has exactly one dialect, this one has 2",
            ),
            (
                json!([{"regex": {"type": ".*"}}]),
                "filters[0].regex: unknown dialect \"regex\"",
            ),
            (
                json!([{"sql": "type = 'X'"}]),
                "filters[0].sql: unknown dialect \"sql\"",
            ),
            (
                json!([{"exact": {"subject": "X"}}]),
                "filters[0].exact.subject: unknown attribute \"subject\"",
            ),
            (
                json!([{"exact": {"data.": "X"}}]),
                "filters[0].exact.data.: unknown attribute \"data.\"",
            ),
            (
                json!([{"exact": {"type": "X", "id": "y"}}]),
                "filters[0].exact: expected an object with exactly one attribute",
            ),
            (
                json!([{"exact": {"type": 3}}]),
                "filters[0].exact.type: expected a non-empty string",
            ),
            (
                json!([{"prefix": {"type": ""}}]),
                "filters[0].prefix.type: expected a non-empty string",
            ),
            (
                json!([{"all": []}]),
                "filters[0].all: expected a non-empty list of filters",
            ),
            (
                json!([{"any": {"exact": {"type": "X"}}}]),
                "filters[0].any: expected a non-empty list of filters",
            ),
            (
                json!([{"any": [{"exact": {"type": "X"}}, {"nope": {}}]}]),
                "filters[0].any[1].nope: unknown dialect \"nope\"",
            ),
            (
                json!([{"exact": {"type": "x".repeat(MAX_VALUE_LEN + 1)}}]),
                "filters[0].exact.type: the value is longer than 1024 bytes",
            ),
        ] {
            let error = Filters::parse(&filters).unwrap_err().to_string();
            assert!(error.starts_with(message), "{filters}: {error}");
        }
    }

    #[test]
    fn filters_are_bounded_in_depth_and_size() {
        let mut deep = json!({"exact": {"type": "X"}});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        let error = Filters::parse(&json!([deep])).unwrap_err();
        assert_eq!(error.problem, Problem::TooDeep);

        let wide: Vec<Value> = (0..MAX_EXPRESSIONS)
            .map(|_| json!({"exact": {"type": "X"}}))
            .collect();
        assert!(Filters::parse(&Value::Array(wide.clone())).is_ok());
        let error = Filters::parse(&json!([{"any": wide}])).unwrap_err();
        assert_eq!(error.problem, Problem::TooMany);
    }

    /// Filters of a few attributes and short values, so that generated
    /// events match them often enough to exercise both outcomes.
    fn filter() -> impl Strategy<Value = Filter> {
        let attribute = prop_oneof![
            Just(Attribute::Type),
            Just(Attribute::Direction),
            Just(Attribute::Data("region".to_owned())),
            Just(Attribute::Data("count".to_owned())),
        ];
        let value = "[ab1]{1,2}";
        let leaf =
            (0..3_u8, attribute, value).prop_map(|(dialect, attribute, value)| match dialect {
                0 => Filter::Exact(attribute, value),
                1 => Filter::Prefix(attribute, value),
                _ => Filter::Suffix(attribute, value),
            });
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..3).prop_map(Filter::All),
                prop::collection::vec(inner.clone(), 1..3).prop_map(Filter::Any),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    /// An event with the attributes the generated filters read, some
    /// absent.
    fn event() -> impl Strategy<Value = (String, String, Map<String, Value>)> {
        (
            "[ab1]{1,3}",
            "[ab1]{1,3}",
            prop::option::of("[ab1]{1,3}"),
            prop::option::of(0_u8..12),
        )
            .prop_map(|(kind, direction, region, count)| {
                let mut data = Map::new();
                if let Some(region) = region {
                    data.insert("region".to_owned(), Value::String(region));
                }
                if let Some(count) = count {
                    data.insert("count".to_owned(), Value::from(count));
                }
                (kind, direction, data)
            })
    }

    fn subject<'a>(
        (kind, direction, data): &'a (String, String, Map<String, Value>),
    ) -> Subject<'a> {
        Subject {
            kind,
            id: "e",
            source: "dispatcher",
            direction,
            data,
        }
    }

    proptest! {
        #[test]
        fn double_negation_changes_nothing(f in filter(), e in event()) {
            let s = subject(&e);
            prop_assert_eq!(Filter::Not(Box::new(Filter::Not(Box::new(f.clone())))).matches(&s), f.matches(&s));
        }

        #[test]
        fn de_morgan_holds(a in filter(), b in filter(), e in event()) {
            let s = subject(&e);
            let not = |f: &Filter| Filter::Not(Box::new(f.clone()));
            prop_assert_eq!(
                not(&Filter::All(vec![a.clone(), b.clone()])).matches(&s),
                Filter::Any(vec![not(&a), not(&b)]).matches(&s)
            );
            prop_assert_eq!(
                not(&Filter::Any(vec![a.clone(), b.clone()])).matches(&s),
                Filter::All(vec![not(&a), not(&b)]).matches(&s)
            );
        }

        #[test]
        fn all_and_any_of_one_are_that_one_and_ignore_order(a in filter(), b in filter(), e in event()) {
            let s = subject(&e);
            prop_assert_eq!(Filter::All(vec![a.clone()]).matches(&s), a.matches(&s));
            prop_assert_eq!(Filter::Any(vec![a.clone()]).matches(&s), a.matches(&s));
            prop_assert_eq!(
                Filter::All(vec![a.clone(), b.clone()]).matches(&s),
                Filter::All(vec![b.clone(), a.clone()]).matches(&s)
            );
            prop_assert_eq!(
                Filter::Any(vec![a.clone(), b.clone()]).matches(&s),
                Filter::Any(vec![b, a]).matches(&s)
            );
        }

        #[test]
        fn a_filter_and_its_negation_never_agree(f in filter(), e in event()) {
            let s = subject(&e);
            prop_assert_ne!(f.matches(&s), Filter::Not(Box::new(f)).matches(&s));
        }

        #[test]
        fn what_is_printed_parses_back_to_the_same_filter(f in filter()) {
            let parsed = Filters::parse(&Value::Array(vec![f.to_json()])).unwrap();
            prop_assert_eq!(parsed.0, vec![f]);
        }
    }
}
