#!/bin/bash
# tests/pg/acked_writer.sh PORT OUT — helper for tests/pg/crash.sh, not a test.
#
# One long-lived psql connection inserts 1, 2, 3, ... into acked(id), each in its own
# autocommit transaction (synchronous_commit = on), one statement in flight at a time.
# An id is appended to OUT only once psql has printed the RETURNING row, which it does
# only after the server's CommandComplete for the statement, and in the simple query
# protocol Postgres sends CommandComplete only after the implicit COMMIT has been
# flushed (exec_simple_query: finish_xact_command() before EndCommand()). So every id
# in OUT is an acknowledged commit. Runs until the connection is lost (psql exits with
# ON_ERROR_STOP), then exits.
port=$1 out=$2
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
: >"$out"
{
	echo "SET synchronous_commit = on;"
	i=1
	while :; do
		echo "INSERT INTO acked VALUES ($i) RETURNING id;" || exit 0
		i=$((i + 1))
	done
} | runuser -u postgres -- stdbuf -oL "$PGBIN/psql" -X -q -At -h /tmp -p "$port" -d postgres -v ON_ERROR_STOP=1 |
	while IFS= read -r line; do
		case $line in
		'' | *[!0-9]*) echo "acked_writer: unexpected psql output: $line" >&2 ;;
		*) echo "$line" >>"$out" ;;
		esac
	done
echo "acked_writer: psql exited; $(wc -l <"$out") acknowledged ids recorded" >&2
