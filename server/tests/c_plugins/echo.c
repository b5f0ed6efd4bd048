/* A tiny text encoder written in C against marquee_plugin.h: token ids are the text's
 * bytes; the embedding of a sequence is [length, sum of ids, first id]. Creating an
 * instance fails when the config JSON mentions "fail". */
#include "marquee_plugin.h"
#include <stdlib.h>
#include <string.h>

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

static MqStatus model_info(const MqInstance *instance, MqModelInfo *out) {
    (void)instance;
    out->output_dim = 3;
    out->max_input_tokens = 64;
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

static MqStatus embed(const MqInstance *instance, const MqTensor *inputs, size_t n_inputs,
                      MqTensorMut *output) {
    (void)instance;
    if (n_inputs != 2) {
        last = "echo: expected ids and offsets";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    const uint32_t *ids = inputs[0].data;
    const uint32_t *offsets = inputs[1].data;
    size_t n = inputs[1].shape[0] - 1;
    float *out = output->data;
    for (size_t s = 0; s < n; s++) {
        float sum = 0;
        for (uint32_t i = offsets[s]; i < offsets[s + 1]; i++) sum += (float)ids[i];
        out[3 * s] = (float)(offsets[s + 1] - offsets[s]);
        out[3 * s + 1] = sum;
        out[3 * s + 2] = (float)ids[offsets[s]];
    }
    return MQ_STATUS_OK;
}

static const char *last_error(void) { return last; }

static const MqPluginApi API = {
    MQ_ABI_VERSION, MQ_KIND_TEXT_ENCODER, "c-echo", "1.0.0", accepts, create, destroy,
    model_info,     tokenize,             embed,    last_error,
};

const MqPluginApi *marquee_plugin_entry(uint32_t host_abi_version) {
    return host_abi_version == MQ_ABI_VERSION ? &API : NULL;
}
