//! Every class of bad input gets a clear JSON error with the right status,
//! and the service goes on serving. Checked on both HTTP services.

use common::wire::Hop;
use integration_tests::*;
use serde_json::Value;

/// One malformed request: what is sent, and the status and code expected.
struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn cases(max_body: usize) -> Vec<Case> {
    let json = Some("application/json");
    vec![
        Case {
            name: "malformed JSON",
            content_type: json,
            body: br#"{"type": "PingRequest", "data": "#.to_vec(),
            status: 400,
            code: "malformed_json",
        },
        Case {
            name: "missing type",
            content_type: json,
            body: br#"{"data": {}}"#.to_vec(),
            status: 422,
            code: "invalid_event",
        },
        Case {
            name: "empty type",
            content_type: json,
            body: br#"{"type": "", "data": {}}"#.to_vec(),
            status: 422,
            code: "invalid_event",
        },
        Case {
            name: "data not an object",
            content_type: json,
            body: br#"{"type": "PingRequest", "data": [1, 2]}"#.to_vec(),
            status: 422,
            code: "invalid_event",
        },
        Case {
            name: "type not a string",
            content_type: json,
            body: br#"{"type": 7, "data": {}}"#.to_vec(),
            status: 422,
            code: "invalid_event",
        },
        Case {
            name: "body not an object",
            content_type: json,
            body: br#"[]"#.to_vec(),
            status: 422,
            code: "invalid_event",
        },
        Case {
            name: "wrong content type",
            content_type: Some("text/plain"),
            body: br#"{"type": "PingRequest", "data": {}}"#.to_vec(),
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "no content type",
            content_type: None,
            body: br#"{"type": "PingRequest", "data": {}}"#.to_vec(),
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "body over the limit",
            content_type: json,
            body: format!(
                r#"{{"type": "PingRequest", "data": {{"pad": "{}"}}}}"#,
                "x".repeat(max_body)
            )
            .into_bytes(),
            status: 413,
            code: "body_too_large",
        },
        Case {
            name: "overlong id",
            content_type: json,
            body: format!(r#"{{"id": "{}", "type": "PingRequest"}}"#, "i".repeat(300)).into_bytes(),
            status: 422,
            code: "invalid_event",
        },
    ]
}

/// Sends each case to `url`, signed for `hop` when it is an internal
/// endpoint (so that the case itself is what is refused).
async fn assert_each_case_is_refused(url: &str, max_body: usize, hop: Option<Hop>) {
    let client = reqwest::Client::new();
    for case in cases(max_body) {
        let mut request = client.post(url);
        if let Some(hop) = hop {
            // A correlation id per case: a signature is accepted once.
            let callback = Some("http://127.0.0.1:9/dispatch");
            let correlation = case.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
            request = request.headers(test_auth().headers(hop, &correlation, callback, &case.body));
        }
        let mut request = request.body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(content_type, "application/json", "{}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{}: the error explains itself",
            case.name
        );
    }
}

#[tokio::test]
async fn public_web_refuses_each_class_of_bad_input_and_keeps_serving() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    assert_each_case_is_refused(&stack.public_web.url(), 64 * 1024, None).await;
    assert_each_case_is_refused(&format!("{}/ping", stack.public_web.url()), 64 * 1024, None).await;

    let (status, body) = post_json(
        &reqwest::Client::new(),
        &stack.public_web.url(),
        &ping_body(),
    )
    .await;
    assert_eq!(status, 200, "still serving: {body}");
    assert!(stack.pending.is_empty());
}

#[tokio::test]
async fn the_dispatcher_refuses_each_class_of_bad_input_and_keeps_serving() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    assert_each_case_is_refused(&stack.dispatcher.url(), 64 * 1024, Some(Hop::Submit)).await;

    let client = reqwest::Client::new();
    let body =
        serde_json::json!({"id": "bad-callback", "type": "PingRequest", "data": {}}).to_string();
    for callback in ["not a url", "ftp://public-web/dispatch"] {
        let response = client
            .post(stack.dispatcher.url())
            .headers(test_auth().headers(
                Hop::Submit,
                &format!("bad-callback-{}", callback.len()),
                Some(callback),
                body.as_bytes(),
            ))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{callback}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_callback", "{callback}");
    }

    let (status, body) = post_json(&client, &stack.public_web.url(), &ping_body()).await;
    assert_eq!(status, 200, "still serving: {body}");
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let (public_web, _pending) = spawn_public_web(public_web_config("http://127.0.0.1:9")).await;
    let response = reqwest::get(format!("{}/nope", public_web.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
