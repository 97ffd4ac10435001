//! The Grafana Explore link that opens one trace in the Tempo datasource.
//!
//! Grafana 10.4+ (so 11 and 12) reads Explore's state from
//! `/explore?schemaVersion=1&panes=<JSON>&orgId=1`, where `panes` maps a pane
//! id to its datasource, queries and time range. A TraceQL query that is a
//! bare trace id opens that trace.

use reqwest::Url;
use serde_json::json;

/// The uid the provisioned Tempo datasource has.
pub const TEMPO_DATASOURCE_UID: &str = "tempo";

/// The Explore URL under `grafana_base` showing trace `trace_id`.
pub fn explore_url(grafana_base: &str, trace_id: &str) -> Result<Url, crate::BadUrl> {
    let panes = json!({
        "trace": {
            "datasource": TEMPO_DATASOURCE_UID,
            "queries": [{
                "refId": "A",
                "datasource": {"type": "tempo", "uid": TEMPO_DATASOURCE_UID},
                "queryType": "traceql",
                "limit": 20,
                "tableType": "traces",
                "query": trace_id,
            }],
            "range": {"from": "now-1h", "to": "now"},
        }
    });
    let mut url = crate::target_url(grafana_base, "explore")?;
    url.query_pairs_mut()
        .append_pair("schemaVersion", "1")
        .append_pair("panes", &panes.to_string())
        .append_pair("orgId", "1");
    Ok(url)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn link_opens_the_trace_in_tempo() {
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let url = explore_url("http://127.0.0.1:3300/", trace_id).unwrap();
        assert_eq!(url.path(), "/explore");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["schemaVersion", "panes", "orgId"]);
        assert_eq!(query[0].1, "1");

        let panes: Value = serde_json::from_str(&query[1].1).unwrap();
        let pane = panes.as_object().unwrap().values().next().unwrap();
        assert_eq!(pane["datasource"], "tempo");
        let q = &pane["queries"][0];
        assert_eq!(q["datasource"]["uid"], "tempo");
        assert_eq!(q["datasource"]["type"], "tempo");
        assert_eq!(q["queryType"], "traceql");
        assert_eq!(q["query"], trace_id);
    }

    #[test]
    fn panes_json_is_percent_encoded() {
        let url = explore_url("http://grafana:3000", "abc").unwrap();
        let raw = url.query().unwrap();
        assert!(!raw.contains('{') && !raw.contains('"'), "{raw}");
    }

    #[test]
    fn base_path_prefix_is_kept() {
        let url = explore_url("http://host/grafana", "abc").unwrap();
        assert_eq!(url.path(), "/grafana/explore");
    }
}
