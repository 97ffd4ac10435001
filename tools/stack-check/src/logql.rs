//! The LogQL the provisioning asks of Loki, evaluated offline.
//!
//! Grafana's trace → logs link runs a query the provisioning spells out
//! (`tracesToLogsV2.query`). Whether it finds anything depends on where
//! Loki puts what the services export over OTLP: resource attributes such
//! as `service.name` become stream labels (`service_name`), a record's
//! trace and span ids become structured metadata, which a stream selector
//! cannot match, only a label filter after it. Loki cannot run here, so
//! the integration tests map the log records the services really export
//! the way Loki does ([`Entry`]) and run the provisioned query on them
//! with [`Query`], the subset of LogQL the provisioning uses: a stream
//! selector, then `|` label filters, each with `=`, `!=`, `=~` or `!~`.
//! Anything else is refused by name rather than guessed at.

use std::collections::BTreeMap;

use regex::Regex;

use crate::files;

/// The provisioned data sources.
pub const DATASOURCES: &str = "grafana/provisioning/datasources/datasources.yaml";

/// A log line as Loki stores it: stream labels and structured metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub labels: BTreeMap<String, String>,
    pub structured_metadata: BTreeMap<String, String>,
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    Matches,
    NotMatches,
}

/// `name op "value"`, with the value's regex when `op` is one.
#[derive(Debug, Clone)]
struct Matcher {
    name: String,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Whether `value` (empty when the name is absent, as in Loki) passes.
    fn accepts(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match (self.op, &self.regex) {
            (Op::Equal, _) => value == self.value,
            (Op::NotEqual, _) => value != self.value,
            (Op::Matches, Some(regex)) => regex.is_match(value),
            (Op::NotMatches, Some(regex)) => !regex.is_match(value),
            (Op::Matches | Op::NotMatches, None) => unreachable!("regex ops carry their regex"),
        }
    }
}

/// A parsed query: the stream selector and the label filters after it.
#[derive(Debug, Clone)]
pub struct Query {
    selector: Vec<Matcher>,
    filters: Vec<Matcher>,
}

impl Query {
    /// Parses `text`, refusing what Loki refuses too: a selector every
    /// stream would match (all its matchers accept the empty value).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut input = Input(text.trim());
        input.expect('{')?;
        let mut selector = vec![input.matcher()?];
        while input.eat(',') {
            selector.push(input.matcher()?);
        }
        input.expect('}')?;
        let mut filters = Vec::new();
        while !input.0.is_empty() {
            input.expect('|')?;
            filters.push(input.matcher()?);
        }
        if selector.iter().all(|m| m.accepts(None)) {
            return Err(format!(
                "{text}: the stream selector needs a matcher that the empty value fails"
            ));
        }
        Ok(Self { selector, filters })
    }

    /// Whether `entry` is in the query's result.
    pub fn matches(&self, entry: &Entry) -> bool {
        let label = |name: &str| entry.labels.get(name).map(String::as_str);
        let any =
            |name: &str| label(name).or(entry.structured_metadata.get(name).map(String::as_str));
        self.selector.iter().all(|m| m.accepts(label(&m.name)))
            && self.filters.iter().all(|m| m.accepts(any(&m.name)))
    }
}

/// The trace → logs query Tempo's data source is provisioned with, as
/// Grafana runs it for `trace_id`: `$$` is the provisioning's escape for
/// `$`, and `${__trace.traceId}` the trace's id.
pub fn trace_to_logs_query(trace_id: &str) -> String {
    let datasources = files::load_yaml(DATASOURCES);
    let tempo = datasources["datasources"]
        .as_sequence()
        .expect("datasources list")
        .iter()
        .find(|datasource| datasource["uid"].as_str() == Some("tempo"))
        .expect("the tempo data source");
    tempo["jsonData"]["tracesToLogsV2"]["query"]
        .as_str()
        .expect("tracesToLogsV2.query")
        .replace("$$", "$")
        .replace("${__trace.traceId}", trace_id)
}

/// What is left of a query to parse.
struct Input<'a>(&'a str);

impl Input<'_> {
    fn skip_space(&mut self) {
        self.0 = self.0.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.0.strip_prefix(c) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {c:?} at {:?}", self.0))
        }
    }

    fn matcher(&mut self) -> Result<Matcher, String> {
        self.skip_space();
        let end = self
            .0
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.0.len());
        let name = &self.0[..end];
        if name.is_empty() {
            return Err(format!("expected a label name at {:?}", self.0));
        }
        self.0 = &self.0[end..];
        self.skip_space();
        let (op, len) = [
            ("!=", Op::NotEqual),
            ("=~", Op::Matches),
            ("!~", Op::NotMatches),
            ("=", Op::Equal),
        ]
        .into_iter()
        .find(|(token, _)| self.0.starts_with(token))
        .map(|(token, op)| (op, token.len()))
        .ok_or_else(|| format!("unsupported operator at {:?}", self.0))?;
        self.0 = &self.0[len..];
        let value = self.string()?;
        let regex = match op {
            // Loki anchors its regexes at both ends.
            Op::Matches | Op::NotMatches => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("{value:?}: {e}"))?)
            }
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value,
            regex,
        })
    }

    /// A double-quoted string with `\"` and `\\` escapes, or a backquoted
    /// raw one.
    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let mut chars = self.0.char_indices();
        let quote = match chars.next() {
            Some((_, q @ ('"' | '`'))) => q,
            _ => return Err(format!("expected a string at {:?}", self.0)),
        };
        let mut value = String::new();
        let mut escaped = false;
        for (at, c) in chars {
            match c {
                '"' | '\\' if escaped => {
                    value.push(c);
                    escaped = false;
                }
                _ if escaped => return Err(format!("unsupported escape \\{c} in {:?}", self.0)),
                '\\' if quote == '"' => escaped = true,
                _ if c == quote => {
                    self.0 = &self.0[at + 1..];
                    return Ok(value);
                }
                _ => value.push(c),
            }
        }
        Err(format!("unterminated string at {:?}", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: &str, trace_id: &str) -> Entry {
        Entry {
            labels: [("service_name".to_owned(), service.to_owned())].into(),
            structured_metadata: [("trace_id".to_owned(), trace_id.to_owned())].into(),
        }
    }

    #[test]
    fn a_label_filter_reads_structured_metadata() {
        let query = Query::parse(r#"{service_name=~".+"} | trace_id="abc""#).unwrap();
        assert!(query.matches(&entry("dispatcher", "abc")));
        assert!(!query.matches(&entry("dispatcher", "abd")));
    }

    #[test]
    fn a_stream_selector_does_not_read_structured_metadata() {
        let query = Query::parse(r#"{service_name="dispatcher", trace_id="abc"}"#).unwrap();
        assert!(!query.matches(&entry("dispatcher", "abc")));
    }

    #[test]
    fn regexes_are_anchored() {
        let query = Query::parse(r#"{service_name=~"public"}"#).unwrap();
        assert!(!query.matches(&entry("public-web", "")));
        let query =
            Query::parse(r#"{service_name=~".+", service_name!~"public.*"} | trace_id!=`x`"#)
                .unwrap();
        assert!(query.matches(&entry("dispatcher", "abc")));
    }

    #[test]
    fn a_selector_that_matches_every_stream_is_refused() {
        assert!(Query::parse(r#"{service_name=~".*"}"#).is_err());
        assert!(Query::parse(r#"{service_name=""}"#).is_err());
    }

    #[test]
    fn other_syntax_is_refused_not_guessed() {
        for query in [
            r#"{service_name="a"} |= "text""#,
            r#"{service_name="a"} | json"#,
            r#"{service_name="a""#,
            r#"service_name="a""#,
            r#"{service_name="a\nb"}"#,
        ] {
            assert!(Query::parse(query).is_err(), "{query}");
        }
    }

    #[test]
    fn the_provisioned_query_parses() {
        let text = trace_to_logs_query("4bf92f3577b34da6a3ce929d0e0e4736");
        let query = Query::parse(&text).unwrap();
        assert!(query.matches(&entry("public-web", "4bf92f3577b34da6a3ce929d0e0e4736")));
    }
}
