/* Unit tests of a store's branch lifecycle without a mount (fs.h): snapshots
 * and restore, delete into the trash and undelete, the reaper's expiry and
 * grace period at chosen instants, and that each survives a reopen. */
#include <time.h>

#include "branch.h"
#include "diff.h"
#include "fs.h"
#include "ref.h"
#include "testutil.h"

struct env {
	char *tmp, *path;
	struct cow_fs *fs;
};

static void env_open(struct env *e)
{
	ck_assert_int_eq(cow_fs_open(e->path, &e->fs), 0);
}

static void env_new(struct env *e)
{
	e->path = tu_store_path(&e->tmp);
	ck_assert_int_eq(cow_fs_init(e->path, 0, 0), 0);
	env_open(e);
}

static void env_reopen(struct env *e)
{
	ck_assert_int_eq(cow_fs_close(e->fs), 0);
	env_open(e);
}

static void env_free(struct env *e)
{
	ck_assert_int_eq(cow_fs_close(e->fs), 0);
	tu_rmrf(e->tmp);
	free(e->tmp);
	free(e->path);
}

/* The state NAME of KIND.  Held only for the lookup: these tests use it
 * from one thread and never after deleting or replacing it. */
static struct cow_branch *state(struct env *e, enum cow_ref_kind kind, const char *name)
{
	unsigned slot;
	struct cow_branch *b = cow_fs_hold_name(e->fs, kind, name, &slot);
	ck_assert_ptr_nonnull(b);
	cow_fs_release(e->fs, slot);
	return b;
}

static struct cow_branch *branch(struct env *e, const char *name) { return state(e, COW_REF_BRANCH, name); }

static unsigned slot_of(struct env *e, const char *name)
{
	unsigned slot;
	ck_assert_int_eq(cow_fs_branch_find(e->fs, name, &slot), 0);
	return slot;
}

/* Write TEXT as the whole of file F at the root of branch NAME. */
static int put(struct env *e, const char *name, const char *text)
{
	struct cow_branch *b = branch(e, name);
	struct cow_attr a;
	int r = cow_branch_lookup(b, COW_ROOT_INO, "f", &a);
	if (r == -ENOENT)
		r = cow_branch_mknod(b, COW_ROOT_INO, "f", S_IFREG | 0644, 0, 0, 0, &a);
	if (r < 0)
		return r;
	struct cow_attr in = { .size = 0 };
	if ((r = cow_branch_setattr(b, a.ino, &in, COW_SET_SIZE, &a)) == 0) {
		ssize_t n = cow_branch_write(b, a.ino, 0, strlen(text), text);
		r = n < 0 ? (int)n : 0;
	}
	cow_branch_forget(b, a.ino, 1);
	return r;
}

/* The content of F in B ("" if there is none). */
static const char *get_in(struct cow_branch *b)
{
	static char buf[256];
	struct cow_attr a;
	buf[0] = 0;
	if (cow_branch_lookup(b, COW_ROOT_INO, "f", &a) < 0)
		return buf;
	ssize_t n = cow_branch_read(b, a.ino, 0, sizeof buf - 1, buf);
	buf[n > 0 ? n : 0] = 0;
	cow_branch_forget(b, a.ino, 1);
	return buf;
}

static const char *get(struct env *e, const char *name) { return get_in(branch(e, name)); }

static struct cow_branch *snapshot(struct env *e, const char *name) { return state(e, COW_REF_SNAPSHOT, name); }

static void create(struct env *e, const char *name, const char *parent, int64_t expires, bool prot)
{
	struct cow_ref ref = { .expires = expires, .protected = prot };
	snprintf(ref.name, sizeof ref.name, "%s", name);
	snprintf(ref.parent, sizeof ref.parent, "%s", parent);
	ck_assert_int_eq(cow_fs_branch_create(e->fs, &ref, NULL, NULL), 0);
}

START_TEST(test_snapshot_restore)
{
	struct env e;
	env_new(&e);
	ck_assert_int_eq(put(&e, "main", "one"), 0);
	struct cow_ref s = { .name = "s1" };
	ck_assert_int_eq(cow_fs_snapshot_create(e.fs, "main", &s, NULL, NULL), 0);
	ck_assert_str_eq(s.parent, "main");
	ck_assert_int_eq(put(&e, "main", "two"), 0);
	ck_assert_str_eq(get_in(snapshot(&e, "s1")), "one");
	ck_assert_str_eq(get(&e, "main"), "two");
	/* read-only */
	struct cow_attr a;
	ck_assert_int_eq(cow_branch_mknod(snapshot(&e, "s1"), COW_ROOT_INO, "g", S_IFREG | 0644, 0, 0, 0, &a), -EROFS);
	ck_assert_int_eq(cow_branch_lookup(snapshot(&e, "s1"), COW_ROOT_INO, "f", &a), 0);
	ck_assert_int_eq(cow_branch_write(snapshot(&e, "s1"), a.ino, 0, 1, "x"), -EROFS);
	ck_assert_int_eq(cow_branch_open_file(snapshot(&e, "s1"), a.ino, O_WRONLY), -EROFS);
	ck_assert_int_eq(cow_branch_open_file(snapshot(&e, "s1"), a.ino, O_RDONLY | O_TRUNC), -EROFS);
	ck_assert_int_eq(cow_branch_open_file(snapshot(&e, "s1"), a.ino, O_RDONLY), 0);
	cow_branch_forget(snapshot(&e, "s1"), a.ino, 1);
	/* same name twice, unknown branch, bad name */
	ck_assert_int_eq(cow_fs_snapshot_create(e.fs, "main", &s, NULL, NULL), -EEXIST);
	struct cow_ref bad = { .name = "x" };
	ck_assert_int_eq(cow_fs_snapshot_create(e.fs, "nope", &bad, NULL, NULL), -ENOENT);
	struct cow_ref badname = { .name = "X" };
	ck_assert_int_eq(cow_fs_snapshot_create(e.fs, "main", &badname, NULL, NULL), -EINVAL);
	/* a branch from the snapshot; restore; both survive a reopen */
	struct cow_ref c = { .name = "fromsnap" };
	ck_assert_int_eq(cow_fs_branch_create_from_snapshot(e.fs, "s1", &c), 0);
	ck_assert_str_eq(c.parent, "main");
	ck_assert_str_eq(get(&e, "fromsnap"), "one");
	pid_t pid;
	struct cow_ref r;
	ck_assert_int_eq(cow_fs_branch_restore(e.fs, "main", "nope", &pid, &r), -ESRCH);
	ck_assert_int_eq(cow_fs_branch_restore(e.fs, "main", "s1", &pid, &r), 0);
	ck_assert_str_eq(get(&e, "main"), "one");
	ck_assert_int_eq(put(&e, "main", "three"), 0);
	env_reopen(&e);
	ck_assert_str_eq(get(&e, "main"), "three");
	ck_assert_str_eq(get_in(snapshot(&e, "s1")), "one");
	ck_assert_str_eq(get(&e, "fromsnap"), "one");
	ck_assert_int_eq(cow_fs_snapshot_delete(e.fs, "s1"), 0);
	ck_assert_int_eq(cow_fs_snapshot_delete(e.fs, "s1"), -ENOENT);
	env_reopen(&e);
	unsigned slot;
	ck_assert_int_eq(cow_fs_snapshot_find(e.fs, "s1", &slot), -ENOENT);
	ck_assert_str_eq(get(&e, "fromsnap"), "one");
	env_free(&e);
}
END_TEST

START_TEST(test_trash_and_undelete)
{
	struct env e;
	env_new(&e);
	create(&e, "a", "main", 0, false);
	ck_assert_int_eq(put(&e, "a", "data of a"), 0);
	pid_t pid;
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "a", false, &pid), 0);
	unsigned slot;
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "a", &slot), -ENOENT);
	/* survives a reopen in the trash, and comes back whole */
	env_reopen(&e);
	struct cow_ref *v, r;
	size_t n;
	ck_assert_int_eq(cow_fs_trash_list(e.fs, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(v[0].name, "a");
	ck_assert_int_gt(v[0].deleted, 0);
	free(v);
	ck_assert_int_eq(cow_fs_branch_undelete(e.fs, "a", &r), 0);
	ck_assert_int_eq(r.deleted, 0);
	ck_assert_str_eq(get(&e, "a"), "data of a");
	ck_assert_int_eq(cow_fs_branch_undelete(e.fs, "a", &r), -EEXIST);
	ck_assert_int_eq(cow_fs_trash_list(e.fs, &v, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(v);
	/* the grace period: kept before it ends, purged after */
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "a", false, &pid), 0);
	int64_t now = time(NULL);
	ck_assert_int_eq(cow_fs_reap(e.fs, now, 100, NULL, NULL), 0);
	ck_assert_int_eq(cow_fs_trash_list(e.fs, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	free(v);
	ck_assert_int_eq(cow_fs_reap(e.fs, now + 101, 100, NULL, NULL), 0);
	ck_assert_int_eq(cow_fs_trash_list(e.fs, &v, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(v);
	ck_assert_int_eq(cow_fs_branch_undelete(e.fs, "a", &r), -ENOENT);
	/* purge at once; the last branch stays */
	create(&e, "b", "main", 0, false);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "b", true, &pid), 0);
	ck_assert_int_eq(cow_fs_branch_undelete(e.fs, "b", &r), -ENOENT);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "main", false, &pid), -ENOTEMPTY);
	env_free(&e);
}
END_TEST

static int make_protected(void *ctx, struct cow_ref *ref)
{
	ref->protected = *(bool *)ctx;
	return 0;
}

START_TEST(test_expiry_and_protection)
{
	struct env e;
	env_new(&e);
	int64_t t = time(NULL) + 1000;
	create(&e, "soon", "main", t, false);
	create(&e, "later", "main", t + 10, false);
	create(&e, "prot", "main", t, true);
	create(&e, "never", "main", 0, false);
	ck_assert_int_eq(cow_fs_reap(e.fs, t - 1, 3600, NULL, NULL), 0);
	unsigned slot;
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "soon", &slot), 0);
	ck_assert_int_eq(cow_fs_reap(e.fs, t, 3600, NULL, NULL), 0);
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "soon", &slot), -ENOENT);
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "later", &slot), 0);
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "prot", &slot), 0);
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "never", &slot), 0);
	/* undeleted, a branch keeps an expiry still ahead of the clock, but one
	 * already past is dropped (else the reaper would take it again) */
	struct cow_ref r;
	ck_assert_int_eq(cow_fs_branch_undelete(e.fs, "soon", &r), 0);
	ck_assert_int_eq(r.expires, t);
	int64_t now = time(NULL);
	create(&e, "past", "main", now - 1, false);
	ck_assert_int_eq(cow_fs_reap(e.fs, now, 3600, NULL, NULL), 0);
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "past", &slot), -ENOENT);
	ck_assert_int_eq(cow_fs_branch_undelete(e.fs, "past", &r), 0);
	ck_assert_int_eq(r.expires, 0);
	/* protection refuses delete, reset and restore; it is kept across a reopen */
	pid_t pid;
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "prot", false, &pid), -EPERM);
	ck_assert_int_eq(cow_fs_branch_reset(e.fs, "prot", &pid, &r), -EPERM);
	struct cow_ref s = { .name = "s" };
	ck_assert_int_eq(cow_fs_snapshot_create(e.fs, "main", &s, NULL, NULL), 0);
	ck_assert_int_eq(cow_fs_branch_restore(e.fs, "prot", "s", &pid, &r), -EPERM);
	env_reopen(&e);
	ck_assert_int_eq(cow_fs_branch_get(e.fs, "prot", &r), 0);
	ck_assert(r.protected);
	ck_assert_int_eq(r.expires, t);
	bool off = false;
	ck_assert_int_eq(cow_fs_branch_update(e.fs, "prot", make_protected, &off, &r), 0);
	ck_assert(!r.protected);
	ck_assert_int_eq(cow_fs_reap(e.fs, t, 3600, NULL, NULL), 0);
	ck_assert_int_eq(cow_fs_branch_find(e.fs, "prot", &slot), -ENOENT);
	env_free(&e);
}
END_TEST

/* Write LEN bytes of byte C at OFF in file NAME of B (created if missing). */
static void fill(struct cow_branch *b, const char *name, off_t off, size_t len, int c)
{
	struct cow_attr a;
	if (cow_branch_lookup(b, COW_ROOT_INO, name, &a) == -ENOENT)
		ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &a), 0);
	char *buf = malloc(len);
	memset(buf, c, len);
	ck_assert_int_eq(cow_branch_write(b, a.ino, off, len, buf), (ssize_t)len);
	free(buf);
	cow_branch_forget(b, a.ino, 1);
}

struct seen {
	char text[1024];
};

static int note(void *ctx, const struct cow_diff_entry *e)
{
	struct seen *s = ctx;
	size_t l = strlen(s->text);
	snprintf(s->text + l, sizeof s->text - l, "%s:%d%d:%llu:%llu:%llu ", e->path, e->in_a, e->in_b,
		 (unsigned long long)e->size_a, (unsigned long long)e->size_b, (unsigned long long)e->changed);
	return 0;
}

START_TEST(test_diff_blocks)
{
	struct env e;
	env_new(&e);
	struct cow_branch *m = branch(&e, "main");
	fill(m, "big", 0, 10 * 8192, 'a');
	fill(m, "same", 0, 3 * 8192, 's');
	fill(m, "gone", 0, 100, 'g');
	struct cow_attr d;
	ck_assert_int_eq(cow_branch_mknod(m, COW_ROOT_INO, "dir", S_IFDIR | 0755, 0, 0, 0, &d), 0);
	ck_assert_int_eq(cow_branch_mknod(m, d.ino, "inner", S_IFREG | 0644, 0, 0, 0, &d), 0);
	create(&e, "child", "main", 0, false);
	struct cow_branch *c = branch(&e, "child");
	struct seen s = { "" };
	ck_assert_int_eq(cow_fs_checkpoint(e.fs), 0);
	ck_assert_int_eq(cow_diff_branches(m, c, note, &s), 0);
	ck_assert_str_eq(s.text, ""); /* a fresh child differs in nothing */
	fill(c, "big", 2 * 8192 + 100, 10, 'b');  /* one block changed */
	fill(c, "big", 12 * 8192, 8192, 'c');     /* one more past a one-block hole */
	fill(c, "new", 0, 8192 + 1, 'n');         /* two blocks, only in child */
	ck_assert_int_eq(cow_branch_unlink(c, COW_ROOT_INO, "gone"), 0);
	ck_assert_int_eq(cow_fs_checkpoint(e.fs), 0);
	ck_assert_int_eq(cow_diff_branches(m, c, note, &s), 0);
	ck_assert_str_eq(s.text, "big:11:81920:106496:2 gone:10:100:0:1 new:01:0:8193:2 ");
	/* without a checkpoint (maps dirty) the answer is the same, block by block */
	fill(c, "same", 8192, 1, 'x');
	s.text[0] = 0;
	ck_assert_int_eq(cow_diff_branches(m, c, note, &s), 0);
	ck_assert_str_eq(s.text, "big:11:81920:106496:2 gone:10:100:0:1 new:01:0:8193:2 same:11:24576:24576:1 ");
	env_free(&e);
}
END_TEST

/* A deleted or reset branch that nothing holds is freed at once: a daemon
 * that serves CI deletes branches all day. */
START_TEST(test_gone_memory_released)
{
	struct env e;
	env_new(&e);
	for (int round = 0; round < 2; round++) {
		create(&e, "ci", "main", 0, false);
		struct cow_branch *b = branch(&e, "ci");
		for (int i = 0; i < 3000; i++) {
			char name[32];
			struct cow_attr a;
			snprintf(name, sizeof name, "f%d", i);
			ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &a), 0);
			ck_assert_int_eq(cow_branch_write(b, a.ino, 0, 5, "hello"), 5);
			cow_branch_forget(b, a.ino, 1);
		}
		struct cow_fs_stats before, after;
		cow_fs_get_stats(e.fs, &before);
		pid_t pid;
		struct cow_ref r;
		if (round == 0) {
			ck_assert_int_eq(cow_fs_branch_delete(e.fs, "ci", true, &pid), 0);
		} else {
			ck_assert_int_eq(cow_fs_branch_reset(e.fs, "ci", &pid, &r), 0);
			ck_assert_int_eq(cow_fs_branch_delete(e.fs, "ci", true, &pid), 0);
		}
		cow_fs_get_stats(e.fs, &after);
		ck_assert_uint_gt(before.branch_bytes, 1000000);
		ck_assert_uint_eq(after.gone_bytes, 0);
		ck_assert_uint_lt(after.branch_bytes, before.branch_bytes / 5);
	}
	env_free(&e);
}
END_TEST

/* A slot goes to a new state only once nothing can reach the old one
 * through it: no request holds it and the kernel has forgotten its node
 * ids.  Then it is reused, so creating and deleting for ever takes no more
 * slots than there are states at once. */
START_TEST(test_slots_reused)
{
	struct env e;
	env_new(&e);
	pid_t pid;
	create(&e, "a", "main", 0, false);
	unsigned sa = slot_of(&e, "a");
	struct cow_branch *held = cow_fs_hold(e.fs, sa); /* a request in flight on a */
	ck_assert_ptr_nonnull(held);
	ck_assert_int_eq(put(&e, "a", "in a"), 0);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "a", true, &pid), 0);
	ck_assert_ptr_null(cow_fs_hold(e.fs, sa)); /* new requests find it stale */
	struct cow_fs_stats st;
	cow_fs_get_stats(e.fs, &st);
	ck_assert_uint_gt(st.gone_bytes, 0);
	ck_assert_str_eq(get_in(held), "in a"); /* the holder may still use it */
	create(&e, "b", "main", 0, false);
	unsigned sb = slot_of(&e, "b");
	ck_assert_uint_ne(sb, sa);
	cow_fs_release(e.fs, sa); /* the last release frees it */
	cow_fs_get_stats(e.fs, &st);
	ck_assert_uint_eq(st.gone_bytes, 0);

	cow_fs_slot_refs(e.fs, sb, 2); /* the kernel was given two node ids in b */
	cow_fs_slot_refs(e.fs, sb, -1);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "b", true, &pid), 0);
	create(&e, "c", "main", 0, false);
	ck_assert_uint_eq(slot_of(&e, "c"), sa); /* free again */
	create(&e, "d", "main", 0, false);
	ck_assert_uint_ne(slot_of(&e, "d"), sb); /* the kernel may still use one */
	cow_fs_slot_refs(e.fs, sb, -1);
	create(&e, "e", "main", 0, false);
	ck_assert_uint_eq(slot_of(&e, "e"), sb);
	ck_assert_str_eq(get(&e, "e"), ""); /* nothing of b or a shows through */

	unsigned limit = cow_fs_slot_limit(e.fs);
	for (int i = 0; i < 200; i++) {
		char name[16];
		snprintf(name, sizeof name, "ci%d", i % 3);
		create(&e, name, "main", 0, false);
		ck_assert_int_eq(put(&e, name, name), 0);
		if (i >= 2) {
			snprintf(name, sizeof name, "ci%d", (i - 2) % 3);
			ck_assert_int_eq(cow_fs_branch_delete(e.fs, name, true, &pid), 0);
		}
	}
	ck_assert_uint_le(cow_fs_slot_limit(e.fs), limit + 3); /* three at once */
	env_free(&e);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fs");
	TCase *tc = tcase_create("lifecycle");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_snapshot_restore);
	tcase_add_test(tc, test_trash_and_undelete);
	tcase_add_test(tc, test_expiry_and_protection);
	tcase_add_test(tc, test_diff_blocks);
	tcase_add_test(tc, test_gone_memory_released);
	tcase_add_test(tc, test_slots_reused);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
