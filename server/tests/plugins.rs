//! Plugins as the server sees them: a working C plugin, broken plugins that must not
//! stop the others, models loaded and unloaded at run time, and the ABI's compatibility
//! rule (C plugins of an older minor, a newer minor and another major).

mod common;

use common::Server;
use marquee_client::proto::{
    content_part, generate_request, ChatInput, ChatMessage, ContentPart, FinishReason,
    GenerateRequest, GenerationParameters,
};
use marquee_client::proto::{
    GetModelRequest, ListModelsRequest, LoadModelRequest, ModelKind, UnloadModelRequest,
};
use marquee_plugin_api::abi::{MQ_ABI_VERSION_MAJOR, MQ_ABI_VERSION_MINOR};
use marquee_plugin_api::host::PluginLibrary;
use marquee_plugin_api::Status as PluginStatus;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

fn lib_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Builds a plugin directory: the real BERT plugin, C plugins compiled from
/// tests/c_plugins against the public header (the echo plugin, and builds of it for an
/// older minor, a newer minor and another major ABI version; the parrot generator), and
/// a file that is no library at all.
fn plugin_dir(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let bert = lib_name("marquee_bert_text");
    std::fs::copy(common::plugin_dir().join(&bert), plugins.join(&bert)).unwrap();
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c_plugins");
    let include = common::repo_root().join("plugins/api/include");
    for (source, stem) in [
        ("echo.c", "c_echo"),
        ("wrong_abi.c", "wrong_abi"),
        ("no_entry.c", "no_entry"),
        ("older_minor.c", "marquee_c_echo_old"),
        ("newer_minor.c", "marquee_c_newer_minor"),
        ("other_major.c", "marquee_c_other_major"),
        ("parrot.c", "marquee_c_parrot"),
    ] {
        let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-std=c11", "-shared", "-fPIC", "-Wall", "-Werror", "-I"])
            .arg(&include)
            .arg(sources.join(source))
            .arg("-o")
            .arg(plugins.join(lib_name(stem)))
            .status()
            .expect("running the C compiler");
        assert!(status.success(), "compiling {source}");
    }
    std::fs::write(
        plugins.join(lib_name("not_a_library")),
        b"#!/bin/sh\necho hi\n",
    )
    .unwrap();
    plugins
}

fn config(dir: &Path, plugins: &Path) -> PathBuf {
    let echo_model = dir.join("echo-model");
    std::fs::create_dir_all(&echo_model).unwrap();
    let path = dir.join("marquee.toml");
    std::fs::write(
        &path,
        format!(
            r#"plugin_dir = "{plugins}"
plugins = ["marquee_bert_text", "c_echo", "wrong_abi", "no_entry", "not_a_library", "missing_plugin"]
default_model = "minilm"

[models.minilm]
path = "{minilm}"

[models.echo]
path = "{echo}"
plugin = "c-echo"

[models.broken]
path = "{echo}"
plugin = "c-echo"
options = {{ fail = true }}
"#,
            plugins = plugins.display(),
            minilm = common::minilm_dir().display(),
            echo = echo_model.display()
        ),
    )
    .unwrap();
    path
}

/// A server on the test configuration, its temporary directory (keep it alive), and the
/// echo model's directory.
fn start_with_test_plugins() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path());
    let server = Server::start(&["--config", config(dir.path(), &plugins).to_str().unwrap()]);
    let echo_dir = dir.path().join("echo-model").display().to_string();
    (dir, server, echo_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_plugins_are_reported_and_the_rest_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path());
    let server = Server::start(&["--config", config(dir.path(), &plugins).to_str().unwrap()]);
    let refused =
        format!("does not support ABI version {MQ_ABI_VERSION_MAJOR}.{MQ_ABI_VERSION_MINOR}");
    for needle in [
        refused.as_str(),
        "exports no `marquee_plugin_entry` symbol",
        "cannot load plugin",
        "no plugin library",
        "echo: refusing to start because the config asks it to fail",
    ] {
        assert!(
            server.wait_for_log(needle),
            "log lacks {needle:?}:\n{}",
            server.log.lock().unwrap()
        );
    }
    let mut client = server.client().await;
    let models = client
        .models
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["echo", "minilm"]);
    assert!(models[1].is_default);
    assert_eq!(models[0].plugin, "c-echo");
    assert_eq!(models[0].kind, ModelKind::TextEncoder as i32);

    // The C plugin serves real answers: [length, sum of bytes, first byte].
    let echo = client.embed_texts("echo", &["ab", "c"]).await.unwrap();
    assert_eq!(echo, vec![vec![2.0, 195.0, 97.0], vec![1.0, 99.0, 99.0]]);
    assert_eq!(client.embed_texts("", &["x"]).await.unwrap()[0].len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_load_and_unload_at_run_time() {
    let (_dir, server, echo_dir) = start_with_test_plugins();
    let mut client = server.client().await;

    let load = |name: &str, plugin: &str, path: &str| LoadModelRequest {
        name: name.into(),
        plugin: plugin.into(),
        path: path.into(),
        config_json: String::new(),
    };
    // The plugin is chosen from the directory when not named.
    let info = client
        .models
        .load_model(load("echo2", "", &echo_dir))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.plugin.as_str(), info.dimension), ("c-echo", 3));
    assert_eq!(
        client.embed_texts("echo2", &["a"]).await.unwrap(),
        vec![vec![1.0, 97.0, 97.0]]
    );

    let err = |r: Result<tonic::Response<_>, tonic::Status>| {
        r.map(|_: tonic::Response<_>| ()).unwrap_err()
    };
    let e = err(client.models.load_model(load("echo2", "", &echo_dir)).await);
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = err(client
        .models
        .load_model(load("x", "../../etc/evil", &echo_dir))
        .await);
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = err(client
        .models
        .load_model(load("x", "no-such-plugin", &echo_dir))
        .await);
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = err(client
        .models
        .load_model(load("x", "", "/no/such/dir"))
        .await);
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut bad_config = load("x", "c-echo", &echo_dir);
    bad_config.config_json = "{\"fail\": 1}".into();
    let e = err(client.models.load_model(bad_config).await);
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("refusing to start"));

    client
        .models
        .unload_model(UnloadModelRequest {
            name: "echo2".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        client
            .embed_texts("echo2", &["a"])
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let e = err(client
        .models
        .get_model(GetModelRequest {
            name: "echo2".into(),
        })
        .await);
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unloading_a_model_does_not_drop_its_in_flight_requests() {
    let server = Server::minilm(&[]);
    let long = "an old film about a lighthouse keeper and a storm ".repeat(30);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = server.client().await;
        let texts = vec![long.clone(); 32];
        tasks.push(tokio::spawn(async move {
            client.embed_texts("minilm", &texts).await
        }));
    }
    let mut client = server.client().await;
    // Wait until every request is admitted to the queue, then unload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let info = client
            .models
            .get_model(GetModelRequest {
                name: "minilm".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if info.queued_inputs as usize >= 4 * 32 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    client
        .models
        .unload_model(UnloadModelRequest {
            name: "minilm".into(),
        })
        .await
        .unwrap();
    for t in tasks {
        let vectors = t
            .await
            .unwrap()
            .expect("in-flight request answered after unload");
        assert_eq!(vectors.len(), 32);
    }
    assert_eq!(
        client
            .embed_texts("minilm", &["x"])
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_paths_stay_inside_the_plugin_directory() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path());
    // A symlink to a real plugin outside the directory, and one to a plugin inside it.
    let outside = common::plugin_dir().join(lib_name("marquee_bert_text"));
    std::os::unix::fs::symlink(&outside, plugins.join(lib_name("marquee_outside"))).unwrap();
    std::os::unix::fs::symlink(
        plugins.join(lib_name("c_echo")),
        plugins.join(lib_name("marquee_inside")),
    )
    .unwrap();
    let server = Server::start(&["--config", config(dir.path(), &plugins).to_str().unwrap()]);
    let mut client = server.client().await;
    let echo_dir = dir.path().join("echo-model").display().to_string();
    let load = |plugin: &str| LoadModelRequest {
        name: "x".into(),
        plugin: plugin.into(),
        path: echo_dir.clone(),
        config_json: String::new(),
    };

    let status = client.models.load_model(load("outside")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("resolves outside the plugin directory"),
        "{}",
        status.message()
    );
    for bad in ["../marquee_bert_text", "/etc/passwd", "..", "a/../../b"] {
        let status = client.models.load_model(load(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
    }
    // A symlink that stays inside is followed.
    let info = client
        .models
        .load_model(load("inside"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.plugin, "c-echo");
}

/// The host version as the refusals name it.
fn host_abi() -> String {
    format!("{MQ_ABI_VERSION_MAJOR}.{MQ_ABI_VERSION_MINOR}")
}

/// A plugin of the host's major and an older minor loads and serves; one of a newer
/// minor or of another major is refused with a message naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugins_load_by_the_abi_compatibility_rule() {
    let (_dir, server, echo_dir) = start_with_test_plugins();
    let mut client = server.client().await;
    let load = |name: &str, plugin: &str| LoadModelRequest {
        name: name.into(),
        plugin: plugin.into(),
        path: echo_dir.clone(),
        config_json: String::new(),
    };

    let info = client
        .models
        .load_model(load("old", "c-echo-old"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.plugin.as_str(), info.dimension), ("c-echo-old", 3));
    assert_eq!(
        client.embed_texts("old", &["ab"]).await.unwrap(),
        vec![vec![2.0, 195.0, 97.0]]
    );

    let host = host_abi();
    let newer = format!("{MQ_ABI_VERSION_MAJOR}.{}", MQ_ABI_VERSION_MINOR + 1);
    let other = format!("{}.{MQ_ABI_VERSION_MINOR}", MQ_ABI_VERSION_MAJOR + 1);
    for (plugin, expected) in [
        (
            "c-newer-minor",
            format!(
                "it was built for ABI version {newer}, newer than the host's {host}: a plugin \
                 needs a host of its major version and at least its minor version"
            ),
        ),
        (
            "c-other-major",
            format!(
                "it was built for ABI version {other} and the host speaks {host}: a plugin \
                 needs a host of the same major version"
            ),
        ),
    ] {
        let status = client
            .models
            .load_model(load("x", plugin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains(&expected),
            "{plugin}: {}",
            status.message()
        );
    }
}

/// Through the host API: the optional `token_states` past an older plugin's table is
/// absent (a clear `Unimplemented` error), present in a current one, and the BERT
/// plugin's last-layer states mean-pool and normalise to its embeddings.
#[test]
fn token_states_are_optional_and_real() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path());
    let echo_dir = dir.path().join("echo-model");
    std::fs::create_dir_all(&echo_dir).unwrap();
    let (ids, offsets) = ([104u32, 105, 33], [0u32, 2, 3]);

    let old = PluginLibrary::open(&plugins.join(lib_name("marquee_c_echo_old"))).unwrap();
    assert_eq!(old.abi_version(), (MQ_ABI_VERSION_MAJOR, 0));
    let instance = old.create(&echo_dir, "").unwrap();
    let err = instance.token_states(&ids, &offsets, 0).unwrap_err();
    assert_eq!(err.status(), PluginStatus::Unimplemented);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin c-echo-old: it does not return per-token hidden states (it lacks the \
             optional token_states call; plugin ABI {MQ_ABI_VERSION_MAJOR}.0)"
        )
    );

    let echo = PluginLibrary::open(&plugins.join(lib_name("c_echo"))).unwrap();
    let instance = echo.create(&echo_dir, "").unwrap();
    let info = instance.info();
    let described: Vec<(&str, u32)> = info
        .inputs
        .iter()
        .chain(&info.outputs)
        .map(|t| (t.name.as_str(), t.width))
        .collect();
    assert_eq!(
        described,
        [("token_ids", 0), ("offsets", 0), ("embedding", 3)]
    );
    assert_eq!(info.fusion_widths(), None);
    assert_eq!(
        instance.token_states(&ids, &offsets, 0).unwrap(),
        [104.0, 0.0, 105.0, 1.0, 33.0, 0.0]
    );

    let bert = PluginLibrary::open(&plugins.join(lib_name("marquee_bert_text"))).unwrap();
    let minilm = bert.create(&common::minilm_dir(), "").unwrap();
    let (layers, hidden) = (
        minilm.info().token_state_layers,
        minilm.info().token_state_dim as usize,
    );
    assert_eq!((layers, hidden), (6, 384));
    let texts = ["a storm at sea", "two thieves"];
    let mut ids = Vec::new();
    let mut offsets = vec![0u32];
    for text in texts {
        ids.extend(minilm.tokenize(text, 256).unwrap().ids);
        offsets.push(ids.len() as u32);
    }
    let states = minilm.token_states(&ids, &offsets, layers).unwrap();
    assert_eq!(states.len(), ids.len() * hidden);
    let embeddings = minilm.embed_tokens(&ids, &offsets).unwrap();
    for (i, span) in offsets.windows(2).enumerate() {
        let rows = &states[span[0] as usize * hidden..span[1] as usize * hidden];
        let mut mean = vec![0f32; hidden];
        for row in rows.chunks_exact(hidden) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
        mean.iter_mut().for_each(|v| *v /= norm);
        let want = &embeddings[i * hidden..(i + 1) * hidden];
        assert!(common::max_abs_diff(&mean, want) < 1e-5, "text {i}");
    }
    let err = minilm.token_states(&ids, &offsets, layers + 1).unwrap_err();
    assert_eq!(err.status(), PluginStatus::InvalidArgument);
}

/// A fusion model describes its text and image widths to the host.
#[test]
fn fusion_models_describe_their_input_widths() {
    let fusion =
        PluginLibrary::open(&common::plugin_dir().join(lib_name("marquee_fusion"))).unwrap();
    let dir = common::repo_root().join("plugins/fusion/tests/fixtures/with_bias");
    let instance = fusion.create(&dir, "").unwrap();
    assert_eq!(instance.info().fusion_widths(), Some((24, 40)));
    assert_eq!(instance.info().output_dim, 12);
    let present = instance.info().input("present").unwrap();
    assert_eq!(
        (present.dtype, present.width),
        (marquee_plugin_api::DType::U8, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generator_written_in_c_serves_through_the_abi_generator_calls() {
    let (dir, server, _) = start_with_test_plugins();
    let mut client = server.client().await;
    let model_dir = dir.path().join("parrot-model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let info = client
        .models
        .load_model(LoadModelRequest {
            name: "parrot".into(),
            plugin: "c-parrot".into(),
            path: model_dir.display().to_string(),
            config_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.kind, ModelKind::Generator as i32);
    let request = |max_new_tokens| GenerateRequest {
        model: "parrot".into(),
        input: Some(generate_request::Input::Chat(ChatInput {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: vec![ContentPart {
                    part: Some(content_part::Part::Text("hello parrot".into())),
                }],
            }],
        })),
        parameters: Some(GenerationParameters {
            max_new_tokens: Some(max_new_tokens),
            ..Default::default()
        }),
    };
    // The parrot says its rendered prompt back, byte by byte, then ends (EOS).
    let whole = client
        .generation
        .generate(request(150))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(whole.finish_reason, FinishReason::EosToken as i32);
    let said: serde_json::Value = serde_json::from_str(&whole.text).unwrap();
    assert_eq!(
        said,
        serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "hello parrot"}]}])
    );
    assert_eq!(whole.token_ids.len(), whole.text.len());
    let usage = whole.usage.unwrap();
    assert_eq!(usage.prompt_tokens as usize, whole.text.len());
    assert_eq!(usage.completion_tokens as usize, whole.text.len());
    let short = client
        .generation
        .generate(request(3))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(short.finish_reason, FinishReason::Length as i32);
    assert_eq!(short.text, whole.text[..3]);
    // Over its context of 256 tokens: the host refuses it before the plugin sees it.
    let over = client.generation.generate(request(250)).await.unwrap_err();
    assert_eq!(over.code(), tonic::Code::InvalidArgument);
    assert!(
        over.message().contains("context of 256 tokens"),
        "{}",
        over.message()
    );
    // An image to a generator without vision.
    let mut with_image = request(8);
    if let Some(generate_request::Input::Chat(chat)) = &mut with_image.input {
        chat.messages[0].content.push(ContentPart {
            part: Some(content_part::Part::Image(vec![1, 2, 3])),
        });
    }
    let err = client.generation.generate(with_image).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("takes no images"),
        "{}",
        err.message()
    );
    // An embedding request to a generator is refused with a reason.
    let embed = client.embed_texts("parrot", &["x"]).await.unwrap_err();
    assert!(embed.to_string().contains("generator"), "{embed}");
}
