//! The `marquee` CLI's retrieval commands end to end, as scripts use them: ingest from
//! JSONL with a template and payload fields, ratings from CSV, search with filters,
//! recommend, and both evaluations with `--json`.

mod common;

use common::Server;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_search_recommend_and_evaluate_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::minilm(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let movies = dir.path().join("movies.jsonl");
    std::fs::write(
        &movies,
        [
            r#"{"imdb_id": "tt1", "title": "Heat", "year": 1995, "genres": ["Crime"], "overview": "Professional bank robbers are hunted by a Los Angeles detective."}"#,
            r#"{"imdb_id": "tt2", "title": "Finding Nemo", "year": 2003, "genres": ["Animation"], "plot": "A clownfish crosses the ocean to find his lost son."}"#,
            r#"{"imdb_id": "tt3", "title": "Alien", "year": 1979, "genres": ["Horror", "Sci-Fi"], "overview": "A spaceship crew is stalked by a deadly creature."}"#,
            r#"{"imdb_id": "tt4", "title": "Jaws", "year": 1975, "genres": ["Horror"], "overview": "A great white shark terrorises a beach town."}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (ok, _, err) = server.cli(&[
        "collections",
        "create",
        "films",
        "--dim",
        "384",
        "--model",
        "minilm",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = server.cli(&[
        "--json",
        "ingest",
        "films",
        movies.to_str().unwrap(),
        "--id-field",
        "imdb_id",
        "--template",
        "{title} ({year}). {overview|plot}",
        "--payload",
        "title,year,genres",
    ]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["items"], 4);

    let (ok, out, _) = server.cli(&[
        "--json",
        "search",
        "films",
        "a fish looking for his child",
        "--k",
        "1",
    ]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["id"], "tt2");
    let (ok, out, err) = server.cli(&[
        "--json",
        "search",
        "films",
        "a monster hunts people",
        "--k",
        "5",
        "--filter",
        "genres contains Horror",
        "--filter",
        "year>=1978",
        "--with-payload",
    ]);
    assert!(ok, "{err}");
    let hits: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert_eq!(hits[0]["id"], "tt3");
    assert_eq!(hits[0]["payload"]["title"], "Alien");
    let (ok, _, err) = server.cli(&["search", "films", "x", "--filter", "rating>=3"]);
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("unknown field"),
        "{err}"
    );

    let ratings = dir.path().join("ratings.csv");
    let mut csv = String::from("user_id,imdb_id,rating,timestamp\n");
    for (i, item) in ["tt1", "tt3", "tt4", "tt2", "tt1"].iter().enumerate() {
        csv.push_str(&format!(
            "u{},{item},{},{}\n",
            i % 2,
            if i == 3 { 2 } else { 5 },
            i
        ));
    }
    std::fs::write(&ratings, csv).unwrap();
    let (ok, out, err) = server.cli(&["ratings", "import", "films", ratings.to_str().unwrap()]);
    assert!(
        ok && out.contains("imported 5 ratings for 2 users"),
        "{out}{err}"
    );
    let (ok, out, err) = server.cli(&["--json", "recommend", "films", "--user", "u0", "--k", "3"]);
    assert!(ok, "{err}");
    let mut recommended: Vec<String> = serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    recommended.sort();
    assert_eq!(
        recommended,
        ["tt2", "tt3"],
        "u0 rated tt1 and tt4: only the unseen two come back"
    );

    let queries = dir.path().join("queries.jsonl");
    std::fs::write(&queries, "{\"query_id\": \"q1\", \"query\": \"shark movie at the beach\", \"relevant\": [\"tt4\"]}\n{\"query_id\": \"q2\", \"query\": \"bank robbery in LA\", \"relevant\": [\"tt1\"]}\n").unwrap();
    let (ok, out, err) = server.cli(&[
        "--json",
        "eval",
        "retrieval",
        "films",
        queries.to_str().unwrap(),
        "--k",
        "1,5,10,25",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["queries"], 2);
    assert_eq!(report["recall@1"], 1.0);
    assert_eq!(report["mrr"], 1.0);
    let (ok, _, err) = server.cli(&["--json", "eval", "recommend", "films", "--k", "5,10,20"]);
    assert!(
        !ok && err.contains("FailedPrecondition"),
        "nobody has 5 high ratings: {err}"
    );
}
