//! Start-up: load plugins and models, bind the gRPC and metrics ports, serve until
//! shutdown.

use crate::config::Settings;
use crate::registry::Registry;
use crate::retrieval::gpu::Placement;
use crate::retrieval::store::Store;
use crate::services::evaluation::EvaluationApi;
use crate::services::retrieval::RetrievalApi;
use crate::services::{embedding::EmbeddingApi, models::ModelApi};
use crate::tokenize::TokenizerPool;
use anyhow::{Context, Result};
use marquee_kernels::{DeviceRequest, ResolvedDevice};
use marquee_proto::v1::embedding_service_server::EmbeddingServiceServer;
use marquee_proto::v1::evaluation_service_server::EvaluationServiceServer;
use marquee_proto::v1::model_service_server::ModelServiceServer;
use marquee_proto::v1::retrieval_service_server::RetrievalServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

/// Loads the configured plugins and models; failures are logged and skipped so the
/// server keeps serving what did load.
pub async fn load_configured(settings: &Settings, registry: &Arc<Registry>) {
    for stem in &settings.plugins {
        if let Err(e) = registry.load_plugin(stem) {
            tracing::error!(plugin = stem, error = e.message(), "plugin not loaded");
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
        let loaded = tokio::task::spawn_blocking(move || {
            registry.load_model(&model_name, &plugin, &path, &options, batching)
        })
        .await;
        match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(model = name, error = e.message(), "model not loaded"),
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

/// Runs the server until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = crate::metrics::install()?;
    let plugin_dir = settings.plugin_dir()?;
    let registry = Arc::new(Registry::new(plugin_dir, settings.default_model.clone()));
    load_configured(&settings, &registry).await;
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
    let (grpc_addr, metrics_addr) = (grpc.local_addr()?, metrics_listener.local_addr()?);
    tokio::spawn(serve_metrics(metrics_listener, metrics));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EmbeddingServiceServer<EmbeddingApi>>()
        .await;
    health_reporter
        .set_serving::<ModelServiceServer<ModelApi>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(marquee_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let max_bytes = settings.limits.max_message_bytes;
    let embedding_api =
        EmbeddingApi::new(Arc::clone(&registry), tokenizer, settings.limits.clone());
    let retrieval_api = RetrievalApi::new(
        store,
        embedding_api.clone(),
        settings.retrieval.max_k,
        settings.limits.max_inputs_per_request,
    );
    let evaluation = EvaluationServiceServer::new(EvaluationApi::new(retrieval_api.clone()))
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let retrieval = RetrievalServiceServer::new(retrieval_api)
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let embedding = EmbeddingServiceServer::new(embedding_api)
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let models = ModelServiceServer::new(ModelApi::new(
        Arc::clone(&registry),
        settings.batching.clone(),
    ))
    .max_decoding_message_size(max_bytes)
    .max_encoding_message_size(max_bytes);

    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, models = registry.models().len(), "serving");
    // One machine-readable line on stdout for scripts and tests.
    println!("marquee-server listening grpc={grpc_addr} metrics={metrics_addr}");
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            crate::status::oversize_as_resource_exhausted,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(embedding)
        .add_service(models)
        .add_service(retrieval)
        .add_service(evaluation)
        .serve_with_incoming_shutdown(incoming_no_delay(grpc), shutdown)
        .await
        .context("gRPC server failed")?;
    tracing::info!("server stopped");
    Ok(())
}
