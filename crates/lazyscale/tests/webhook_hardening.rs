//! The webhook server against bad clients, with raw TCP and TLS clients on the real agent: bodies over
//! the limit (413), malformed reviews (400 with a message), stalled headers and handshakes (slowloris: the
//! connection is closed and other clients are served meanwhile), TLS below 1.2 refused, and a stalled
//! admin client never blocks the agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use lazyscale::webhook::{
    FIRST_REQUEST_TIMEOUT, HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, MAX_BODY_BYTES, PATH,
};
use lazyscale_testenv::TestEnv;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use common::start_agent;

/// The agent's certificate is self-signed and generated at start: these tests are about the server's
/// behaviour, not about trust, so they accept any certificate (never outside tests).
fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let mut c = lazyscale_testenv::tls::client_config(versions).unwrap();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

async fn tls(
    port: u16,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(client_config(versions))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// Sends one HTTP/1.1 POST of `body` to the webhook path and returns the status and the body.
async fn post(port: u16, body: &[u8]) -> (u16, String) {
    let mut s = tls(port, rustls::DEFAULT_VERSIONS).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // the server may answer (413) and close before the whole body is written
    let _ = s.write_all(body).await;
    let _ = s.flush().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"CREATE","object":{"metadata":{"name":"p"},"spec":{"containers":[]}}}}"#;

/// Reads until the peer closes (`Ok(bytes)`), or `Err` after `within`.
async fn closed_within<R: AsyncReadExt + Unpin>(r: &mut R, within: Duration) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, r.read_to_end(&mut out)).await {
        Ok(_) => Ok(out),
        Err(_) => Err(()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_an_http_error_with_a_message_and_good_ones_an_answer() {
    let env = TestEnv::shared();
    let agent = start_agent(env.server(), &[]);
    let port = agent.webhook_port;

    let (code, body) = post(port, REVIEW.as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"uid\":\"u-1\"") && body.contains("\"allowed\":true"),
        "{body}"
    );

    for bad in ["{", "[]", "{\"request\":{}}", "not json"] {
        let (code, body) = post(port, bad.as_bytes()).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(
            body.contains("AdmissionReview"),
            "{bad}: the message says what is wrong: {body}"
        );
    }

    // a review over the size limit: 413, not buffered
    let mut big = Vec::from(&br#"{"request":{"uid":"big","object":{"pad":""#[..]);
    big.resize(MAX_BODY_BYTES + 1024, b'x');
    big.extend_from_slice(br#""}}}"#);
    let (code, body) = post(port, &big).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("length limit"), "{body}");

    // a body that never completes: 408 after the body deadline, the connection freed
    let mut s = tls(port, rustls::DEFAULT_VERSIONS).await.unwrap();
    s.write_all(
        format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{\"request\"").as_bytes(),
    )
    .await
    .unwrap();
    let out = closed_within(&mut s, Duration::from_secs(30))
        .await
        .expect("answered");
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    assert!(agent.metric("lazyscale_webhook_requests_total{path=\"Malformed\"}") >= 6.0);
    assert!(agent.metric("lazyscale_webhook_requests_total{path=\"Fast\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_clients_are_cut_off_and_others_are_served_meanwhile() {
    let env = TestEnv::shared();
    let agent = start_agent(env.server(), &[]);
    let port = agent.webhook_port;

    // 50 connections that never start TLS, 50 that stop in the middle of their headers
    let mut raw = Vec::new();
    for _ in 0..50 {
        raw.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let mut half = Vec::new();
    for _ in 0..50 {
        let mut s = tls(port, rustls::DEFAULT_VERSIONS).await.unwrap();
        s.write_all(format!("POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        s.flush().await.unwrap();
        half.push(s);
    }
    // one TLS connection that sends nothing at all
    let mut idle = tls(port, rustls::DEFAULT_VERSIONS).await.unwrap();

    // meanwhile a well-behaved client is answered
    let (code, body) = post(port, REVIEW.as_bytes()).await;
    assert_eq!(code, 200, "{body}");

    // the server closes every stalled connection (the deadlines, plus margin for a loaded machine)
    let margin = Duration::from_secs(20);
    for s in &mut raw {
        closed_within(s, HANDSHAKE_TIMEOUT + margin)
            .await
            .expect("a connection without a TLS handshake is closed");
    }
    for s in &mut half {
        closed_within(s, HEADER_READ_TIMEOUT + margin)
            .await
            .expect("a connection with unfinished headers is closed");
    }
    closed_within(&mut idle, FIRST_REQUEST_TIMEOUT + margin)
        .await
        .expect("a connection without a request is closed");
    let (code, _) = post(port, REVIEW.as_bytes()).await;
    assert_eq!(code, 200);
}

/// A ClientHello offering `version` without a `supported_versions` extension (how TLS 1.0 and 1.1 clients
/// and TLS 1.2 clients without 1.3 support say which version they speak), with suites, groups and
/// signature schemes the server supports, so that the version alone decides.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut hello = version.to_vec();
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    // ECDHE-ECDSA/RSA-AES128-GCM-SHA256, and two CBC suites of TLS 1.0
    hello.extend_from_slice(&[0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups: x25519, P-256
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, // signature_algorithms
    ];
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The first bytes the server sends back to a raw ClientHello.
async fn answer_to(port: u16, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut buf = vec![0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let env = TestEnv::shared();
    let agent = start_agent(env.server(), &[]);
    let port = agent.webhook_port;
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let s = tls(port, &[v]).await.unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(s.get_ref().1.protocol_version(), Some(v.version));
    }
    // the same raw hello: as TLS 1.2 it gets a ServerHello (a handshake record, message type 2) ...
    let tls12 = answer_to(port, &client_hello([0x03, 0x03])).await;
    assert_eq!(
        (tls12.first(), tls12.get(5)),
        (Some(&0x16), Some(&0x02)),
        "ServerHello: {tls12:02x?}"
    );
    // ... as TLS 1.0 or 1.1 a fatal alert (rustls answers handshake_failure, 40), never a ServerHello
    for old in [[0x03, 0x01], [0x03, 0x02]] {
        let out = answer_to(port, &client_hello(old)).await;
        assert_eq!(
            out.first(),
            Some(&0x15),
            "an alert record for {old:02x?}: {out:02x?}"
        );
        assert_eq!(out.get(5), Some(&2), "a fatal alert for {old:02x?}: {out:02x?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_admin_client_never_blocks_the_agent() {
    let env = TestEnv::shared();
    let agent = start_agent(env.server(), &[]);
    let admin = agent.admin_port;
    // stalled admin clients: half a request line, and a /metrics reader that never reads
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(("127.0.0.1", admin)).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        stalled.push(s);
    }
    let mut unread = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", admin)).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50).as_slice())
            .await
            .unwrap();
        unread.push(s);
    }
    // the agent keeps answering on both ports
    let (code, _) =
        tokio::task::spawn_blocking(move || lazyscale_testenv::agent::http_get(admin, "/livez").unwrap())
            .await
            .unwrap();
    assert_eq!(code, 200);
    let (code, _) = post(agent.webhook_port, REVIEW.as_bytes()).await;
    assert_eq!(code, 200);
    let metrics = agent.metrics().unwrap();
    assert!(metrics.contains_key("lazyscale_gate_open"));
    // and closes the stalled admin connections itself
    for s in &mut stalled {
        closed_within(s, lazyscale::admin::HEADER_READ_TIMEOUT + Duration::from_secs(20))
            .await
            .expect("a stalled admin connection is closed");
    }
    drop(unread);
}
