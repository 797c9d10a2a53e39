# bench/lib.sh — what the benches share; sourced after tests/lib.sh.

# Free page reporting: a VM's kernel may give the memory it frees back to
# its host (virtio-balloon), and a page the host took back costs a fault in
# the host when the kernel next hands it out.  On this project's machines
# 1.5 GB of page cache costs 0.4 s of CPU written into memory freed just
# before, and 2.4 s written into memory freed 30 s before: which side of a
# phase meets the colder memory depends on the order and the pauses
# between them, not on cowfs: with COWFS_PLAIN=1 (two identical sides) it
# gave load ratios from 0.68 to 1.13, and 0.97 with it off.  So while a
# bench runs, the kernel reports no free memory to the host (as on bare
# metal) and the setting is put back at exit (not after a kill -9: then
# write the old order, 9 here, back by hand).  BENCH_PAGE_REPORTING=on
# keeps it.
PR_KNOB=/sys/module/page_reporting/parameters/page_reporting_order
PR_SAVED=
PR_STATE="no free page reporting on this machine"

# Turn reporting off (sets PR_STATE, a line for the bench's header); it is
# put back at exit (on_exit, tests/lib.sh).
bench_quiet_memory() {
	if [ -w "$PR_KNOB" ]; then
		if [ "${BENCH_PAGE_REPORTING:-off}" = on ]; then
			PR_STATE="free page reporting to the host left on (BENCH_PAGE_REPORTING=on)"
		else
			PR_SAVED=$(cat "$PR_KNOB")
			echo 11 >"$PR_KNOB" || { echo "cannot write $PR_KNOB" >&2; exit 1; }
			PR_STATE="free page reporting to the host off while the bench runs (order $PR_SAVED -> 11)"
		fi
	fi
	on_exit pr_restore
}
pr_restore() { [ -z "$PR_SAVED" ] || echo "$PR_SAVED" >"$PR_KNOB"; }
