/* Exports the entry symbol but speaks no ABI version the host knows. */
#include "marquee_plugin.h"
const MqPluginApi *marquee_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version;
    return NULL;
}
