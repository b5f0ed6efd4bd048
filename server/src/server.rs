//! Start-up: load plugins and models, bind the gRPC, HTTP and metrics ports, serve
//! until a signal, then drain (see [`crate::shutdown`]).
//!
//! Every call passes, outermost first: authentication ([`crate::auth`]), server-wide
//! admission ([`crate::admission`]), the deadline ([`crate::services::deadline`]), and
//! the rewrite of tonic's oversize status ([`crate::services::status`]).

use crate::admission::AdmissionLayer;
use crate::auth::{AuthLayer, Tokens};
use crate::config::Settings;
use crate::engine::embedder::Embedder;
use crate::engine::generation::Generation;
use crate::engine::registry::Registry;
use crate::engine::tokenizer_pool::TokenizerPool;
use crate::health::HealthApi;
use crate::http::HttpApi;
use crate::memory::RequestMemory;
use crate::retrieval::gpu::Placement;
use crate::retrieval::store::Store;
use crate::services::deadline::DeadlineLayer;
use crate::services::evaluation::EvaluationApi;
use crate::services::generation::GenerationApi;
use crate::services::retrieval::RetrievalApi;
use crate::services::status::oversize_as_resource_exhausted;
use crate::services::training::TrainingApi;
use crate::services::{embedding::EmbeddingApi, models::ModelApi};
use crate::shutdown::{Shutdown, Signals};
use anyhow::{Context, Result};
use marquee_kernels::{DeviceRequest, ResolvedDevice};
use marquee_proto::v1::embedding_service_server::EmbeddingServiceServer;
use marquee_proto::v1::evaluation_service_server::EvaluationServiceServer;
use marquee_proto::v1::generation_service_server::GenerationServiceServer;
use marquee_proto::v1::model_service_server::ModelServiceServer;
use marquee_proto::v1::retrieval_service_server::RetrievalServiceServer;
use marquee_proto::v1::training_service_server::TrainingServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::server::NamedService;

/// Loads the configured plugins and models, then serves the configured pipelines;
/// failures are logged and skipped so the
/// server keeps serving what did load.
pub async fn load_configured(settings: &Settings, registry: &Arc<Registry>) {
    for stem in &settings.plugins {
        if let Err(e) = registry.load_plugin(stem) {
            tracing::error!(plugin = stem, error = %e, "plugin not loaded");
        }
    }
    for (name, model) in &settings.models {
        let registry = Arc::clone(registry);
        let path = settings.model_path(&model.path);
        let (model_name, plugin) = (name.clone(), model.plugin.clone());
        let mut options = model.options.clone();
        if let Some(device) = &model.device {
            options.insert("device".into(), resolve_model_device(name, device).into());
        }
        let options = serde_json::Value::Object(options).to_string();
        let batching = model
            .batching
            .clone()
            .unwrap_or_else(|| settings.batching.clone());
        let generation = model
            .generation
            .clone()
            .unwrap_or_else(|| settings.generation.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            registry.load_model(&model_name, &plugin, &path, &options, batching, generation)
        })
        .await;
        match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(model = name, error = %e, "model not loaded"),
            Err(e) => tracing::error!(model = name, error = %e, "model loader crashed"),
        }
    }
    for (name, pipeline) in &settings.pipelines {
        if let Err(e) = registry.add_pipeline(name, pipeline) {
            tracing::error!(pipeline = name, error = %e, "pipeline not served");
        }
    }
}

/// Serves the fine-tuned models of the data directory under their names (after
/// removing what interrupted jobs left); failures are logged and skipped.
pub async fn load_finetuned(settings: &Settings, registry: &Arc<Registry>) {
    let data_dir = settings.data_dir.clone();
    let found =
        tokio::task::spawn_blocking(move || crate::training::finetuned::recover(&data_dir)).await;
    let models = match found {
        Ok(Ok(models)) => models,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the fine-tuned models");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the fine-tuned models crashed");
            return;
        }
    };
    for (name, path) in models {
        let registry = Arc::clone(registry);
        let (batching, generation) = (settings.batching.clone(), settings.generation.clone());
        let model_name = name.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            registry.load_model(&model_name, "bert-text", &path, "", batching, generation)
        })
        .await;
        match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(model = name, error = %e, "fine-tuned model not loaded"),
            Err(e) => tracing::error!(model = name, error = %e, "model loader crashed"),
        }
    }
}

/// Resolves a model's configured device (validated at start) to `cpu` or `cuda:N`, with
/// the one log line saying which and why; an unusable `cuda:N` is passed on as asked, so
/// the model fails to load with the reason.
fn resolve_model_device(model: &str, device: &str) -> String {
    let request: DeviceRequest = device.parse().unwrap_or_default();
    match request.resolve() {
        Ok(ResolvedDevice::Cuda {
            ordinal,
            description,
        }) => {
            tracing::info!(model, device = %format!("cuda:{ordinal}"), gpu = description, "model device: GPU");
            format!("cuda:{ordinal}")
        }
        Ok(ResolvedDevice::Cpu { reason }) => {
            tracing::info!(model, device = "cpu", reason, "model device: CPU");
            "cpu".into()
        }
        Err(reason) => {
            tracing::error!(model, reason, "model device unusable");
            request.to_string()
        }
    }
}

async fn serve_metrics(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

/// Accepted connections with Nagle's algorithm off: without it a small response waits
/// for the client's delayed ACK (about 40 ms on Linux).
fn incoming_no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Runs the server until a signal from `signals`, then drains: in-flight calls are
/// answered for up to `shutdown_grace_secs` (a second signal ends the wait), the
/// collections are flushed, and it returns.
pub async fn run(settings: Settings, mut signals: Signals) -> Result<()> {
    let metrics = crate::metrics::install()?;
    let tokens = Arc::new(Tokens::load(&settings.auth)?);
    let tls = crate::tls::server_config(&settings.tls)?;
    let plugin_dir = settings.plugin_dir()?;
    let registry = Arc::new(Registry::new(plugin_dir, settings.default_model.clone()));
    load_configured(&settings, &registry).await;
    load_finetuned(&settings, &registry).await;
    let tokenizer = Arc::new(TokenizerPool::new(settings.tokenization.workers)?);
    let data_dir = settings.data_dir.clone();
    let placement = Placement::from_settings(&settings.retrieval)?;
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&data_dir, placement))
            .await?
            .context("opening the collections")?,
    );

    let grpc = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding gRPC address {}", settings.listen))?;
    let metrics_listener = TcpListener::bind(settings.metrics_listen)
        .await
        .with_context(|| format!("binding metrics address {}", settings.metrics_listen))?;
    let http = match settings.http_addr()? {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding HTTP address {addr}"))?,
        ),
        None => None,
    };
    let http_tls = crate::tls::http_config(&settings.tls)?;
    let (grpc_addr, metrics_addr) = (grpc.local_addr()?, metrics_listener.local_addr()?);
    let http_addr = http.as_ref().map(TcpListener::local_addr).transpose()?;
    tokio::spawn(serve_metrics(metrics_listener, metrics));

    let shutdown = Shutdown::new();
    let health = HealthApi::server(
        vec![
            EmbeddingServiceServer::<EmbeddingApi>::NAME,
            ModelServiceServer::<ModelApi>::NAME,
            RetrievalServiceServer::<RetrievalApi>::NAME,
            EvaluationServiceServer::<EvaluationApi>::NAME,
            GenerationServiceServer::<GenerationApi>::NAME,
            TrainingServiceServer::<TrainingApi>::NAME,
        ],
        shutdown.drain(),
    );
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(marquee_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let limits = &settings.limits;
    let max_bytes = limits.max_message_bytes;
    let embedder = Embedder::new(
        Arc::clone(&registry),
        tokenizer,
        Arc::clone(&store),
        limits.clone(),
    );
    let embedding_api = EmbeddingApi::new(embedder.clone(), limits.clone(), shutdown.drain());
    let retrieval_api = RetrievalApi::new(
        Arc::clone(&store),
        embedder.clone(),
        settings.retrieval.max_k,
        limits.max_inputs_per_request,
    );
    let generation_engine = Generation::new(Arc::clone(&registry), limits.clone());
    let evaluation = EvaluationServiceServer::new(EvaluationApi::new(
        retrieval_api.clone(),
        generation_engine.clone(),
        limits.max_eval_queries,
        limits.max_eval_bytes,
    ))
    .max_decoding_message_size(max_bytes)
    .max_encoding_message_size(max_bytes);
    let retrieval = RetrievalServiceServer::new(retrieval_api)
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let embedding = EmbeddingServiceServer::new(embedding_api)
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let admission = AdmissionLayer::new(limits.max_concurrent_requests);
    let request_memory = RequestMemory::new(limits.max_request_memory_bytes);
    let http_server = http.map(|listener| {
        let api = HttpApi::new(
            embedder,
            generation_engine.clone(),
            Arc::clone(&tokens),
            admission.clone(),
            request_memory.clone(),
            shutdown.drain(),
            limits.clone(),
        );
        let read_timeout = Duration::from_millis(limits.http_read_timeout_ms);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::http::listener::serve(
            listener,
            http_tls,
            api.router(),
            read_timeout,
            async {
                let _ = stopped.await;
            },
        ));
        (stop, task)
    });
    let generation = GenerationServiceServer::new(GenerationApi::new(generation_engine))
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let training = TrainingServiceServer::new(TrainingApi::new(
        Arc::clone(&registry),
        Arc::clone(&store),
        settings.data_dir.clone(),
        settings.training.clone(),
        settings.batching.clone(),
        settings.generation.clone(),
        limits.max_eval_queries,
        limits.max_eval_bytes,
    ))
    .max_decoding_message_size(max_bytes)
    .max_encoding_message_size(max_bytes);
    let models = ModelServiceServer::new(ModelApi::new(
        Arc::clone(&registry),
        settings.batching.clone(),
        settings.generation.clone(),
    ))
    .max_decoding_message_size(max_bytes)
    .max_encoding_message_size(max_bytes);

    let mut builder =
        tonic::transport::Server::builder().max_concurrent_streams(limits.max_concurrent_streams);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("invalid [tls] certificate or key")?;
    }
    let router = builder
        .layer(AuthLayer::new(Arc::clone(&tokens)))
        .layer(admission.clone())
        .layer(request_memory)
        .layer(DeadlineLayer)
        .layer(tower::util::MapResponseLayer::new(
            oversize_as_resource_exhausted,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(embedding)
        .add_service(models)
        .add_service(retrieval)
        .add_service(evaluation)
        .add_service(generation)
        .add_service(training);

    if !settings.ignored_env.is_empty() {
        tracing::info!(
            variables = settings.ignored_env.join(","),
            "ignoring MARQUEE_ environment variables that name no server setting"
        );
    }
    if tokens.enabled() {
        tracing::info!("authentication on: calls need a bearer token");
    } else {
        tracing::info!("authentication off: no [auth] tokens configured");
    }
    let http_field = http_addr.map_or(String::new(), |a| format!(" http={a}"));
    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, http = http_field.trim(),
        tls = settings.tls.enabled(), mutual_tls = !settings.tls.client_ca.as_os_str().is_empty(),
        models = registry.models().len(), "serving");
    // One machine-readable line on stdout for scripts and tests.
    println!("marquee-server listening grpc={grpc_addr} metrics={metrics_addr}{http_field}");

    let serving =
        router.serve_with_incoming_shutdown(incoming_no_delay(grpc), shutdown.drain().wait());
    tokio::pin!(serving);
    let signal = tokio::select! {
        result = &mut serving => {
            result.context("gRPC server failed")?;
            None
        }
        signal = signals.next() => Some(signal),
    };
    if let Some(signal) = signal {
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        tracing::info!(
            signal,
            in_flight = admission.in_progress(),
            grace_secs = grace.as_secs(),
            "shutdown requested: answering the calls in flight, taking no new ones"
        );
        shutdown.begin();
        // gRPC connections drain on their own; HTTP requests hold admission places
        // until their responses end.
        let drained = async {
            (&mut serving).await.context("gRPC server failed")?;
            while admission.in_progress() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            result = drained => result?,
            () = tokio::time::sleep(grace) => tracing::warn!(
                in_flight = admission.in_progress(),
                "shutdown grace period over: closing with calls unanswered"
            ),
            signal = signals.next() => tracing::warn!(
                signal,
                in_flight = admission.in_progress(),
                "second signal: closing with calls unanswered"
            ),
        }
    }
    if let Some((stop, task)) = http_server {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await?;
    flushed.context("flushing the collections at shutdown")?;
    tracing::info!("server stopped; collections flushed");
    Ok(())
}
