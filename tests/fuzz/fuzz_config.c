/* Fuzz target: the YAML config parser (bytes in -> config or file:line:col error). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wsq_config_t *cfg = NULL;
    char err[512];
    wsq_err e = wsq_config_parse((const char *)data, size, "fuzz.yaml", &cfg, err, sizeof(err));
    if (e == WSQ_OK) {
        if (cfg == NULL || cfg->n_listeners == 0 || cfg->storage.path == NULL)
            abort();
        wsq_retention_t r;
        wsq_config_retention(cfg, "a.b", 3, &r);
        wsq_config_free(&cfg);
    } else if (memchr(err, '\0', sizeof(err)) == NULL || strncmp(err, "fuzz.yaml", 9) != 0) {
        abort(); /* every error names the file */
    }
    return 0;
}
