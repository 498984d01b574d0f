#include "wsq/err.h"

#include <string.h>

const char *wsq_strerror(wsq_err err)
{
    switch (err) {
#define WSQ__ERR_MSG(e, v, name, msg)                                                              \
    case e:                                                                                        \
        return msg;
        WSQ_ERR_LIST(WSQ__ERR_MSG)
#undef WSQ__ERR_MSG
    }
    return "unknown error";
}

const char *wsq_errname(wsq_err err)
{
    switch (err) {
#define WSQ__ERR_NAME(e, v, name, msg)                                                             \
    case e:                                                                                        \
        return name;
        WSQ_ERR_LIST(WSQ__ERR_NAME)
#undef WSQ__ERR_NAME
    }
    return "unknown";
}

wsq_err wsq_err_from_name(const char *name, wsq_err *out)
{
#define WSQ__ERR_FROM(e, v, n, msg)                                                                \
    if (strcmp(name, n) == 0) {                                                                    \
        *out = e;                                                                                  \
        return WSQ_OK;                                                                             \
    }
    WSQ_ERR_LIST(WSQ__ERR_FROM)
#undef WSQ__ERR_FROM
    return WSQ_ERR_INVAL;
}
