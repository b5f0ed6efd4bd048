//! `marquee`: command-line client for a Marquee server.

mod cli;
mod generate;

use anyhow::Result;
use clap::{Parser, Subcommand};
use marquee_client::proto::{
    GetModelRequest, ListModelsRequest, LoadModelRequest, ModelInfo, ModelKind, Truncation,
    UnloadModelRequest,
};
use marquee_client::{Client, ConnectOptions, DEFAULT_ADDR};
use serde_json::json;
use std::path::PathBuf;

/// Command-line client for a Marquee server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Server address; https://HOST:PORT for TLS.
    #[arg(long, global = true, env = "MARQUEE_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Bearer token for servers with authentication on.
    #[arg(long, global = true, env = "MARQUEE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate to check the server with (default: the system's roots).
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers requiring mutual TLS.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Embed texts: prints one vector per input (with --json, a JSON array of arrays).
    Embed {
        /// Model name (default: the server's default model).
        #[arg(long, default_value = "")]
        model: String,
        /// Refuse inputs over the model's token limit instead of truncating them.
        #[arg(long)]
        no_truncate: bool,
        /// The texts.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Generate text with a generator model: the prompt is one user message (the
    /// images in order, then the text); the text streams to stdout.
    Generate(generate::GenerateArgs),
    /// List loaded models, or manage them.
    Models {
        #[command(subcommand)]
        action: Option<ModelsAction>,
    },
    #[command(flatten)]
    Retrieval(cli::Command),
}

#[derive(Subcommand, Debug)]
enum ModelsAction {
    /// Show one model.
    Get {
        /// Model name.
        name: String,
    },
    /// Load a model directory on the server.
    Load {
        /// Name to serve it under.
        name: String,
        /// Model directory on the server's file system.
        path: String,
        /// Plugin name (default: the first plugin accepting the directory).
        #[arg(long, default_value = "")]
        plugin: String,
        /// Plugin options as a JSON object, e.g. '{"max_seq_length": 128}'.
        #[arg(long, default_value = "")]
        options: String,
    },
    /// Stop serving a model.
    Unload {
        /// Model name.
        name: String,
    },
}

fn kind_name(kind: i32) -> &'static str {
    match ModelKind::try_from(kind).unwrap_or(ModelKind::Unspecified) {
        ModelKind::TextEncoder => "text-encoder",
        ModelKind::ImageEncoder => "image-encoder",
        ModelKind::Fusion => "fusion",
        ModelKind::Generator => "generator",
        ModelKind::Pipeline => "pipeline",
        ModelKind::Unspecified => "unknown",
    }
}

fn model_json(m: &ModelInfo) -> serde_json::Value {
    json!({
        "name": m.name,
        "plugin": m.plugin,
        "plugin_version": m.plugin_version,
        "kind": kind_name(m.kind),
        "dimension": m.dimension,
        "max_input_tokens": m.max_input_tokens,
        "path": m.path,
        "default": m.is_default,
        "device": m.device,
        "queued_inputs": m.queued_inputs,
        "pipeline": m.pipeline.as_ref().map(|p| json!({
            "text_model": p.text_model,
            "image_model": p.image_model,
            "fusion_model": p.fusion_model,
            "store": {"text": p.store_text, "poster": p.store_poster, "thumbnail": p.store_thumbnail},
        })),
    })
}

fn print_models(models: &[ModelInfo], as_json: bool) {
    if as_json {
        let all: Vec<_> = models.iter().map(model_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return;
    }
    if models.is_empty() {
        println!("no models loaded");
        return;
    }
    println!(
        "{:<2}{:<24} {:<14} {:>5} {:>10}  {:<12} PATH",
        "", "NAME", "KIND", "DIM", "MAX_TOKENS", "PLUGIN"
    );
    for m in models {
        println!(
            "{:<2}{:<24} {:<14} {:>5} {:>10}  {:<12} {}",
            if m.is_default { "*" } else { "" },
            m.name,
            kind_name(m.kind),
            m.dimension,
            m.max_input_tokens,
            m.plugin,
            match &m.pipeline {
                Some(p) => format!("{} + {} -> {}", p.text_model, p.image_model, p.fusion_model),
                None => m.path.clone(),
            }
        );
    }
}

async fn run(cli: Cli) -> Result<()> {
    let server = ConnectOptions {
        addr: cli.addr,
        tls_ca: cli.tls_ca,
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
        token: cli.token,
    };
    if let Command::Retrieval(command) = cli.command {
        return cli::run(command, &server, cli.json).await;
    }
    let mut client = Client::connect_with(&server).await?;
    match cli.command {
        Command::Generate(args) => generate::run(&mut client, args, cli.json).await?,
        Command::Embed {
            model,
            no_truncate,
            texts,
        } => {
            let truncation = if no_truncate {
                Truncation::None
            } else {
                Truncation::Unspecified
            };
            let response = client
                .embed(Client::text_request(&model, &texts, truncation))
                .await?;
            if cli.json {
                let vectors: Vec<&Vec<f32>> =
                    response.embeddings.iter().map(|e| &e.values).collect();
                println!("{}", serde_json::to_string(&vectors)?);
            } else {
                let usage = response.usage.unwrap_or_default();
                eprintln!(
                    "model {} · {} dims · {} tokens",
                    response.model, response.dimension, usage.input_tokens
                );
                for e in &response.embeddings {
                    let values: Vec<String> = e.values.iter().map(|v| format!("{v:.6}")).collect();
                    println!("{}", values.join(" "));
                }
            }
        }
        Command::Models { action: None } => {
            let models = client
                .models
                .list_models(ListModelsRequest {})
                .await?
                .into_inner()
                .models;
            print_models(&models, cli.json);
        }
        Command::Models {
            action: Some(action),
        } => {
            let model = match action {
                ModelsAction::Get { name } => client
                    .models
                    .get_model(GetModelRequest { name })
                    .await?
                    .into_inner(),
                ModelsAction::Load {
                    name,
                    path,
                    plugin,
                    options,
                } => client
                    .models
                    .load_model(LoadModelRequest {
                        name,
                        plugin,
                        path,
                        config_json: options,
                    })
                    .await?
                    .into_inner(),
                ModelsAction::Unload { name } => {
                    client
                        .models
                        .unload_model(UnloadModelRequest { name: name.clone() })
                        .await?;
                    if cli.json {
                        println!("{}", json!({ "unloaded": name }));
                    } else {
                        println!("unloaded {name}");
                    }
                    return Ok(());
                }
            };
            print_models(std::slice::from_ref(&model), cli.json);
        }
        Command::Retrieval(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        match e.downcast_ref::<tonic::Status>() {
            Some(status) => eprintln!("error: {:?}: {}", status.code(), status.message()),
            None => eprintln!("error: {e:#}"),
        }
        std::process::exit(1);
    }
}
