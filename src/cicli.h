/* cicli — `cowfs ci run`: one throw-away database branch for one command.
 *
 *   cowfs ci run [--from BRANCH] [--name NAME] [--keep-on-failure]
 *                [--store STORE | --mount MOUNTPOINT] [--] COMMAND [ARGS...]
 *
 * Creates NAME (default ci-XXXXXXXX, random) from BRANCH (default main),
 * starts Postgres on it (`cowfs pg start`), runs COMMAND with PGHOST,
 * PGPORT, PGDATABASE, PGUSER, DATABASE_URL and COWFS_BRANCH in its
 * environment, and deletes the branch (`cowfs branch delete --now`, which
 * stops Postgres first and skips the trash) on every path: COMMAND succeeded, failed, was killed, or
 * we were sent SIGINT, SIGTERM or SIGHUP (forwarded to COMMAND unless the
 * terminal sent it to the whole process group already; we wait for
 * COMMAND, clean up, and exit 128+N).  --keep-on-failure keeps the branch,
 * with Postgres running, when COMMAND fails, and prints its name and
 * connection settings on stderr.
 *
 * Exit status: COMMAND's; 128+N if it was killed by signal N, or we were;
 * 125 if cowfs ci itself failed (setup, or the cleanup after a successful
 * COMMAND); 126 COMMAND not executable, 127 not found; 2 bad usage.
 */
#ifndef COW_CICLI_H
#define COW_CICLI_H

int cicli_main(int argc, char **argv);
#endif
