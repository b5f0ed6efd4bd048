//! In-process search benchmark over the files `benchmarks/search_bench.py` writes:
//! `meta.json` ({n, queries, dim}), `corpus.f32` and `queries.f32` (row-major
//! little-endian f32) and `gt.i32` (exact top-k ids per query).
//!
//! Exact search runs through a real collection (write-ahead log, then the same
//! `search_batch` the Search RPC uses). HNSW is measured on the index itself, as
//! hnswlib is, across a range of `ef`.

use anyhow::{ensure, Context, Result};
use marquee_kernels::{DeviceRequest, HalfCopy, Precision};
use marquee_proto::v1::{CreateCollectionRequest, Metric, StoredItem};
use marquee_server::retrieval::collection::{Collection, Config, Query};
use marquee_server::retrieval::gpu::Placement;
use marquee_server::retrieval::graph::{Graph, HnswParams};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `marquee-bench search`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory holding meta.json, corpus.f32, queries.f32 and gt.i32.
    #[arg(long)]
    dir: PathBuf,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// `exact` or `hnsw`.
    #[arg(long, default_value = "exact")]
    index: String,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW build candidate list.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// HNSW search candidate lists to sweep, comma-separated.
    #[arg(long, default_value = "10,16,32,64,128,256", value_delimiter = ',')]
    ef_search: Vec<usize>,
    /// Queries searched one at a time for the single-query figure.
    #[arg(long, default_value_t = 200)]
    single: usize,
    /// Keep the f16 copy the server keeps by default (`retrieval.f16_shortlist`): exact
    /// searches scan it, HNSW walks read it; `false` reads the f32 rows only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    f16_shortlist: bool,
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn read_i32(path: &Path) -> Result<Vec<i32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

struct Data {
    dim: usize,
    corpus: Vec<f32>,
    queries: Vec<f32>,
    truth: Vec<i32>,
}

impl Data {
    fn load(dir: &Path) -> Result<Self> {
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
        let dim = meta["dim"].as_u64().context("meta.json: dim")? as usize;
        let data = Self {
            dim,
            corpus: read_f32(&dir.join("corpus.f32"))?,
            queries: read_f32(&dir.join("queries.f32"))?,
            truth: read_i32(&dir.join("gt.i32"))?,
        };
        ensure!(
            data.corpus.len().is_multiple_of(dim) && data.queries.len().is_multiple_of(dim),
            "sizes do not match dim"
        );
        Ok(data)
    }

    fn n(&self) -> usize {
        self.corpus.len() / self.dim
    }

    fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }

    fn query_count(&self) -> usize {
        self.queries.len() / self.dim
    }

    /// Recall@k of `found[q]` (row ids) against the ground truth.
    fn recall(&self, found: &[Vec<usize>], k: usize) -> f64 {
        let per_query = self.truth.len() / self.query_count();
        let hits: usize = found
            .iter()
            .enumerate()
            .map(|(q, rows)| {
                let truth = &self.truth[q * per_query..q * per_query + k.min(per_query)];
                rows.iter()
                    .filter(|r| truth.contains(&(**r as i32)))
                    .count()
            })
            .sum();
        hits as f64 / (found.len() * k.min(per_query)) as f64
    }
}

fn exact(data: &Data, args: &Args) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let config = Config::from_request(&CreateCollectionRequest {
        name: "bench".into(),
        dimension: data.dim as u32,
        metric: Metric::InnerProduct as i32,
        ..Default::default()
    })?;
    let cpu = Placement {
        default: DeviceRequest::Cpu,
        precision: Precision::F32,
        f16_shortlist: args.f16_shortlist,
    };
    let collection = Collection::create(&dir.path().join("bench"), config, &cpu)?;
    let start = Instant::now();
    for chunk in (0..data.n()).collect::<Vec<_>>().chunks(10_000) {
        let items = chunk
            .iter()
            .map(|&i| StoredItem {
                id: format!("{i:08}"),
                vector: data.corpus[i * data.dim..(i + 1) * data.dim].to_vec(),
                payload: Default::default(),
                text: String::new(),
            })
            .collect();
        collection.upsert(items)?;
    }
    let build_s = start.elapsed().as_secs_f64();
    let query = |i: usize| Query {
        vector: data.query(i),
        k: args.k,
        filter: None,
        exclude: &[],
        only: None,
        with_payload: false,
    };
    let search = |queries: &[Query]| -> Result<Vec<Vec<usize>>> {
        let results = collection.search_batch(queries)?;
        Ok(results
            .into_iter()
            .map(|hits| {
                hits.iter()
                    .map(|h| h.id.parse().expect("numeric id"))
                    .collect()
            })
            .collect())
    };
    let single = args.single.min(data.query_count());
    search(&[query(0)])?; // warm-up
    let start = Instant::now();
    let mut found = Vec::new();
    for i in 0..single {
        found.extend(search(&[query(i)])?);
    }
    let single_qps = single as f64 / start.elapsed().as_secs_f64();
    let all: Vec<Query> = (0..data.query_count()).map(query).collect();
    let mut batch_qps = 0f64;
    let mut batch_found = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        batch_found = search(&all)?;
        batch_qps = batch_qps.max(all.len() as f64 / start.elapsed().as_secs_f64());
    }
    Ok(json!({
        "build_s": build_s,
        "single_qps": single_qps,
        "batch_qps": batch_qps,
        "batch_size": all.len(),
        "recall_at_k_single": data.recall(&found, args.k),
        "recall_at_k_batch": data.recall(&batch_found, args.k),
    }))
}

fn hnsw(data: &Data, args: &Args) -> Result<Value> {
    let params = HnswParams {
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: args.ef_search.first().copied().unwrap_or(64),
    };
    let rows: Vec<(usize, &[f32])> = (0..data.n())
        .map(|i| (i, &data.corpus[i * data.dim..(i + 1) * data.dim]))
        .collect();
    let start = Instant::now();
    let graph = Graph::build(params, Metric::InnerProduct, &rows, data.n());
    let build_s = start.elapsed().as_secs_f64();
    // As a collection searches: the walk on the f16 rows unless --f16-shortlist false.
    let half = if args.f16_shortlist {
        let mut copy = HalfCopy::new(data.dim);
        ensure!(copy.try_extend(&data.corpus), "vectors beyond f16's range");
        Some(copy)
    } else {
        None
    };
    let search = |q: usize, ef: usize| -> Vec<usize> {
        graph
            .search_with_ef(data.query(q), &data.corpus, half.as_ref(), args.k, ef, None)
            .into_iter()
            .map(|(row, _)| row)
            .collect()
    };
    // Warm-up: the first search freezes the graph's searchable copy.
    search(0, args.k);
    let mut curve = Vec::new();
    for &ef in &args.ef_search {
        let start = Instant::now();
        let found: Vec<Vec<usize>> = (0..data.query_count()).map(|q| search(q, ef)).collect();
        let qps = data.query_count() as f64 / start.elapsed().as_secs_f64();
        curve.push(
            json!({"ef": ef, "single_qps": qps, "recall_at_10": data.recall(&found, args.k)}),
        );
    }
    Ok(
        json!({"build_s": build_s, "m": args.m, "ef_construction": args.ef_construction, "curve": curve}),
    )
}

/// Runs the benchmark the arguments ask for.
pub fn run(args: &Args) -> Result<Value> {
    let data = Data::load(&args.dir)?;
    Ok(match args.index.as_str() {
        "exact" => json!({ "exact": exact(&data, args)? }),
        "hnsw" => json!({ "hnsw": hnsw(&data, args)? }),
        other => anyhow::bail!("--index must be exact or hnsw, not {other}"),
    })
}
