/* The echo plugin claiming another major version: the host must refuse it. */
#include "marquee_plugin.h"
#define ECHO_NAME "c-other-major"
#define ECHO_ABI_MAJOR (MQ_ABI_VERSION_MAJOR + 1u)
#include "echo.c"
