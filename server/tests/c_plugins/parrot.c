/* A tiny generator written in C against marquee_plugin.h, exercising the ABI 2.2
 * generator calls: its "chat template" returns the messages JSON as it is, token ids are
 * the prompt's bytes, and a sequence generates its prompt back one byte per step (the
 * byte as its text, log-probability 0), ending with MQ_FINISH_EOS after the last byte
 * or MQ_FINISH_LENGTH at max_new_tokens. Its KV cache is 64 blocks of 4 tokens;
 * admission reserves prompt + max_new_tokens and refuses with RESOURCE_EXHAUSTED. */
#include "marquee_plugin.h"
#include <stdlib.h>
#include <string.h>

#define BLOCK 4u
#define BLOCKS 64u
#define MAX_SEQUENCES 16
#define CONTEXT 256u

static _Thread_local const char *last = "";

typedef struct Sequence {
    int live;
    MqSequenceId id;
    uint8_t prompt[CONTEXT];
    size_t len;
    uint32_t generated;
    uint32_t max_new;
    uint32_t blocks;
} Sequence;

typedef struct Parrot {
    Sequence seqs[MAX_SEQUENCES];
    MqStepResult results[MAX_SEQUENCES];
    uint32_t free_blocks;
    MqSequenceId next_id;
} Parrot;

static uint32_t accepts(const char *dir) { return strstr(dir, "parrot") != NULL; }

static MqStatus create(const char *dir, const char *config, MqInstance **out) {
    (void)dir;
    (void)config;
    Parrot *p = calloc(1, sizeof(Parrot));
    p->free_blocks = BLOCKS;
    *out = (MqInstance *)p;
    return MQ_STATUS_OK;
}

static void destroy(MqInstance *instance) { free(instance); }

static MqStatus model_info(const MqInstance *instance, MqModelInfo *out) {
    (void)instance;
    out->max_context_tokens = CONTEXT;
    out->kv_block_size = BLOCK;
    out->kv_blocks = BLOCKS;
    out->max_images = 0;
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
    (void)inputs;
    (void)n_inputs;
    (void)output;
    last = "parrot: a generator does not embed";
    return MQ_STATUS_UNIMPLEMENTED;
}

static const char *last_error(void) { return last; }

static MqStatus apply_chat_template(const MqInstance *instance, const char *messages,
                                    uint8_t *out, size_t capacity, size_t *out_len) {
    (void)instance;
    size_t len = strlen(messages);
    memcpy(out, messages, len < capacity ? len : capacity);
    *out_len = len;
    return MQ_STATUS_OK;
}

static Sequence *find(Parrot *p, MqSequenceId id) {
    for (int i = 0; i < MAX_SEQUENCES; i++)
        if (p->seqs[i].live && p->seqs[i].id == id) return &p->seqs[i];
    return NULL;
}

static void end(Parrot *p, Sequence *s) {
    p->free_blocks += s->blocks;
    s->live = 0;
}

static MqStatus start_sequence(const MqInstance *instance, const MqSequenceStart *start,
                               MqSequenceStarted *out) {
    Parrot *p = (Parrot *)instance;
    if (start->n_images > 0) {
        last = "parrot: no vision";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    if (start->adapter) {
        last = "parrot: no adapters";
        return MQ_STATUS_NOT_FOUND;
    }
    if (start->n_token_ids == 0 || start->n_token_ids + start->params.max_new_tokens > CONTEXT) {
        last = "parrot: the prompt is empty or over the context";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    uint32_t need =
        (uint32_t)((start->n_token_ids + start->params.max_new_tokens + BLOCK - 1) / BLOCK);
    Sequence *s = NULL;
    for (int i = 0; i < MAX_SEQUENCES && !s; i++)
        if (!p->seqs[i].live) s = &p->seqs[i];
    if (!s || need > p->free_blocks) {
        last = "parrot: no free KV blocks";
        return MQ_STATUS_RESOURCE_EXHAUSTED;
    }
    p->free_blocks -= need;
    s->live = 1;
    s->id = p->next_id++;
    s->len = start->n_token_ids;
    for (size_t i = 0; i < s->len; i++) s->prompt[i] = (uint8_t)start->token_ids[i];
    s->generated = 0;
    s->max_new = start->params.max_new_tokens;
    s->blocks = need;
    out->id = s->id;
    out->prompt_tokens = (uint32_t)s->len;
    out->image_tokens = 0;
    return MQ_STATUS_OK;
}

static MqStatus step(const MqInstance *instance, const MqSequenceId *ids, size_t n_ids,
                     uint32_t token_budget, const MqStepResult **results, size_t *n_results) {
    (void)token_budget;
    Parrot *p = (Parrot *)instance;
    if (n_ids > MAX_SEQUENCES) {
        last = "parrot: too many sequences";
        return MQ_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < n_ids; i++) {
        Sequence *s = find(p, ids[i]);
        if (!s) {
            last = "parrot: no such live sequence";
            return MQ_STATUS_INVALID_ARGUMENT;
        }
        MqStepResult *r = &p->results[i];
        const uint8_t *byte = &s->prompt[s->generated];
        s->generated++;
        *r = (MqStepResult){.id = s->id, .has_token = 1, .token_id = *byte, .logprob = 0.0f,
                            .finish = MQ_FINISH_NONE, .text = byte, .text_len = 1,
                            .top_logprobs = NULL, .n_top_logprobs = 0};
        if (s->generated == s->len) r->finish = MQ_FINISH_EOS;
        else if (s->generated == s->max_new) r->finish = MQ_FINISH_LENGTH;
        if (r->finish != MQ_FINISH_NONE) end(p, s);
    }
    *results = p->results;
    *n_results = n_ids;
    return MQ_STATUS_OK;
}

static MqStatus cancel_sequence(const MqInstance *instance, MqSequenceId id) {
    Parrot *p = (Parrot *)instance;
    Sequence *s = find(p, id);
    if (!s) {
        last = "parrot: no such live sequence";
        return MQ_STATUS_NOT_FOUND;
    }
    end(p, s);
    return MQ_STATUS_OK;
}

static MqStatus generator_state(const MqInstance *instance, MqGeneratorState *out) {
    Parrot *p = (Parrot *)instance;
    uint32_t live = 0;
    for (int i = 0; i < MAX_SEQUENCES; i++) live += (uint32_t)p->seqs[i].live;
    out->kv_blocks = BLOCKS;
    out->kv_blocks_free = p->free_blocks;
    out->sequences = live;
    return MQ_STATUS_OK;
}

static const MqPluginApi API = {
    .struct_size = sizeof(MqPluginApi),
    .abi_major = MQ_ABI_VERSION_MAJOR,
    .abi_minor = MQ_ABI_VERSION_MINOR,
    .kind = MQ_KIND_GENERATOR,
    .name = "c-parrot",
    .version = "1.0.0",
    .accepts = accepts,
    .create = create,
    .destroy = destroy,
    .model_info = model_info,
    .tokenize = tokenize,
    .embed = embed,
    .last_error = last_error,
    .apply_chat_template = apply_chat_template,
    .start_sequence = start_sequence,
    .step = step,
    .cancel_sequence = cancel_sequence,
    .generator_state = generator_state,
};

const MqPluginApi *marquee_plugin_entry(uint32_t host_major, uint32_t host_minor) {
    (void)host_major;
    (void)host_minor;
    return &API;
}
