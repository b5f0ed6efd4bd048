/* Exports the entry symbol but serves no host version: it returns NULL, as a plugin of
 * ABI 1 (whose entry took one version number and wanted 1) does for a host of ABI 2. */
#include "marquee_plugin.h"
const MqPluginApi *marquee_plugin_entry(uint32_t host_major, uint32_t host_minor) {
    (void)host_major;
    (void)host_minor;
    return NULL;
}
