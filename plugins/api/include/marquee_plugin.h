/*
 * Marquee plugin ABI, version 1.
 *
 * A plugin is a shared library exporting one symbol:
 *
 *     const MqPluginApi *marquee_plugin_entry(uint32_t host_abi_version);
 *
 * It returns NULL when it does not speak host_abi_version, else a table that stays
 * valid for the library's lifetime. Enumerations are uint32_t constants. Tensors are
 * dense, row-major, and owned by the caller.
 *
 * Threading: tokenize, model_info and last_error may run concurrently; embed runs on
 * one thread at a time per instance. last_error returns the calling thread's message
 * from its last failed call, valid until that thread's next call into the plugin.
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

#define MQ_ABI_VERSION 1u
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

/* What one loaded model takes and returns. */
typedef struct MqModelInfo {
    uint32_t output_dim;       /* length of each output vector */
    uint32_t max_input_tokens; /* token limit per input, 0 when not applicable */
} MqModelInfo;

/* Opaque model instance owned by the plugin. */
typedef struct MqInstance MqInstance;

typedef struct MqPluginApi {
    uint32_t abi_version; /* must equal MQ_ABI_VERSION */
    MqKind kind;
    const char *name;    /* e.g. "bert-text", NUL-terminated UTF-8 */
    const char *version; /* NUL-terminated UTF-8 */
    /* 1 when the plugin can load the model directory, else 0. */
    uint32_t (*accepts)(const char *model_dir);
    /* Load a model directory with a JSON object of options (may be ""). */
    MqStatus (*create)(const char *model_dir, const char *config_json, MqInstance **out);
    void (*destroy)(MqInstance *instance);
    MqStatus (*model_info)(const MqInstance *instance, MqModelInfo *out);
    /* Tokenize UTF-8 text into at most max_tokens ids (truncating at the end, special
     * tokens kept); out_ids has room for max_tokens; untruncated_len gets the count
     * before truncation. */
    MqStatus (*tokenize)(const MqInstance *instance, const uint8_t *text, size_t text_len,
                         uint32_t max_tokens, uint32_t *out_ids, size_t *out_len,
                         size_t *untruncated_len);
    /* Embed one batch; output F32 [n, dim] for every kind. Inputs by kind:
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
    /* The calling thread's last error message; never NULL. */
    const char *(*last_error)(void);
} MqPluginApi;

typedef const MqPluginApi *(*MqEntryFn)(uint32_t host_abi_version);

const MqPluginApi *marquee_plugin_entry(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

#endif /* MARQUEE_PLUGIN_H */
