/* cowfs-git — `cowfs git ...` as a program of its own, so that libgit2 (and
 * the twenty libraries it loads, some 4 ms at every start) is loaded only by
 * the git commands, not by every `cowfs branch create`.  `cowfs git ARGS`
 * execs this with ARGV = { path, "git", ARGS } and COWFS_PROGRAM naming the
 * cowfs program, which the git commands run for branch and pg work
 * (subcmd.h).  Not meant to be run by hand.
 */
#include "gitcli.h"
#include "util.h"

int main(int argc, char **argv)
{
	cow_msg_set_prefix("cowfs");
	return gitcli_main(argc - 1, argv + 1);
}
