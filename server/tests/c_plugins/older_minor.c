/* The echo plugin built for ABI 2.0, an older minor than the host's: its table ends
 * before token_states (which 2.1 appended), so the host must accept it, serve it, and
 * treat token_states as absent even though the memory past the table holds a pointer. */
#include "marquee_plugin.h"
#define ECHO_NAME "c-echo-old"
#define ECHO_ABI_MINOR 0u
#define ECHO_TABLE_SIZE offsetof(MqPluginApi, token_states)
#include "echo.c"
