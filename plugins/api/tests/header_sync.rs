//! Keeps `include/marquee_plugin.h` in sync with `src/abi.rs`: compiles a C program
//! against the header that prints every constant, struct size and field offset, and
//! compares them with the Rust side.

use marquee_plugin_api::abi::*;
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

/// Records a struct's size and the offset of each named field.
macro_rules! layout {
    ($map:ident, $ty:ident { $($field:ident),* $(,)? }) => {
        $map.insert(format!("sizeof({})", stringify!($ty)), size_of::<$ty>() as u64);
        $(
            $map.insert(
                format!("{}.{}", stringify!($ty), stringify!($field)),
                offset_of!($ty, $field) as u64,
            );
        )*
    };
}

fn rust_side() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("MQ_ABI_VERSION_MAJOR", MQ_ABI_VERSION_MAJOR),
        ("MQ_ABI_VERSION_MINOR", MQ_ABI_VERSION_MINOR),
        ("MQ_MAX_DIMS", MQ_MAX_DIMS as u32),
        ("MQ_STATUS_OK", MQ_STATUS_OK),
        ("MQ_STATUS_INVALID_ARGUMENT", MQ_STATUS_INVALID_ARGUMENT),
        ("MQ_STATUS_NOT_FOUND", MQ_STATUS_NOT_FOUND),
        ("MQ_STATUS_RESOURCE_EXHAUSTED", MQ_STATUS_RESOURCE_EXHAUSTED),
        ("MQ_STATUS_UNIMPLEMENTED", MQ_STATUS_UNIMPLEMENTED),
        ("MQ_STATUS_INTERNAL", MQ_STATUS_INTERNAL),
        ("MQ_KIND_TEXT_ENCODER", MQ_KIND_TEXT_ENCODER),
        ("MQ_KIND_IMAGE_ENCODER", MQ_KIND_IMAGE_ENCODER),
        ("MQ_KIND_FUSION", MQ_KIND_FUSION),
        ("MQ_KIND_GENERATOR", MQ_KIND_GENERATOR),
        ("MQ_DTYPE_F32", MQ_DTYPE_F32),
        ("MQ_DTYPE_U32", MQ_DTYPE_U32),
        ("MQ_DTYPE_U8", MQ_DTYPE_U8),
        ("MQ_MAX_TOP_LOGPROBS", MQ_MAX_TOP_LOGPROBS),
        ("MQ_FINISH_NONE", MQ_FINISH_NONE),
        ("MQ_FINISH_LENGTH", MQ_FINISH_LENGTH),
        ("MQ_FINISH_EOS", MQ_FINISH_EOS),
    ] {
        m.insert(k.to_string(), v as u64);
    }
    layout!(
        m,
        MqTensor {
            data,
            shape,
            ndim,
            dtype
        }
    );
    layout!(
        m,
        MqTensorMut {
            data,
            shape,
            ndim,
            dtype
        }
    );
    layout!(m, MqTensorDesc { name, dtype, width });
    layout!(
        m,
        MqModelInfo {
            output_dim,
            max_input_tokens,
            inputs,
            n_inputs,
            outputs,
            n_outputs,
            token_state_dim,
            token_state_layers,
            max_context_tokens,
            kv_block_size,
            kv_blocks,
            max_images,
        }
    );
    layout!(
        m,
        MqSamplingParams {
            max_new_tokens,
            min_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            stop_token_ids,
            n_stop_token_ids,
            top_logprobs,
        }
    );
    layout!(
        m,
        MqSequenceStart {
            token_ids,
            n_token_ids,
            images,
            image_offsets,
            n_images,
            adapter,
            params,
        }
    );
    layout!(
        m,
        MqSequenceStarted {
            id,
            prompt_tokens,
            image_tokens
        }
    );
    layout!(m, MqTokenLogprob { token_id, logprob });
    layout!(
        m,
        MqStepResult {
            id,
            has_token,
            token_id,
            logprob,
            finish,
            text,
            text_len,
            top_logprobs,
            n_top_logprobs,
        }
    );
    layout!(
        m,
        MqAdapterInfo {
            rank,
            alpha,
            use_rslora,
            target_modules
        }
    );
    layout!(
        m,
        MqGeneratorState {
            kv_blocks,
            kv_blocks_free,
            sequences
        }
    );
    layout!(
        m,
        MqPluginApi {
            struct_size,
            abi_major,
            abi_minor,
            kind,
            name,
            version,
            accepts,
            create,
            destroy,
            model_info,
            tokenize,
            embed,
            last_error,
            token_states,
            apply_chat_template,
            start_sequence,
            step,
            cancel_sequence,
            load_adapter,
            unload_adapter,
            generator_state,
        }
    );
    m
}

#[test]
fn c_header_matches_rust_abi() {
    let expected = rust_side();
    let mut program = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"marquee_plugin.h\"\nint main(void) {\n",
    );
    for key in expected.keys() {
        let expr = if let Some(ty) = key.strip_prefix("sizeof(") {
            format!("sizeof({}", ty)
        } else if let Some((ty, field)) = key.split_once('.') {
            format!("offsetof({ty}, {field})")
        } else {
            key.clone()
        };
        program.push_str(&format!(
            "  printf(\"%s=%llu\\n\", \"{key}\", (unsigned long long)({expr}));\n"
        ));
    }
    program.push_str("  return 0;\n}\n");
    let dir = tempfile_dir();
    let source = dir.join("check.c");
    let binary = dir.join("check");
    std::fs::write(&source, program).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e}"));
    assert!(status.success(), "the header does not compile");
    let output = Command::new(&binary).output().unwrap();
    let got: BTreeMap<String, u64> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();
    assert_eq!(got, expected);
    let header = std::fs::read_to_string(include.join("marquee_plugin.h")).unwrap();
    assert!(header.contains(&format!("#define MQ_ENTRY_SYMBOL \"{MQ_ENTRY_SYMBOL}\"")));
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("marquee-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
