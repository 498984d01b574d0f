/* Test helper: edits a closed store's LMDB files behind its back (damage, old formats), for the
 * storage tests. */
#ifndef WSQ_TEST_RAW_LMDB_H
#define WSQ_TEST_RAW_LMDB_H

#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wsq/store.h"

/* Closes *store (NULL is fine) and opens a write transaction on the files in dir and on their
 * table named table. */
static inline MDB_dbi raw_begin(wsq_store_t **store, const char *dir, const char *table,
                                MDB_env **env, MDB_txn **txn)
{
    wsq_store_close(*store);
    *store = NULL;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(env), 0);
    mdb_env_set_maxdbs(*env, 8);
    assert_int_equal(mdb_env_open(*env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, txn), 0);
    assert_int_equal(mdb_dbi_open(*txn, table, 0, &dbi), 0);
    return dbi;
}

static inline void raw_commit(MDB_env *env, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

#endif
