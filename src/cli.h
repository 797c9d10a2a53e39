/* cli — what the parts of the command-line tool share (defined in cowfs.c):
 * finding the store whose daemon to talk to, and one request to it.
 *
 *   find_store(STORE, MNT, out)   --store, --mount, $COWFS_STORE, or the only
 *                                 cowfs mount; -1 after printing why
 *   request(store, req)           send one JSON request on STORE/control.sock
 *                                 and return the reply object (the caller
 *                                 frees it), or NULL after printing why
 */
#ifndef COW_CLI_H
#define COW_CLI_H
#include <jansson.h>
#include <stddef.h>

int find_store(const char *store, const char *mnt, char *out, size_t n);
json_t *request(const char *store, json_t *req);
#endif
