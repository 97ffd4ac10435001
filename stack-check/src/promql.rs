//! Finding the metric names a PromQL expression reads.
//!
//! Not a PromQL parser: a scanner that knows enough of the grammar to tell a
//! metric name from everything else that looks like an identifier —
//! function and aggregation names (followed by `(`), keywords, label lists
//! after `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`, label
//! matchers in `{}`, ranges in `[]`, strings, numbers and durations, and
//! Grafana's `$variables`. That is all the dashboard and the alert rules use.

use std::collections::BTreeSet;

/// Operators and keywords that are never metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    // Aggregations may put their `by (...)` clause before the parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects, as written (histogram series keep their
/// `_bucket`/`_sum`/`_count` suffix).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i = match c {
            '"' | '\'' | '`' => skip_string(&chars, i),
            '{' => skip_group(&chars, i, '{', '}'),
            '[' => skip_group(&chars, i, '[', ']'),
            '$' => skip_variable(&chars, i),
            '#' => skip_comment(&chars, i),
            c if c.is_ascii_digit() || c == '.' => skip_word(&chars, i, |c| {
                c.is_ascii_alphanumeric() || c == '.' || c == '_'
            }),
            c if is_name_start(c) => {
                let end = skip_word(&chars, i, is_name_char);
                let word: String = chars[i..end].iter().collect();
                let next = next_non_space(&chars, end);
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    match next {
                        Some(at) if chars[at] == '(' => skip_group(&chars, at, '(', ')'),
                        _ => end,
                    }
                } else {
                    let is_call = next.is_some_and(|at| chars[at] == '(');
                    if !is_call && !KEYWORDS.contains(&word.as_str()) {
                        names.insert(word);
                    }
                    end
                }
            }
            _ => i + 1,
        };
    }
    names
}

/// The metric names a Grafana template-variable query reads:
/// `label_values(selector, label)` and `query_result(expr)` read metrics,
/// `label_values(label)`, `label_names()` and `metrics(regex)` do not.
pub fn template_query_metric_names(query: &str) -> BTreeSet<String> {
    let query = query.trim();
    if let Some(args) = call_arguments(query, "label_values") {
        let args = split_top_level(args);
        return match args.as_slice() {
            [selector, _label] => metric_names(selector),
            _ => BTreeSet::new(),
        };
    }
    if let Some(expr) = call_arguments(query, "query_result") {
        return metric_names(expr);
    }
    if query.starts_with("label_names(") || query.starts_with("metrics(") {
        return BTreeSet::new();
    }
    metric_names(query)
}

/// The text between the parentheses of `name(...)` when `text` is that call.
fn call_arguments<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// Splits on commas outside parentheses, braces, brackets and strings.
fn split_top_level(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut parts = Vec::new();
    let (mut depth, mut start, mut quote) = (0i32, 0, None);
    for &(at, c) in &chars {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(text[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_word(chars: &[char], start: usize, keep: impl Fn(char) -> bool) -> usize {
    let mut i = start;
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i.max(start + 1)
}

fn next_non_space(chars: &[char], from: usize) -> Option<usize> {
    (from..chars.len()).find(|&i| !chars[i].is_whitespace())
}

/// Past the closing quote of the string opening at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// Past the bracket that closes the one at `start`, skipping strings inside.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// Past a Grafana variable: `$name`, `$__rate_interval` or `${name:format}`.
fn skip_variable(chars: &[char], start: usize) -> usize {
    match chars.get(start + 1) {
        Some('{') => skip_group(chars, start + 1, '{', '}'),
        _ => skip_word(chars, start + 1, is_name_char),
    }
}

fn skip_comment(chars: &[char], start: usize) -> usize {
    (start..chars.len())
        .find(|&i| chars[i] == '\n')
        .unwrap_or(chars.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
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
    fn variable_queries() {
        let names =
            |q: &str| -> Vec<String> { template_query_metric_names(q).into_iter().collect() };
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
