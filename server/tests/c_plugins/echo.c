/* A tiny text encoder written in C against marquee_plugin.h: token ids are the text's
 * bytes; the embedding of a sequence is [length, sum of ids, first id], and the state
 * of each token (layer 0 only) is [id, position]. Creating an instance fails when the
 * config JSON mentions "fail". It returns its table to any host and leaves the
 * compatibility check to the host.
 *
 * The ECHO_* macros let the other test plugins build the same code as another plugin
 * or for another ABI version (see older_minor.c, newer_minor.c, other_major.c). */
#include "marquee_plugin.h"
#include <stdlib.h>
#include <string.h>

#ifndef ECHO_NAME
#define ECHO_NAME "c-echo"
#endif
#ifndef ECHO_ABI_MAJOR
#define ECHO_ABI_MAJOR MQ_ABI_VERSION_MAJOR
#endif
#ifndef ECHO_ABI_MINOR
#define ECHO_ABI_MINOR MQ_ABI_VERSION_MINOR
#endif
#ifndef ECHO_TABLE_SIZE
#define ECHO_TABLE_SIZE sizeof(MqPluginApi)
#endif

static _Thread_local const char *last = "";

static uint32_t accepts(const char *dir) { return strstr(dir, "echo") != NULL; }

static MqStatus create(const char *dir, const char *config, MqInstance **out) {
    (void)dir;
    if (config && strstr(config, "fail")) {
        last = "echo: refusing to start because the config asks it to fail";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    *out = (MqInstance *)malloc(1);
    return MQ_STATUS_OK;
}

static void destroy(MqInstance *instance) { free(instance); }

static const MqTensorDesc INPUTS[] = {
    {"token_ids", MQ_DTYPE_U32, 0},
    {"offsets", MQ_DTYPE_U32, 0},
};
static const MqTensorDesc OUTPUTS[] = {{"embedding", MQ_DTYPE_F32, 3}};

static MqStatus model_info(const MqInstance *instance, MqModelInfo *out) {
    (void)instance;
    out->output_dim = 3;
    out->max_input_tokens = 64;
    out->inputs = INPUTS;
    out->n_inputs = 2;
    out->outputs = OUTPUTS;
    out->n_outputs = 1;
    out->token_state_dim = 2;
    out->token_state_layers = 0;
    return MQ_STATUS_OK;
}

static MqStatus tokenize(const MqInstance *instance, const uint8_t *text, size_t len,
                         uint32_t max_tokens, uint32_t *ids, size_t *out_len, size_t *full) {
    (void)instance;
    size_t n = len < max_tokens ? len : max_tokens;
    for (size_t i = 0; i < n; i++) ids[i] = text[i];
    *out_len = n;
    *full = len;
    return MQ_STATUS_OK;
}

/* A ragged batch of token ids: inputs[0] the ids, inputs[1] the n + 1 offsets. */
typedef struct Ragged {
    const uint32_t *ids;
    const uint32_t *offsets;
    size_t n;
} Ragged;

static int ragged(const MqTensor *inputs, size_t n_inputs, Ragged *out) {
    if (n_inputs != 2) return 0;
    out->ids = inputs[0].data;
    out->offsets = inputs[1].data;
    out->n = inputs[1].shape[0] - 1;
    return 1;
}

static MqStatus embed(const MqInstance *instance, const MqTensor *inputs, size_t n_inputs,
                      MqTensorMut *output) {
    (void)instance;
    Ragged b;
    if (!ragged(inputs, n_inputs, &b)) {
        last = "echo: expected ids and offsets";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    float *out = output->data;
    for (size_t s = 0; s < b.n; s++) {
        float sum = 0;
        for (uint32_t i = b.offsets[s]; i < b.offsets[s + 1]; i++) sum += (float)b.ids[i];
        out[3 * s] = (float)(b.offsets[s + 1] - b.offsets[s]);
        out[3 * s + 1] = sum;
        out[3 * s + 2] = (float)b.ids[b.offsets[s]];
    }
    return MQ_STATUS_OK;
}

static const char *last_error(void) { return last; }

static MqStatus token_states(const MqInstance *instance, const MqTensor *inputs,
                             size_t n_inputs, uint32_t layer, MqTensorMut *output) {
    (void)instance;
    Ragged b;
    if (!ragged(inputs, n_inputs, &b) || layer != 0) {
        last = "echo: token states take ids and offsets, layer 0";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    float *out = output->data;
    for (size_t s = 0; s < b.n; s++)
        for (uint32_t i = b.offsets[s]; i < b.offsets[s + 1]; i++) {
            out[2 * i] = (float)b.ids[i];
            out[2 * i + 1] = (float)(i - b.offsets[s]);
        }
    return MQ_STATUS_OK;
}

static const MqPluginApi API = {
    .struct_size = ECHO_TABLE_SIZE,
    .abi_major = ECHO_ABI_MAJOR,
    .abi_minor = ECHO_ABI_MINOR,
    .kind = MQ_KIND_TEXT_ENCODER,
    .name = ECHO_NAME,
    .version = "1.0.0",
    .accepts = accepts,
    .create = create,
    .destroy = destroy,
    .model_info = model_info,
    .tokenize = tokenize,
    .embed = embed,
    .last_error = last_error,
    .token_states = token_states,
};

const MqPluginApi *marquee_plugin_entry(uint32_t host_major, uint32_t host_minor) {
    (void)host_major;
    (void)host_minor;
    return &API;
}
