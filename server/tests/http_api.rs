//! The OpenAI-compatible HTTP API on a real server and port, spoken to with raw
//! HTTP/1.1: embeddings equal gRPC's for every input shape and encoding, OpenAI's error
//! shape and statuses, the body and content-type limits, slow clients, tokens, probes.

mod common;

use base64::Engine as _;
use common::Server;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A response: status, lower-cased head, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The OpenAI error's `type`, after checking the shape.
    fn error_type(&self) -> String {
        let error = &self.json()["error"];
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error.get("param").is_some() && error.get("code").is_some());
        error["type"].as_str().unwrap().to_string()
    }
}

fn read_reply(mut stream: TcpStream) -> Reply {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_lowercase(),
        body: body.to_string(),
    }
}

/// Sends one request (`Connection: close`) with `headers` and returns the reply.
fn send(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(stream)
}

fn post(addr: &str, path: &str, body: &Value) -> Reply {
    send(
        addr,
        "POST",
        path,
        &["Content-Type: application/json"],
        &body.to_string(),
    )
}

fn http_addr(server: &Server) -> String {
    server.http.clone().expect("the HTTP API is on")
}

fn vectors(reply: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let response = reply.json();
    assert_eq!(response["object"], "list");
    response["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(
                (d["object"].as_str(), d["index"].as_u64()),
                (Some("embedding"), Some(i as u64))
            );
            match &d["embedding"] {
                Value::String(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap()
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
                other => panic!("embedding {other}"),
            }
        })
        .collect()
}

#[tokio::test]
async fn embeddings_equal_grpc_for_every_input_shape_and_encoding() {
    let server = Server::minilm(&[]);
    let addr = http_addr(&server);
    let texts = [
        "hello world",
        "a heist film where the crew is double-crossed",
    ];
    let grpc = server
        .client()
        .await
        .embed_texts("minilm", &texts)
        .await
        .unwrap();

    let reply = post(
        &addr,
        "/v1/embeddings",
        &json!({"model": "minilm", "input": texts}),
    );
    assert_eq!(vectors(&reply), grpc, "JSON floats round-trip exactly");
    let response = reply.json();
    assert_eq!(response["model"], "minilm");
    let tokens = response["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(response["usage"]["total_tokens"].as_u64(), Some(tokens));
    assert!(tokens >= 4 + 10, "{tokens}");

    let reply = post(
        &addr,
        "/v1/embeddings",
        &json!({"model": "minilm", "input": texts[0], "encoding_format": "base64"}),
    );
    assert!(reply.json()["data"][0]["embedding"].is_string());
    assert_eq!(vectors(&reply), grpc[..1]);

    // [CLS] hello world [SEP] in the model's vocabulary: the same vector as the text.
    let ids = json!([101, 7592, 2088, 102]);
    for input in [ids.clone(), json!([ids])] {
        let reply = post(
            &addr,
            "/v1/embeddings",
            &json!({"model": "minilm", "input": input}),
        );
        assert_eq!(reply.json()["usage"]["prompt_tokens"], 4);
        let v = &vectors(&reply)[0];
        let dot: f32 = v.iter().zip(&grpc[0]).map(|(a, b)| a * b).sum();
        assert!(dot > 0.99999, "{dot}");
    }
    // No model named: the default model (the only one served here).
    let reply = post(&addr, "/v1/embeddings", &json!({"input": texts[0]}));
    assert_eq!(vectors(&reply), grpc[..1]);
    let reply = post(
        &addr,
        "/v1/embeddings",
        &json!({"input": "x", "model": "minilm", "dimensions": 384}),
    );
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn errors_take_openai_shape_and_http_status() {
    let server = Server::minilm_with_env(&[], &[("MARQUEE_LIMITS__MAX_MESSAGE_BYTES", "4096")]);
    let addr = http_addr(&server);
    let cases: Vec<(Reply, u16, &str)> = vec![
        (
            post(
                &addr,
                "/v1/embeddings",
                &json!({"model": "nope", "input": "x"}),
            ),
            404,
            "not_found_error",
        ),
        (
            send(
                &addr,
                "POST",
                "/v1/embeddings",
                &["Content-Type: application/json"],
                "{\"input\": ",
            ),
            400,
            "invalid_request_error",
        ),
        (
            send(
                &addr,
                "POST",
                "/v1/embeddings",
                &["Content-Type: text/plain"],
                "{\"input\": \"x\"}",
            ),
            415,
            "invalid_request_error",
        ),
        (
            post(&addr, "/v1/embeddings", &json!({"input": "x".repeat(5000)})),
            413,
            "invalid_request_error",
        ),
        (
            post(&addr, "/v1/embeddings", &json!({"input": []})),
            400,
            "invalid_request_error",
        ),
        (
            post(&addr, "/v1/embeddings", &json!({"input": ""})),
            400,
            "invalid_request_error",
        ),
        (
            post(
                &addr,
                "/v1/embeddings",
                &json!({"input": [1, 2], "model": "minilm", "dimensions": 8}),
            ),
            400,
            "invalid_request_error",
        ),
        (
            post(&addr, "/v1/embeddings", &json!({"input": [999999999]})),
            400,
            "invalid_request_error",
        ),
        (
            post(
                &addr,
                "/v1/embeddings",
                &json!({"input": "x", "encoding_format": "int8"}),
            ),
            400,
            "invalid_request_error",
        ),
        (
            post(
                &addr,
                "/v1/chat/completions",
                &json!({"model": "minilm", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            400,
            "invalid_request_error",
        ),
        (
            post(
                &addr,
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": "hi"}]}),
            ),
            404,
            "not_found_error",
        ),
        (
            send(&addr, "GET", "/v2/nothing", &[], ""),
            404,
            "not_found_error",
        ),
        (
            send(
                &addr,
                "POST",
                "/v1/embeddings",
                &["Content-Type: application/json", "X-Request-Timeout: soon"],
                "{}",
            ),
            400,
            "invalid_request_error",
        ),
    ];
    for (i, (reply, status, kind)) in cases.iter().enumerate() {
        assert_eq!(reply.status, *status, "case {i}: {}", reply.body);
        assert_eq!(reply.error_type(), *kind, "case {i}");
    }
    // Malformed JSON says where; a body of the wrong shape says which field.
    assert!(
        cases[1].0.body.contains("not valid JSON"),
        "{}",
        cases[1].0.body
    );
    assert_eq!(cases[6].0.json()["error"]["param"], "dimensions");
    // A body refused unread closes a kept-alive connection, and says so: a client must
    // not send its next request on it.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = json!({"input": "x".repeat(50_000)}).to_string();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let refused = read_reply(stream);
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(
        refused.head.contains("connection: close"),
        "{}",
        refused.head
    );
    // The server is unharmed.
    let reply = post(&addr, "/v1/embeddings", &json!({"input": "still here"}));
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn tokens_guard_the_api_but_not_the_probes() {
    let server = Server::minilm_with_env(
        &[],
        &[
            ("MARQUEE_AUTH__TOKENS", "user-secret"),
            ("MARQUEE_AUTH__ADMIN_TOKENS", "admin-secret"),
        ],
    );
    let addr = http_addr(&server);
    let embed = |auth: &[&str]| {
        let mut headers = vec!["Content-Type: application/json"];
        headers.extend_from_slice(auth);
        send(
            &addr,
            "POST",
            "/v1/embeddings",
            &headers,
            "{\"input\": \"x\"}",
        )
    };
    let missing = embed(&[]);
    assert_eq!(
        (missing.status, missing.error_type()),
        (401, "authentication_error".into())
    );
    assert_eq!(embed(&["Authorization: Bearer wrong"]).status, 401);
    assert_eq!(embed(&["Authorization: Basic dXNlcg=="]).status, 401);
    assert_eq!(embed(&["Authorization: Bearer user-secret"]).status, 200);
    let load = |token: &str| {
        send(
            &addr,
            "POST",
            "/v1/load_lora_adapter",
            &[
                "Content-Type: application/json",
                &format!("Authorization: Bearer {token}"),
            ],
            "{\"lora_name\": \"a\", \"lora_path\": \"/nowhere\"}",
        )
    };
    let user = load("user-secret");
    assert_eq!(
        (user.status, user.error_type()),
        (403, "permission_error".into())
    );
    // An admin passes the guard; no generator is loaded here.
    assert_eq!(load("admin-secret").status, 404);
    for probe in ["/health", "/ready"] {
        let reply = send(&addr, "GET", probe, &[], "");
        assert_eq!(reply.status, 200, "{probe}: {}", reply.body);
    }
    let models = send(
        &addr,
        "GET",
        "/v1/models",
        &["Authorization: Bearer user-secret"],
        "",
    );
    let list = models.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "minilm");
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][0]["kind"], "text-encoder");
    let one = send(
        &addr,
        "GET",
        "/v1/models/minilm",
        &["Authorization: Bearer user-secret"],
        "",
    );
    assert_eq!(one.json()["max_model_len"], 256);
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_the_server_keeps_serving() {
    let server = Server::minilm_with_env(&[], &[("MARQUEE_LIMITS__HTTP_READ_TIMEOUT_MS", "500")]);
    let addr = http_addr(&server);
    // A request head that never ends: the connection is closed.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    // A body that stops half-way: 408.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"input\": ",
    )
    .unwrap();
    let reply = read_reply(slow);
    assert_eq!(
        (reply.status, reply.error_type()),
        (408, "invalid_request_error".into())
    );
    // Meanwhile others are served.
    let reply = post(&addr, "/v1/embeddings", &json!({"input": "quick"}));
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains("content-type: application/json"));
}

#[tokio::test]
async fn the_http_api_can_be_turned_off() {
    let server = Server::minilm(&["--http-listen", ""]);
    assert_eq!(server.http, None);
}
