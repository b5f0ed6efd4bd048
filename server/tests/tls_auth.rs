//! TLS, mutual TLS and bearer tokens against a real server, with certificates made at
//! test time: TLS clients are served and plaintext ones are not; with a client CA,
//! only clients holding a certificate it signed get through; tokens guard every RPC
//! but health checks, and admin RPCs need an admin token. The CLI speaks all of it.

mod common;

use common::Server;
use marquee_client::proto::{
    CreateCollectionRequest, DeleteCollectionRequest, LoadModelRequest, Metric, UnloadModelRequest,
};
use marquee_client::{Client, ConnectOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

/// A CA with a server certificate (localhost, 127.0.0.1) and a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: String) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

impl Pki {
    /// Writes a fresh PKI named `name` into `dir`.
    fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = vec![usage];
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "marquee test server",
        );
        let (client_cert, client_key) = leaf(
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
            "marquee test client",
        );
        Pki {
            ca: write(dir, &format!("{name}-ca.pem"), ca_pem),
            server_cert: write(dir, &format!("{name}-server.pem"), server_cert),
            server_key: write(dir, &format!("{name}-server.key"), server_key),
            client_cert: write(dir, &format!("{name}-client.pem"), client_cert),
            client_key: write(dir, &format!("{name}-client.key"), client_key),
        }
    }
}

fn tls_server(pki: &Pki, mutual: bool, extra_env: &[(&str, &str)]) -> Server {
    let cert = pki.server_cert.display().to_string();
    let key = pki.server_key.display().to_string();
    let ca = pki.ca.display().to_string();
    let mut env = vec![
        ("MARQUEE_TLS__CERT", cert.as_str()),
        ("MARQUEE_TLS__KEY", key.as_str()),
    ];
    if mutual {
        env.push(("MARQUEE_TLS__CLIENT_CA", ca.as_str()));
    }
    env.extend_from_slice(extra_env);
    Server::minilm_with_env(&[], &env)
}

fn https(server: &Server) -> String {
    format!("https://{}", server.addr)
}

/// Embeds one text over a connection made with `options`; the error of the connection
/// or of the call.
async fn try_embed(options: &ConnectOptions) -> Result<(), String> {
    let mut client = Client::connect_with(options)
        .await
        .map_err(|e| format!("{e:#}"))?;
    client
        .embed_texts("minilm", &["over tls"])
        .await
        .map(|v| assert_eq!(v[0].len(), 384))
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_serves_tls_clients_and_refuses_plaintext_and_unknown_cas() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "good");
    let other = Pki::new(dir.path(), "other");
    let server = tls_server(&pki, false, &[]);
    let tls = ConnectOptions {
        tls_ca: Some(pki.ca.clone()),
        ..ConnectOptions::new(https(&server))
    };
    try_embed(&tls).await.unwrap();
    assert!(try_embed(&ConnectOptions::new(server.url.clone()))
        .await
        .is_err());
    let wrong_ca = ConnectOptions {
        tls_ca: Some(other.ca.clone()),
        ..ConnectOptions::new(https(&server))
    };
    assert!(try_embed(&wrong_ca).await.is_err());
    // The server still serves after the failed handshakes.
    try_embed(&tls).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_requires_a_client_certificate_signed_by_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "good");
    let rogue = Pki::new(dir.path(), "rogue");
    let server = tls_server(&pki, true, &[]);
    let with_cert = |p: &Pki| ConnectOptions {
        tls_ca: Some(pki.ca.clone()),
        tls_cert: Some(p.client_cert.clone()),
        tls_key: Some(p.client_key.clone()),
        ..ConnectOptions::new(https(&server))
    };
    try_embed(&with_cert(&pki)).await.unwrap();
    let no_cert = ConnectOptions {
        tls_ca: Some(pki.ca.clone()),
        ..ConnectOptions::new(https(&server))
    };
    // The handshake fails. With TLS 1.3 the client may finish its side of the handshake
    // before the server has checked its certificate: it then sees the server's alert
    // when connecting, or the connection closed under its first call.
    for refused in [no_cert, with_cert(&rogue)] {
        let error = try_embed(&refused).await.unwrap_err();
        assert!(
            error.contains("transport error") || error.contains("connection closed"),
            "{error}"
        );
    }
    try_embed(&with_cert(&pki)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_guard_every_rpc_but_probes_and_admin_rpcs_need_admin_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let admin_file = dir.path().join("admin-tokens");
    std::fs::write(&admin_file, "# operators\nadmin-secret\n").unwrap();
    let server = Server::minilm_with_env(
        &[],
        &[
            ("MARQUEE_AUTH__TOKENS", "user-one,user-two"),
            (
                "MARQUEE_AUTH__ADMIN_TOKENS_FILE",
                admin_file.to_str().unwrap(),
            ),
        ],
    );
    assert!(server.wait_for_log("authentication on"));
    let connect = |token: Option<&str>| {
        let options = ConnectOptions {
            token: token.map(str::to_string),
            ..ConnectOptions::new(server.url.clone())
        };
        async move { Client::connect_with(&options).await.unwrap() }
    };

    for token in [None, Some("user-three")] {
        let status = connect(token)
            .await
            .embed_texts("minilm", &["hi"])
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // Probes need no token.
    server
        .health()
        .await
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    let mut user = connect(Some("user-two")).await;
    user.embed_texts("minilm", &["hi"]).await.unwrap();
    user.retrieval
        .create_collection(CreateCollectionRequest {
            name: "c".into(),
            dimension: 4,
            metric: Metric::Cosine as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let load = LoadModelRequest {
        name: "m2".into(),
        path: "/no/such/model".into(),
        ..Default::default()
    };
    let unload = UnloadModelRequest {
        name: "nope".into(),
    };
    let delete = DeleteCollectionRequest { name: "c".into() };
    let denied = [
        user.models.load_model(load.clone()).await.unwrap_err(),
        user.models.unload_model(unload.clone()).await.unwrap_err(),
        user.retrieval
            .delete_collection(delete.clone())
            .await
            .unwrap_err(),
    ];
    for status in denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("needs an admin token"));
    }

    // Admin tokens pass to the RPC itself.
    let mut admin = connect(Some("admin-secret")).await;
    let status = admin.models.load_model(load).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = admin.models.unload_model(unload).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    admin.retrieval.delete_collection(delete).await.unwrap();
    admin.embed_texts("minilm", &["hi"]).await.unwrap();

    assert_eq!(
        server.metric(r#"marquee_requests_total{rpc="Embed",code="Unauthenticated"}"#),
        2.0
    );
    assert_eq!(
        server.metric(r#"marquee_requests_total{rpc="LoadModel",code="PermissionDenied"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_speaks_mutual_tls_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "good");
    let server = tls_server(&pki, true, &[("MARQUEE_AUTH__TOKENS", "cli-token")]);
    let cli = common::plugin_dir().join("marquee");
    let run = |token: Option<&str>| {
        let mut command = Command::new(&cli);
        command
            .args(["--addr", &https(&server), "--tls-ca"])
            .arg(&pki.ca)
            .arg("--tls-cert")
            .arg(&pki.client_cert)
            .arg("--tls-key")
            .arg(&pki.client_key)
            .args(["--json", "embed", "--model", "minilm", "hello"])
            .env_remove("MARQUEE_TOKEN");
        if let Some(t) = token {
            command.env("MARQUEE_TOKEN", t);
        }
        command.output().expect("running the marquee CLI")
    };
    let ok = run(Some("cli-token"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let vectors: Vec<Vec<f32>> = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(vectors[0].len(), 384);
    let refused = run(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
}
