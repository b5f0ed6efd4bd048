/* The echo plugin claiming a minor newer than the host's: the host must refuse it. */
#include "marquee_plugin.h"
#define ECHO_NAME "c-newer-minor"
#define ECHO_ABI_MINOR (MQ_ABI_VERSION_MINOR + 1u)
#include "echo.c"
