/* cli_diff — `cowfs diff`: what differs between two branches.
 *
 *   cowfs diff [--schema] [--data] A B [--dbname DB] [--markdown | --json]
 *              [--exit-code] [--store STORE | --mount MOUNTPOINT]
 *
 * --schema: `pg_dump --schema-only` of each branch's database (run as the
 * branch's owner, on the branch's own socket), normalised (schemadiff.h),
 * as a unified diff (diff -u) or, with --markdown, a per-object summary and
 * the diff folded in, ready for a pull-request comment.
 *
 * --data: which tables and indexes differ, and by how many 8 KiB pages,
 * from the daemon's comparison of the two block maps (diff.blocks; no table
 * is scanned), each data file named through the branches' catalogs
 * (relfilenode -> relation); files outside base/ and global/ are grouped
 * by directory (pg_wal, pg_xact, ...).
 *
 * Neither option: both.  A branch whose Postgres is not running is started
 * for the comparison (`cowfs pg start`) and stopped afterwards; an
 * on-demand one starts at the first connection.  A snapshot may be named
 * in --data, not in --schema (no Postgres runs on a snapshot).
 *
 * Exit status: 0 (with --exit-code: no difference), 1 failure, or with
 * --exit-code a difference, 2 bad usage.
 */
#ifndef COW_CLI_DIFF_H
#define COW_CLI_DIFF_H
int cmd_diff(int argc, char **argv);
#endif
