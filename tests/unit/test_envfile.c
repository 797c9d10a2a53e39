/* Unit tests of cowfs's block in an env file (envfile.h): every byte
 * outside the block kept, the block replaced in place, appended once,
 * removed; line ends as the file's; a broken block refused; and the
 * atomic write keeps the mode, the owner and a symbolic link. */
#include <stdio.h>
#include <sys/stat.h>

#include "envfile.h"
#include "testutil.h"

static const char *BODY = "PGHOST=/run/cowfs/ab12cd34/dev\nPGPORT=10001\nPGDATABASE=postgres\nPGUSER=postgres\n"
			  "DATABASE_URL=postgresql://postgres@127.0.0.1:10001/postgres\n";

static char *update(const char *old, const char *title, const char *body, size_t *len)
{
	char *out;
	size_t n;
	ck_assert_int_eq(cow_envfile_update(old, old ? strlen(old) : 0, title, body, &out, &n), 0);
	ck_assert_uint_eq(strlen(out), n);
	if (len)
		*len = n;
	return out;
}

START_TEST(test_new_file)
{
	char *out = update(NULL, "database branch dev", "A=1\nB=2\n", NULL);
	ck_assert_str_eq(out, "# >>> cowfs: database branch dev\nA=1\nB=2\n# <<< cowfs\n");
	free(out);
	/* no title, a body without its last line end and with CRs */
	out = update("", NULL, "A=1\r\nB=2", NULL);
	ck_assert_str_eq(out, "# >>> cowfs\nA=1\nB=2\n# <<< cowfs\n");
	free(out);
}
END_TEST

START_TEST(test_append_keeps_bytes)
{
	const char *user = "# my settings\nSECRET_KEY=\"s3cr=t # not a comment\"\n\nexport PATH_X=/opt/x\nPGPORT=5432\n"
			   "UNICODE=gr\xc3\xbc\xc3\x9f" "e\n   \n";
	char *out = update(user, "t", BODY, NULL);
	ck_assert(strncmp(out, user, strlen(user)) == 0);
	ck_assert_str_eq(out + strlen(user), "# >>> cowfs: t\nPGHOST=/run/cowfs/ab12cd34/dev\nPGPORT=10001\n"
					     "PGDATABASE=postgres\nPGUSER=postgres\n"
					     "DATABASE_URL=postgresql://postgres@127.0.0.1:10001/postgres\n# <<< cowfs\n");
	/* the same again changes nothing */
	char *again = update(out, "t", BODY, NULL);
	ck_assert_str_eq(again, out);
	free(again);
	free(out);
	/* a last line without its end gets one before the block */
	out = update("A=1", "t", "X=2\n", NULL);
	ck_assert_str_eq(out, "A=1\n# >>> cowfs: t\nX=2\n# <<< cowfs\n");
	free(out);
}
END_TEST

START_TEST(test_replace_in_place)
{
	const char *before = "A=1\n# keep me\n";
	const char *after = "\nB=2\nC=3 # trailing\n";
	char old[512];
	snprintf(old, sizeof old, "%s# >>> cowfs: database branch main\nPGPORT=10000\nPGHOST=/x\n# <<< cowfs\n%s", before,
		 after);
	char *out = update(old, "database branch dev", "PGPORT=10001\n", NULL);
	char want[512];
	snprintf(want, sizeof want, "%s# >>> cowfs: database branch dev\nPGPORT=10001\n# <<< cowfs\n%s", before, after);
	ck_assert_str_eq(out, want);
	free(out);
	/* the end line without a line end (last line of the file) */
	out = update("A=1\n# >>> cowfs\nX=1\n# <<< cowfs", NULL, "X=2\n", NULL);
	ck_assert_str_eq(out, "A=1\n# >>> cowfs\nX=2\n# <<< cowfs\n");
	free(out);
	/* a later block (left by a hand merge) goes; the first one is replaced */
	out = update("# >>> cowfs\nX=1\n# <<< cowfs\nA=1\n# >>> cowfs: old\nX=0\n# <<< cowfs\nB=2\n", "n", "X=2\n", NULL);
	ck_assert_str_eq(out, "# >>> cowfs: n\nX=2\n# <<< cowfs\nA=1\nB=2\n");
	free(out);
	/* lines that only look alike are the user's */
	const char *alike = "# >>> cowfsish\n#>>> cowfs\n# <<< cowfs is not a start\nA=1\n";
	out = update(alike, NULL, "X=1\n", NULL);
	ck_assert(strncmp(out, alike, strlen(alike)) == 0);
	free(out);
}
END_TEST

START_TEST(test_crlf)
{
	const char *old = "A=1\r\nB=2\r\n";
	char *out = update(old, "t", "X=1\nY=2\n", NULL);
	ck_assert_str_eq(out, "A=1\r\nB=2\r\n# >>> cowfs: t\r\nX=1\r\nY=2\r\n# <<< cowfs\r\n");
	char *again = update(out, "t", "X=3\n", NULL);
	ck_assert_str_eq(again, "A=1\r\nB=2\r\n# >>> cowfs: t\r\nX=3\r\n# <<< cowfs\r\n");
	char *body;
	ck_assert_int_eq(cow_envfile_block(again, strlen(again), &body), 0);
	ck_assert_str_eq(body, "X=3\n");
	free(body);
	free(again);
	free(out);
}
END_TEST

START_TEST(test_remove_and_broken)
{
	char *out = update("A=1\n# >>> cowfs\nX=1\n# <<< cowfs\nB=2\n", NULL, "", NULL);
	ck_assert_str_eq(out, "A=1\nB=2\n");
	free(out);
	out = update("A=1\n", NULL, NULL, NULL);
	ck_assert_str_eq(out, "A=1\n");
	free(out);
	/* a start without an end, or a start inside a block: not ours to guess */
	char *r = (char *)1;
	size_t n;
	const char *broken[] = { "A=1\n# >>> cowfs\nX=1\n", "# >>> cowfs\n# >>> cowfs\nX=1\n# <<< cowfs\n" };
	for (size_t i = 0; i < 2; i++) {
		ck_assert_int_eq(cow_envfile_update(broken[i], strlen(broken[i]), NULL, "X=2\n", &r, &n), -EBADMSG);
		ck_assert_int_eq(cow_envfile_block(broken[i], strlen(broken[i]), &r), -EBADMSG);
	}
	ck_assert_int_eq(cow_envfile_block("A=1\n", 4, &r), -ENOENT);
	/* NUL bytes in the user's part are kept too */
	const char nul[] = "A=1\0B\nC=2\n";
	ck_assert_int_eq(cow_envfile_update(nul, sizeof nul - 1, NULL, "X=1\n", &r, &n), 0);
	ck_assert_uint_eq(n, sizeof nul - 1 + strlen("# >>> cowfs\nX=1\n# <<< cowfs\n"));
	ck_assert(memcmp(r, nul, sizeof nul - 1) == 0);
	free(r);
}
END_TEST

static char *slurp(const char *path, size_t *len)
{
	char *buf;
	size_t n;
	ck_assert_int_eq(cow_envfile_read(path, &buf, &n), 0);
	if (len)
		*len = n;
	return buf;
}

START_TEST(test_write)
{
	char *dir = tu_tmpdir(), path[512], link[512], cmd[600];
	snprintf(path, sizeof path, "%s/.env", dir);
	size_t n;
	ck_assert_ptr_null(slurp(path, &n));
	ck_assert_uint_eq(n, 0);
	/* a new file: 0666 less the umask */
	mode_t old_mask = umask(027);
	ck_assert_int_eq(cow_envfile_write(path, "A=1\n", 4), 0);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0640);
	/* an existing file keeps its mode and, as root, its owner */
	ck_assert_int_eq(chmod(path, 0600), 0);
	bool root = geteuid() == 0;
	if (root)
		ck_assert_int_eq(chown(path, 4321, 4322), 0);
	ck_assert_int_eq(cow_envfile_write(path, "A=2\n", 4), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	if (root) {
		ck_assert_uint_eq(st.st_uid, 4321);
		ck_assert_uint_eq(st.st_gid, 4322);
	}
	char *text = slurp(path, NULL);
	ck_assert_str_eq(text, "A=2\n");
	free(text);
	/* through a relative symbolic link: the link stays, its target changes */
	snprintf(link, sizeof link, "%s/link.env", dir);
	ck_assert_int_eq(symlink(".env", link), 0);
	ck_assert_int_eq(cow_envfile_write(link, "A=3\n", 4), 0);
	ck_assert_int_eq(lstat(link, &st), 0);
	ck_assert(S_ISLNK(st.st_mode));
	text = slurp(path, NULL);
	ck_assert_str_eq(text, "A=3\n");
	free(text);
	/* nothing else left in the directory (no temp file) */
	snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s' | tr '\\n' ' ')\" = '.env link.env '", dir);
	ck_assert_int_eq(system(cmd), 0);
	/* a directory is not an env file */
	snprintf(path, sizeof path, "%s/sub", dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	ck_assert_int_eq(cow_envfile_write(path, "A=1\n", 4), -EINVAL);
	umask(old_mask);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("envfile");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_new_file);
	tcase_add_test(tc, test_append_keeps_bytes);
	tcase_add_test(tc, test_replace_in_place);
	tcase_add_test(tc, test_crlf);
	tcase_add_test(tc, test_remove_and_broken);
	tcase_add_test(tc, test_write);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
