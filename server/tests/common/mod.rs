//! Test harness: runs the real `marquee-server` binary on free local ports.
#![allow(dead_code)]

use marquee_client::proto::embedding_service_client::EmbeddingServiceClient;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::Client;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The directory holding the server binary and the plugins built beside it.
pub fn plugin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_marquee-server"))
        .parent()
        .unwrap()
        .to_path_buf();
    let plugin = dir.join(format!(
        "{}marquee_bert_text{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        plugin.is_file(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        plugin.display()
    );
    dir
}

/// The all-MiniLM-L6-v2 directory (fetched by scripts/fetch-model.sh).
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("MARQUEE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("data/models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
    /// gRPC address, e.g. `http://127.0.0.1:41225`.
    pub url: String,
    /// gRPC host and port, e.g. `127.0.0.1:41225`.
    pub addr: String,
    /// Metrics address, e.g. `127.0.0.1:42677`.
    pub metrics: String,
    /// HTTP API address, e.g. `127.0.0.1:42678`, when it is on.
    pub http: Option<String>,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with `args` after the port flags.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// Starts the server with extra arguments and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marquee-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .envs(env.iter().copied())
            .env("MARQUEE_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting marquee-server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        let (Some(grpc), Some(metrics)) = (field("grpc="), field("metrics=")) else {
            let _ = child.kill();
            std::thread::sleep(Duration::from_millis(200));
            panic!("server did not start: {line:?}\n{}", log.lock().unwrap());
        };
        Server {
            child,
            url: format!("http://{grpc}"),
            addr: grpc,
            metrics,
            http: field("http="),
            log,
        }
    }

    /// Starts a server serving all-MiniLM-L6-v2 as `minilm` with extra arguments and
    /// environment variables.
    pub fn minilm_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let model = format!("minilm={}", minilm_dir().display());
        let plugins = plugin_dir().display().to_string();
        let mut args = vec!["--plugin-dir", &plugins, "--model", &model];
        args.extend_from_slice(extra);
        Server::start_with_env(&args, env)
    }

    /// Starts a server serving all-MiniLM-L6-v2 as `minilm` with `extra` arguments.
    pub fn minilm(extra: &[&str]) -> Server {
        Self::minilm_with_env(extra, &[])
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url).await.expect("connecting")
    }

    /// A health-checking client.
    pub async fn health(
        &self,
    ) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connecting");
        tonic_health::pb::health_client::HealthClient::new(channel)
    }

    /// Waits until the server log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Body of `GET /metrics`.
    pub fn scrape_metrics(&self) -> String {
        let mut stream = TcpStream::connect(&self.metrics).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// The value of one series in `/metrics`, e.g.
    /// `marquee_queue_depth{model="minilm"}`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.scrape_metrics(), series)
    }

    /// A server with no model, on the data directory `data` (storage tests), with extra
    /// environment variables.
    pub fn storage_with_env(data: &Path, env: &[(&str, &str)]) -> Server {
        let plugins = plugin_dir().display().to_string();
        let args = [
            "--data-dir",
            data.to_str().unwrap(),
            "--plugin-dir",
            &plugins,
        ];
        Self::start_with_env(&args, env)
    }

    /// A server with no model, on the data directory `data`.
    pub fn storage(data: &Path) -> Server {
        Self::storage_with_env(data, &[])
    }

    /// A RetrievalService client on this server.
    pub async fn retrieval(&self) -> RetrievalServiceClient<tonic::transport::Channel> {
        RetrievalServiceClient::connect(self.url.clone())
            .await
            .expect("connecting")
    }

    /// Runs the `marquee` CLI against this server; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let cli = plugin_dir().join("marquee");
        let out = Command::new(&cli)
            .arg("--addr")
            .arg(&self.url)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", cli.display()));
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// A field of the process's `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, ...).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal (`TERM`, `INT`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// An embedding client whose transport does not enforce `grpc-timeout` itself
    /// (tonic's `Channel` gives up at the deadline and reports `CANCELLED` locally), so
    /// that the server's own answer to a deadline comes through.
    pub fn deadline_client(&self) -> EmbeddingServiceClient<RawTransport> {
        let transport =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        EmbeddingServiceClient::with_origin(transport, self.url.parse().unwrap())
    }
}

/// A plain HTTP/2 client as a gRPC transport (see [`Server::deadline_client`]).
pub type RawTransport = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

/// The value of one series in a `/metrics` body; 0 when absent.
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Polls `condition` every 10 ms for up to 60 s; false if it never held.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Largest absolute component difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
