//! The metric names a PromQL expression reads, by PromQL's own grammar
//! (`promql-parser`), after Grafana's variables are put in terms PromQL
//! parses: a variable in a range (`[$__rate_interval]`) becomes a duration,
//! one among label matchers (`{$__tags}`) a matcher, and `$$` (the
//! provisioning files' escape of `$`) a `$`.

use std::collections::BTreeSet;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

/// The metric names `expr` selects, as written (histogram series keep their
/// `_bucket`/`_sum`/`_count` suffix), or why it does not parse.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let expr = parser::parse(&without_grafana_variables(expr)?)?;
    let mut names = Names::default();
    walk_expr(&mut names, &expr)?;
    Ok(names.0)
}

/// The metric names a Grafana template-variable query reads:
/// `label_values(selector, label)` and `query_result(expr)` read metrics,
/// `label_values(label)`, `label_names()` and `metrics(regex)` do not.
pub fn template_query_metric_names(query: &str) -> Result<BTreeSet<String>, String> {
    let query = query.trim();
    if let Some(args) = call_arguments(query, "label_values") {
        // The label is the last argument, and label names have no commas.
        return match args.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => Ok(BTreeSet::new()),
        };
    }
    if let Some(expr) = call_arguments(query, "query_result") {
        return metric_names(expr);
    }
    if query.starts_with("label_names(") || query.starts_with("metrics(") {
        return Ok(BTreeSet::new());
    }
    metric_names(query)
}

/// Collects the name of every selector.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(selector) => selector,
            Expr::MatrixSelector(matrix) => &matrix.vs,
            _ => return Ok(true),
        };
        if let Some(name) = &selector.name {
            self.0.insert(name.clone());
        }
        Ok(true)
    }
}

/// The text between the parentheses of `name(...)` when `text` is that call.
fn call_arguments<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// `expr` with each Grafana variable outside a string replaced by what
/// PromQL accepts in its place (see the module doc).
fn without_grafana_variables(expr: &str) -> Result<String, String> {
    let expr = expr.replace("$$", "$");
    let mut out = String::with_capacity(expr.len());
    let mut open: Vec<char> = Vec::new();
    let mut quote = None;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => open.push(c),
            (None, ')' | '}' | ']') => {
                open.pop();
            }
            (None, '$') => {
                let mut name = String::from('$');
                if chars.peek() == Some(&'{') {
                    for next in chars.by_ref() {
                        name.push(next);
                        if next == '}' {
                            break;
                        }
                    }
                } else {
                    while let Some(next) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        name.push(next);
                    }
                }
                match open.last() {
                    Some('[') => out.push_str("5m"),
                    Some('{') => out.push_str("grafana_variable=\"\""),
                    _ => {
                        return Err(format!(
                            "Grafana variable {name} outside a range or label matchers"
                        ));
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr)
            .unwrap_or_else(|error| panic!("{expr}: {error}"))
            .into_iter()
            .collect()
    }

    #[test]
    fn finds_the_metric_inside_functions_and_aggregations() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (job, le) (rate(http_server_request_duration_seconds_bucket{job=~"$service"}[$__rate_interval])))"#
            ),
            ["http_server_request_duration_seconds_bucket"]
        );
    }

    #[test]
    fn aggregation_clause_after_the_parenthesis() {
        assert_eq!(
            names("sum(rate(amqp_messages_published_total[5m])) without (instance)"),
            ["amqp_messages_published_total"]
        );
    }

    #[test]
    fn both_sides_of_binary_operators() {
        assert_eq!(
            names(
                r#"sum by (job) (rate(a_total{code=~"5.."}[5m])) / on (job) group_left (x) sum by (job) (rate(b_total[5m])) > bool 0.05 and c offset 1h"#
            ),
            ["a_total", "b_total", "c"]
        );
    }

    #[test]
    fn strings_label_values_and_variables_are_not_metrics() {
        assert_eq!(
            names(
                r#"label_replace(up{job="dispatcher", instance=~"${host:regex}"}, "dst", "$1 with spaces", "src", "(.*)")"#
            ),
            ["up"]
        );
        assert!(names("1e3 + 0.5 * 10").is_empty());
    }

    #[test]
    fn grafana_variables_in_ranges_and_matchers() {
        assert_eq!(
            names("sum(rate(public_web_request_timeouts_total[$__rate_interval]))"),
            ["public_web_request_timeouts_total"]
        );
        assert_eq!(
            names(r#"rate(traces_spanmetrics_calls_total{$$__tags, status_code="ERROR"}[5m])"#),
            ["traces_spanmetrics_calls_total"]
        );
        assert_eq!(names("up{${__tags}}"), ["up"]);
        assert!(metric_names("sum by ($label) (up)").is_err());
        assert!(metric_names("sum(rate(up[5m])").is_err());
    }

    #[test]
    fn variable_queries() {
        let names = |q: &str| -> Vec<String> {
            template_query_metric_names(q)
                .unwrap()
                .into_iter()
                .collect()
        };
        assert_eq!(
            names("label_values(http_server_request_duration_seconds_count, job)"),
            ["http_server_request_duration_seconds_count"]
        );
        assert_eq!(
            names(r#"label_values(amqp_connected{job="x"}, instance)"#),
            ["amqp_connected"]
        );
        assert!(names("label_values(job)").is_empty());
        assert!(names("metrics(amqp_.*)").is_empty());
        assert_eq!(
            names("query_result(topk(3, amqp_connected))"),
            ["amqp_connected"]
        );
    }
}
