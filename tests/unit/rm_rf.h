/* Test helper: removes a directory tree, the temporary stores of the storage tests. */
#ifndef WSQ_TEST_RM_RF_H
#define WSQ_TEST_RM_RF_H

#include <ftw.h>
#include <stdio.h>

static int rm_rf_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* go on: remove what can be removed */
}

static inline void rm_rf(const char *dir)
{
    nftw(dir, rm_rf_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
