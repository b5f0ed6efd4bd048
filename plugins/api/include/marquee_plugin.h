/*
 * Marquee plugin ABI, version 2.2.
 *
 * A plugin is a shared library exporting one symbol:
 *
 *     const MqPluginApi *marquee_plugin_entry(uint32_t host_major, uint32_t host_minor);
 *
 * The host passes its own ABI version (MQ_ABI_VERSION_MAJOR / MQ_ABI_VERSION_MINOR of
 * the header it was built with). The plugin returns a table that stays valid for the
 * library's lifetime, or NULL when it knows it cannot work with that host (the SDK
 * returns NULL for a host of another major, or of the same major and an older minor).
 * A plugin may also return its table whatever the host's version: the host checks the
 * table's own version and says why it refuses it, naming both versions.
 *
 * Compatibility rule (as Triton's tritonbackend.h):
 *   - A plugin built against MAJOR.MINOR works with any host of the same MAJOR and a
 *     minor of at least MINOR. The host refuses a plugin of another major, and a plugin
 *     of its own major and a newer minor.
 *   - A new minor only appends: optional functions at the end of MqPluginApi, fields at
 *     the end of MqModelInfo. Nothing is removed, reordered or retyped within a major.
 *   - MqPluginApi begins with struct_size, abi_major, abi_minor in every major, so any
 *     host can read a plugin's version. struct_size is sizeof(MqPluginApi) as the
 *     plugin was built (a plugin of an older minor fills fewer functions): the host
 *     treats every function at or past struct_size as absent, exactly like NULL.
 *   - The host zeroes MqModelInfo before model_info, so a field appended in a newer
 *     minor reads 0 from a plugin that does not know it.
 *   - Any other change is a new major.
 *
 * Versions:
 *   2.0  struct_size and major/minor in the table; the entry takes the host's major and
 *        minor; model info describes named inputs and outputs (MqTensorDesc).
 *   2.1  token_states (optional, text encoders): per-token hidden states of a layer;
 *        MqModelInfo.token_state_dim / token_state_layers.
 *   2.2  generator calls (optional, generators): apply_chat_template, start_sequence,
 *        step, cancel_sequence, load_adapter, unload_adapter, generator_state;
 *        MqModelInfo.max_context_tokens / kv_block_size / kv_blocks / max_images.
 *
 * Enumerations are uint32_t constants. Tensors are dense, row-major, and owned by the
 * caller. Functions marked "required" are never NULL; "optional" ones may be NULL (or
 * past struct_size) and the host then reports the capability as missing.
 *
 * Threading: tokenize, model_info and last_error may run concurrently; embed and
 * token_states run on one thread at a time per instance (never both at once).
 * Generators: apply_chat_template may run concurrently with anything; start_sequence,
 * step, cancel_sequence, load_adapter, unload_adapter and generator_state are called
 * by one thread at a time per instance.
 * last_error returns the calling thread's message from its last failed call, valid
 * until that thread's next call into the plugin.
 *
 * This header mirrors plugins/api/src/abi.rs; a test keeps the two in sync.
 */
#ifndef MARQUEE_PLUGIN_H
#define MARQUEE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MQ_ABI_VERSION_MAJOR 2u
#define MQ_ABI_VERSION_MINOR 2u
#define MQ_ENTRY_SYMBOL "marquee_plugin_entry"

typedef uint32_t MqStatus;
#define MQ_STATUS_OK 0u
#define MQ_STATUS_INVALID_ARGUMENT 1u
#define MQ_STATUS_NOT_FOUND 2u
#define MQ_STATUS_RESOURCE_EXHAUSTED 3u
#define MQ_STATUS_UNIMPLEMENTED 4u
#define MQ_STATUS_INTERNAL 5u

typedef uint32_t MqKind;
#define MQ_KIND_TEXT_ENCODER 1u
#define MQ_KIND_IMAGE_ENCODER 2u
#define MQ_KIND_FUSION 3u
#define MQ_KIND_GENERATOR 4u

typedef uint32_t MqDType;
#define MQ_DTYPE_F32 1u
#define MQ_DTYPE_U32 2u
#define MQ_DTYPE_U8 3u

#define MQ_MAX_DIMS 4

/* A read-only tensor: product(shape[0..ndim]) elements of dtype. */
typedef struct MqTensor {
    const void *data;
    uint64_t shape[MQ_MAX_DIMS];
    uint32_t ndim;
    MqDType dtype;
} MqTensor;

/* A tensor the callee fills; the caller sizes and owns the buffer. */
typedef struct MqTensorMut {
    void *data;
    uint64_t shape[MQ_MAX_DIMS];
    uint32_t ndim;
    MqDType dtype;
} MqTensorMut;

/* One named input or output of a model: width is the number of elements per row (per
 * batch item), 0 for a ragged input whose rows vary in length (token ids, encoded
 * images, offsets). Names by kind (in embed's order):
 *   text encoder:  inputs "token_ids" U32 [0], "offsets" U32 [0];
 *                  outputs "embedding" F32 [output_dim]
 *   image encoder: inputs "images" U8 [0], "offsets" U32 [0];
 *                  outputs "embedding" F32 [output_dim]
 *   fusion:        inputs "text" F32 [text_dim], "poster" F32 [image_dim],
 *                  "thumbnail" F32 [image_dim], "present" U8 [2];
 *                  outputs "embedding" F32 [output_dim] */
typedef struct MqTensorDesc {
    const char *name; /* NUL-terminated UTF-8 */
    MqDType dtype;
    uint32_t width;
} MqTensorDesc;

/* What one loaded model takes and returns. The descriptor arrays (and their names) are
 * owned by the instance and stay valid until it is destroyed. */
typedef struct MqModelInfo {
    uint32_t output_dim;       /* length of each output vector */
    uint32_t max_input_tokens; /* token limit per input, 0 when not applicable */
    const MqTensorDesc *inputs;
    size_t n_inputs;
    const MqTensorDesc *outputs;
    size_t n_outputs;
    /* Added in 2.1. */
    uint32_t token_state_dim;    /* width of a token_states row, 0 when not supported */
    uint32_t token_state_layers; /* L: token_states takes layers 0..=L */
    /* Added in 2.2 (generators; 0 otherwise). */
    uint32_t max_context_tokens; /* prompt + generated tokens of one sequence */
    uint32_t kv_block_size;      /* tokens per KV-cache block */
    uint32_t kv_blocks;          /* KV-cache blocks in all */
    uint32_t max_images;         /* images per prompt, 0 without vision */
} MqModelInfo;

/* Generators (added in 2.2). */
typedef uint64_t MqSequenceId;

#define MQ_MAX_TOP_LOGPROBS 20u

typedef uint32_t MqFinish;
#define MQ_FINISH_NONE 0u   /* still generating */
#define MQ_FINISH_LENGTH 1u /* max_new_tokens reached (or the context is full) */
#define MQ_FINISH_EOS 2u    /* a model end token or one of stop_token_ids */

typedef struct MqSamplingParams {
    uint32_t max_new_tokens;  /* >= 1 */
    uint32_t min_new_tokens;  /* end tokens suppressed until this many are generated */
    float temperature;        /* 0 = greedy */
    uint32_t top_k;           /* 0 = all */
    float top_p;              /* (0, 1]; 1 = all */
    float repetition_penalty; /* 1 = off */
    uint64_t seed;
    const uint32_t *stop_token_ids; /* end tokens besides the model's */
    size_t n_stop_token_ids;
    uint32_t top_logprobs; /* alternatives per token, <= MQ_MAX_TOP_LOGPROBS */
} MqSamplingParams;

typedef struct MqSequenceStart {
    /* The prompt, one image placeholder per image as the chat template renders it; the
     * plugin expands each to its image's token count. */
    const uint32_t *token_ids;
    size_t n_token_ids;
    const uint8_t *images;         /* encoded images (JPEG, PNG, WebP) back to back */
    const uint32_t *image_offsets; /* n_images + 1 byte offsets; NULL when n_images is 0 */
    size_t n_images;
    const char *adapter; /* NUL-terminated name of a loaded adapter, or NULL */
    MqSamplingParams params;
} MqSequenceStart;

typedef struct MqSequenceStarted {
    MqSequenceId id;
    uint32_t prompt_tokens; /* after image expansion */
    uint32_t image_tokens;  /* of the prompt tokens, those standing for images */
} MqSequenceStarted;

typedef struct MqTokenLogprob {
    uint32_t token_id;
    float logprob;
} MqTokenLogprob;

/* One sequence's outcome of a step; pointers are owned by the instance and valid until
 * its next generator call. */
typedef struct MqStepResult {
    MqSequenceId id;
    uint32_t has_token; /* 0 while the prompt is still being processed */
    uint32_t token_id;
    float logprob;   /* after repetition penalty and temperature */
    MqFinish finish; /* a finished sequence's blocks are already free */
    const uint8_t *text; /* UTF-8 the token completes, not NUL-terminated, may be empty */
    size_t text_len;
    const MqTokenLogprob *top_logprobs; /* most likely first */
    size_t n_top_logprobs;
} MqStepResult;

typedef struct MqAdapterInfo {
    uint32_t rank;
    float alpha;
    uint32_t use_rslora; /* 1: scale alpha / sqrt(r), else alpha / r */
    const char *target_modules; /* comma-separated; valid until the next generator call */
} MqAdapterInfo;

typedef struct MqGeneratorState {
    uint32_t kv_blocks;
    uint32_t kv_blocks_free;
    uint32_t sequences; /* live sequences */
} MqGeneratorState;

/* Opaque model instance owned by the plugin. */
typedef struct MqInstance MqInstance;

typedef struct MqPluginApi {
    uint32_t struct_size; /* sizeof(MqPluginApi) as the plugin was built */
    uint32_t abi_major;   /* MQ_ABI_VERSION_MAJOR the plugin was built with */
    uint32_t abi_minor;   /* MQ_ABI_VERSION_MINOR the plugin was built with */
    MqKind kind;
    const char *name;    /* e.g. "bert-text", NUL-terminated UTF-8 */
    const char *version; /* NUL-terminated UTF-8 */
    /* Required. 1 when the plugin can load the model directory, else 0. */
    uint32_t (*accepts)(const char *model_dir);
    /* Required. Load a model directory with a JSON object of options (may be ""). */
    MqStatus (*create)(const char *model_dir, const char *config_json, MqInstance **out);
    /* Required. */
    void (*destroy)(MqInstance *instance);
    /* Required. Fill *out (zeroed by the host) for the instance. */
    MqStatus (*model_info)(const MqInstance *instance, MqModelInfo *out);
    /* Required. Tokenize UTF-8 text into at most max_tokens ids (truncating at the
     * end, special tokens kept); out_ids has room for max_tokens; untruncated_len gets
     * the count before truncation. Plugins that take no text return
     * MQ_STATUS_UNIMPLEMENTED. */
    MqStatus (*tokenize)(const MqInstance *instance, const uint8_t *text, size_t text_len,
                         uint32_t max_tokens, uint32_t *out_ids, size_t *out_len,
                         size_t *untruncated_len);
    /* Required. Embed one batch; output F32 [n, dim] for every kind. Inputs by kind:
     * text encoders: inputs[0] = token ids (U32 [tokens]), inputs[1] = sequence
     *   offsets (U32 [n + 1]);
     * image encoders: inputs[0] = the encoded images back to back (U8 [bytes]),
     *   inputs[1] = their byte offsets (U32 [n + 1]);
     * fusion: inputs[0] = text embeddings (F32 [n, text_dim]), inputs[1] = poster and
     *   inputs[2] = thumbnail embeddings (F32 [n, image_dim] each), inputs[3] = which
     *   images are present (U8 [n, 2]: poster, thumbnail; 1 = present, 0 = absent and
     *   its row ignored). */
    MqStatus (*embed)(const MqInstance *instance, const MqTensor *inputs, size_t n_inputs,
                      MqTensorMut *output);
    /* Required. The calling thread's last error message; never NULL. */
    const char *(*last_error)(void);
    /* Added in 2.1. Optional (text encoders). The hidden state of every token after
     * `layer` (0 = the embeddings' output, L = the last layer, as transformers'
     * hidden_states[layer]) for a ragged batch laid out as embed's: inputs[0] = token
     * ids (U32 [tokens]), inputs[1] = offsets (U32 [n + 1]); output F32
     * [tokens, token_state_dim]. */
    MqStatus (*token_states)(const MqInstance *instance, const MqTensor *inputs,
                             size_t n_inputs, uint32_t layer, MqTensorMut *output);
    /* Added in 2.2. Optional (generators). Render chat messages (a JSON array of
     * {"role", "content": [{"type": "text", "text"} | {"type": "image"}]}) with the
     * model's chat template and its generation prompt; write at most capacity bytes of
     * UTF-8 to out and the full length to out_len (call again with a larger buffer when
     * that is more than capacity). */
    MqStatus (*apply_chat_template)(const MqInstance *instance, const char *messages_json,
                                    uint8_t *out, size_t capacity, size_t *out_len);
    /* Added in 2.2. Optional (generators). Admit a sequence, reserving KV-cache blocks
     * for its prompt and max_new_tokens: RESOURCE_EXHAUSTED when they are not free,
     * NOT_FOUND for an unknown adapter, INVALID_ARGUMENT for bad images, parameters or
     * a prompt over the context. Its prompt is processed by the following steps. */
    MqStatus (*start_sequence)(const MqInstance *instance, const MqSequenceStart *start,
                               MqSequenceStarted *out);
    /* Added in 2.2. Optional (generators). One forward pass over the listed live
     * sequences, processing at most token_budget tokens (0: no limit): every decoding
     * sequence its last token, then prompts in the order listed, a chunk at a time.
     * *results gets one result per listed sequence, in order. */
    MqStatus (*step)(const MqInstance *instance, const MqSequenceId *ids, size_t n_ids,
                     uint32_t token_budget, const MqStepResult **results,
                     size_t *n_results);
    /* Added in 2.2. Optional (generators). End a live sequence and free its blocks. */
    MqStatus (*cancel_sequence)(const MqInstance *instance, MqSequenceId id);
    /* Added in 2.2. Optional (generators). Load a PEFT LoRA adapter directory under a
     * name (INVALID_ARGUMENT when it does not fit the model). */
    MqStatus (*load_adapter)(const MqInstance *instance, const char *name, const char *dir,
                             MqAdapterInfo *out);
    /* Added in 2.2. Optional (generators). Unload an adapter; live sequences using it
     * keep it until they end. */
    MqStatus (*unload_adapter)(const MqInstance *instance, const char *name);
    /* Added in 2.2. Optional (generators). The KV cache's use and the live sequences. */
    MqStatus (*generator_state)(const MqInstance *instance, MqGeneratorState *out);
} MqPluginApi;

typedef const MqPluginApi *(*MqEntryFn)(uint32_t host_major, uint32_t host_minor);

const MqPluginApi *marquee_plugin_entry(uint32_t host_major, uint32_t host_minor);

#ifdef __cplusplus
}
#endif

#endif /* MARQUEE_PLUGIN_H */
