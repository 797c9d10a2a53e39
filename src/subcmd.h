/* subcmd — run this same cowfs program as a child (`cowfs branch create
 * ...`, `cowfs pg start ...`), so that the git and ci commands go through
 * the same code, checks and messages as a user typing them.
 *
 * The program is $COWFS_PROGRAM (set by cowfs for cowfs-git), else
 * /proc/self/exe, else "cowfs" in PATH.  The child gets
 * stdin from /dev/null and its own process group, so that a Ctrl-C typed
 * at the terminal reaches the caller (which decides what to do) and not a
 * half-done `branch delete`.  Its stdout and stderr are collected (each
 * NUL-terminated, malloc'd; the caller frees them) when RET_OUT / RET_ERR
 * are given, else they go to the caller's stderr.
 *
 * Returns the exit status (0-255), 128+N if the child died of signal N,
 * or -errno if it could not be run.
 */
#ifndef COW_SUBCMD_H
#define COW_SUBCMD_H
#include <stddef.h>

/* ARGV: the arguments after the program name, NULL-terminated. */
int cow_subcmd_run(const char *const argv[], char **ret_out, char **ret_err);
/* The path of this program, into OUT. */
void cow_subcmd_self(char *out, size_t n);
/* The last non-empty line of TEXT (a child's stderr) without the
 * "cowfs: " in front, into OUT; "" if there is none. */
void cow_subcmd_reason(const char *text, char *out, size_t n);
#endif
