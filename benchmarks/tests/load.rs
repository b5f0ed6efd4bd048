//! `marquee-bench load` against a real `marquee-server`: a short closed-loop sweep with
//! Embed, Search and Recommend, then an open-loop Poisson step, checking the reports.
//!
//! Needs the release server and plugin built beside `marquee-bench`
//! (`cargo build --release -p marquee-server -p marquee-bert-text`) and the model
//! (`scripts/fetch-model.sh`).

use marquee_client::proto::{
    item, CreateCollectionRequest, Item, Metric, Rating, RecordRatingsRequest, UpsertRequest,
};
use marquee_client::Client;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The directory holding `marquee-bench`, where the server and plugin are built too.
fn build_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_marquee-bench"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("MARQUEE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

/// A `marquee-server` on free ports serving all-MiniLM-L6-v2 as `minilm`; killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let dir = build_dir();
        let server = dir.join("marquee-server");
        let plugin = dir.join(format!(
            "{}marquee_bert_text{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        for file in [&server, &plugin] {
            assert!(
                file.is_file(),
                "{} is missing: cargo build --release -p marquee-server -p marquee-bert-text",
                file.display()
            );
        }
        let log = data_dir.join("server.log");
        let mut child = Command::new(server)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--plugin-dir")
            .arg(&dir)
            .arg("--model")
            .arg(format!("minilm={}", model_dir().display()))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting marquee-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(grpc) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
        else {
            let _ = child.kill();
            panic!(
                "server did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            url: format!("http://{grpc}"),
            child,
            log,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FILMS: [(&str, &str); 6] = [
    (
        "tt1",
        "Heat (1995). A crew of thieves and the detective chasing them in Los Angeles.",
    ),
    (
        "tt2",
        "Alien (1979). A space freighter crew meets a deadly creature.",
    ),
    (
        "tt3",
        "Up (2009). An old man flies his house to South America with balloons.",
    ),
    (
        "tt4",
        "Memento (2000). A man with no short-term memory hunts his wife's killer.",
    ),
    ("tt5", "Jaws (1975). A shark terrorises a seaside town."),
    (
        "tt6",
        "Amélie (2001). A shy waitress in Paris secretly improves other lives.",
    ),
];

/// A collection `films` of six texts with two users' ratings.
async fn fill(url: &str) {
    let mut client = Client::connect(url).await.unwrap();
    client
        .retrieval
        .create_collection(CreateCollectionRequest {
            name: "films".into(),
            dimension: 384,
            metric: Metric::Cosine as i32,
            model: "minilm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let items = FILMS
        .iter()
        .map(|(id, text)| Item {
            id: id.to_string(),
            content: Some(item::Content::Text(text.to_string())),
            payload: Default::default(),
        })
        .collect();
    client
        .retrieval
        .upsert(futures::stream::iter([UpsertRequest {
            collection: "films".into(),
            items,
        }]))
        .await
        .unwrap();
    let rating = |item: &str, rating: f32| Rating {
        item_id: item.into(),
        rating,
        timestamp: 1,
    };
    let ratings = [
        ("u1", vec![rating("tt1", 5.0), rating("tt2", 4.0)]),
        (
            "u2",
            vec![rating("tt3", 4.5), rating("tt6", 5.0), rating("tt5", 2.0)],
        ),
    ];
    client
        .retrieval
        .record_ratings(futures::stream::iter(ratings.map(|(user, ratings)| {
            RecordRatingsRequest {
                collection: "films".into(),
                user_id: user.into(),
                ratings,
            }
        })))
        .await
        .unwrap();
}

fn bench(server: &Server, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_marquee-bench"))
        .args(["--addr", &server.url, "load"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "marquee-bench load failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// Every RPC of `step` answered without errors, with ordered, positive latencies.
fn check_rpc(step: &Value, rpc: &str) -> Value {
    let r = step["rpcs"][rpc].clone();
    assert!(
        f(&r["ok"]) > 0.0,
        "{rpc} at {}: no requests: {r}",
        step["name"]
    );
    assert_eq!(r["requests"], r["ok"], "{rpc}: {r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{rpc}: {r}");
    assert!(f(&r["throughput_rps"]) > 0.0);
    let l = &r["latency_ms"];
    let ordered = ["p50", "p90", "p95", "p99", "max"].map(|p| f(&l[p]));
    assert!(ordered[0] > 0.0, "{rpc}: {l}");
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "{rpc}: {l}");
    r
}

#[test]
fn load_sweeps_a_real_server_and_reports_sane_figures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fill(&server.url));
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, FILMS.map(|(_, t)| t).join("\n")).unwrap();
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(
        &queries,
        "{\"query_id\":\"1\",\"query\":\"movie about a shark\",\"relevant\":[\"tt5\"]}\n\
         {\"query_id\":\"2\",\"query\":\"a man who cannot remember\",\"relevant\":[\"tt4\"]}\n",
    )
    .unwrap();
    let users = dir.path().join("ratings.csv");
    std::fs::write(
        &users,
        "user_id,imdb_id,rating,timestamp\nu1,tt1,5,1\nu2,tt3,4.5,1\n",
    )
    .unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();

    bench(
        &server,
        &[
            "--rpc-mix",
            "embed=2,search=1,recommend=1",
            "--texts",
            &texts.display().to_string(),
            "--queries",
            &queries.display().to_string(),
            "--collection",
            "films",
            "--users",
            &users.display().to_string(),
            "--k",
            "3",
            "--concurrency",
            "1,4",
            "--warmup",
            "0.2",
            "--duration",
            "1",
            "--json",
            &out("closed.json"),
            "--csv",
            &out("closed.csv"),
            "--plot",
            &out("closed.svg"),
        ],
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out("closed.json")).unwrap()).unwrap();
    assert_eq!(report["config"]["rpc_mix"], "embed=2,search=1,recommend=1");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(
        (steps[0]["name"].as_str(), steps[1]["name"].as_str()),
        (Some("c=1"), Some("c=4"))
    );
    for step in steps {
        assert_eq!(step["mode"], "closed");
        let embed = check_rpc(step, "embed");
        // One text per request by default; MiniLM adds at least [CLS] and [SEP].
        assert!((f(&embed["inputs_per_s"]) - f(&embed["throughput_rps"])).abs() < 1e-9);
        assert!(f(&embed["tokens_per_s"]) > 2.0 * f(&embed["inputs_per_s"]));
        let server_us = &embed["server_us"];
        assert!(f(&server_us["total"]["mean"]) >= f(&server_us["inference"]["mean"]));
        assert!(f(&server_us["inference"]["p50"]) > 0.0);
        for stage in [
            "queue",
            "tokenize",
            "overhead_total_minus_queue_tokenize_inference",
            "overhead_total_minus_queue_inference",
            "client_minus_server_total",
        ] {
            assert!(f(&server_us[stage]["p99"]) >= 0.0, "{stage}");
        }
        for rpc in ["search", "recommend"] {
            assert!(check_rpc(step, rpc).get("server_us").is_none());
        }
    }
    let csv = std::fs::read_to_string(out("closed.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3, "{csv}");
    let svg = std::fs::read_to_string(out("closed.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("· recommend p99"));

    bench(
        &server,
        &[
            "--rpc-mix",
            "search=1",
            "--queries",
            &queries.display().to_string(),
            "--query-vectors",
            "--collection",
            "films",
            "--rate",
            "40",
            "--poisson",
            "--warmup",
            "0.1",
            "--duration",
            "1",
            "--json",
            &out("open.json"),
        ],
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out("open.json")).unwrap()).unwrap();
    let step = &report["steps"][0];
    assert_eq!(step["mode"], "open");
    assert_eq!(step["rate"], 40.0);
    assert_eq!(step["poisson"], true);
    assert_eq!(step["dropped"], 0);
    check_rpc(step, "search");
    assert_eq!(step["rpcs"].as_object().unwrap().len(), 1);
}
