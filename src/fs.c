#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "branch.h"
#include "log.h"
#include "pg.h"
#include "postmaster.h"
#include "ref.h"
#include "store.h"
#include "util.h"

/* Checkpoint a dirty branch at least this often in log bytes, to bound replay. */
#define CHECKPOINT_LOG_BYTES (256ull << 20)

/* A slot is free for a new state once its last one has left (branch and
 * gone NULL), nobody holds it and the kernel has forgotten every node id
 * in it: only then can no request meant for the old state reach the new. */
struct slot {
	enum cow_ref_kind kind;    /* COW_REF_BRANCH or COW_REF_SNAPSHOT */
	struct cow_branch *branch; /* NULL: free, or deleted */
	struct cow_branch *gone;   /* a deleted or replaced state that requests
				    * still hold: freed by the last release */
	unsigned users;            /* holds not yet released (fs->lock) */
	int64_t kernel_refs;       /* node ids the kernel was given less those it
				    * forgot (fs->lock); see cow_fs_slot_refs */
	struct cow_ref ref;        /* protected by ckpt_lock; written also under lock */
};

struct cow_fs {
	struct cow_store *store;
	pthread_mutex_t lock;     /* protects nslots and slot assignment */
	pthread_mutex_t ckpt_lock; /* serialises checkpoints and ref writes; taken before a branch lock */
	unsigned nslots;
	struct slot slots[COW_FS_MAX_BRANCHES];
	pthread_t ckpt_thread;
	bool ckpt_running, ckpt_stop;
	pthread_cond_t ckpt_cond;
	unsigned ckpt_interval;
	uint64_t last_ckpt_end;
	/* the expiry reaper (protected by lock, except the thread) */
	pthread_t reap_thread;
	bool reap_running;
	unsigned reap_interval;
	int64_t grace;
	cow_fs_reap_fn reap_report;
	void *reap_ctx;
	/* the cleaner: GC by itself (protected by lock, except the thread) */
	pthread_t clean_thread;
	bool clean_running;
	struct cow_gc_auto autogc;
	struct cow_fs_reclaimed reclaimed; /* early reclaim since the mount */
	/* segments the cleaner kept for a damaged object (cow_fs_reclaim only) */
#define COW_FS_KEPT_MAX 32
	uint32_t kept[COW_FS_KEPT_MAX];
	unsigned nkept;
	/* one marking pass (gc, df, fsck) at a time: a second one waits */
	pthread_mutex_t pass_lock;
};

static int pg_pick_port(struct cow_fs *fs, uint16_t *ret);
static int pg_settle_child(struct cow_fs *fs, struct cow_branch *child, struct cow_ref *ref, struct slot *old);

int cow_fs_init(const char *path, uint32_t uid, uint32_t gid)
{
	int r = cow_store_create(path);
	if (r < 0)
		return r;
	struct cow_store *s;
	if ((r = cow_store_open(path, &s)) < 0) {
		char super[4096];
		snprintf(super, sizeof super, "%s/cowfs.super", path);
		unlink(super);
		return r;
	}
	struct cow_branch *b = NULL;
	struct cow_ref ref = { .name = "main", .id = 1, .created = time(NULL), .owner = uid };
	r = cow_branch_open(s, ref.id, &cow_hash_zero, cow_store_log_end(s), &b);
	if (r == 0)
		r = cow_branch_init_root(b, 0700, uid, gid);
	if (r == 0)
		r = cow_branch_checkpoint(b, &ref.root, &ref.log_pos);
	if (r == 0)
		r = cow_ref_write(path, COW_REF_BRANCH, &ref);
	cow_branch_free(b);
	cow_store_close(s);
	if (r < 0) {
		/* Without its superblock the directory is no store, and init may be tried again. */
		char super[4096];
		snprintf(super, sizeof super, "%s/cowfs.super", path);
		unlink(super);
	}
	return r;
}

int cow_fs_open(const char *path, struct cow_fs **ret)
{
	struct cow_fs *fs = calloc(1, sizeof *fs);
	if (!fs)
		return -ENOMEM;
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->ckpt_lock, NULL);
	pthread_cond_init(&fs->ckpt_cond, NULL);
	pthread_mutex_init(&fs->pass_lock, NULL);
	fs->nslots = 1;
	fs->grace = COW_FS_GRACE_DEFAULT;
	char **names = NULL;
	size_t n = 0;
	/* Every ref is read and checked before the store is opened: opening
	 * recovers the log, and bad input must change nothing. */
	int r = cow_ref_list(path, COW_REF_BRANCH, &names, &n);
	if (r < 0)
		goto fail;
	if (n == 0 && access(path, F_OK) == 0) {
		char super[4096];
		snprintf(super, sizeof super, "%s/cowfs.super", path);
		if (access(super, F_OK) == 0) {
			cow_err("%s: the store has no branches (refs/branches/ is empty)", path);
			r = -EBADMSG;
			goto fail;
		}
	}
	if (n >= COW_FS_MAX_BRANCHES) {
		cow_err("%s: more than %d branches", path, COW_FS_MAX_BRANCHES - 1);
		r = -ENOSPC;
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		if ((r = cow_ref_read(path, COW_REF_BRANCH, names[i], &fs->slots[i + 1].ref)) < 0)
			goto fail;
	size_t nb = n;
	cow_ref_names_free(names, n);
	names = NULL;
	if ((r = cow_ref_list(path, COW_REF_SNAPSHOT, &names, &n)) < 0)
		goto fail;
	if (nb + n >= COW_FS_MAX_BRANCHES) {
		cow_err("%s: more than %d branches and snapshots", path, COW_FS_MAX_BRANCHES - 1);
		r = -ENOSPC;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		fs->slots[nb + 1 + i].kind = COW_REF_SNAPSHOT;
		if ((r = cow_ref_read(path, COW_REF_SNAPSHOT, names[i], &fs->slots[nb + 1 + i].ref)) < 0)
			goto fail;
	}
	if ((r = cow_store_open(path, &fs->store)) < 0)
		goto fail;
	for (size_t i = 0; i < nb + n; i++) {
		struct slot *sl = &fs->slots[fs->nslots];
		/* A snapshot is a checkpoint: nothing of it is in the log to replay. */
		bool snap = sl->kind == COW_REF_SNAPSHOT;
		uint64_t pos = snap ? cow_store_log_end(fs->store) : sl->ref.log_pos;
		r = cow_branch_open(fs->store, sl->ref.id, &sl->ref.root, pos, &sl->branch);
		if (r < 0) {
			cow_err("%s: %s %s cannot be loaded: %s", path, snap ? "snapshot" : "branch", sl->ref.name,
				strerror(-r));
			goto fail;
		}
		if (snap)
			cow_branch_set_readonly(sl->branch);
		fs->nslots++;
	}
	cow_ref_names_free(names, n);
	fs->last_ckpt_end = cow_store_log_end(fs->store);
	*ret = fs;
	return 0;
fail:
	cow_ref_names_free(names, n);
	for (unsigned i = 1; i < fs->nslots; i++)
		cow_branch_free(fs->slots[i].branch);
	cow_store_close(fs->store);
	free(fs);
	return r;
}

static int checkpoint_slot(struct cow_fs *fs, struct slot *sl)
{
	struct cow_ref ref = sl->ref;
	int r = cow_branch_checkpoint(sl->branch, &ref.root, &ref.log_pos);
	if (r == 0 && (!cow_hash_eq(&ref.root, &sl->ref.root) || ref.log_pos != sl->ref.log_pos)) {
		r = cow_ref_write(cow_store_path(fs->store), sl->kind, &ref);
		if (r == 0)
			sl->ref = ref;
	}
	if (r < 0)
		cow_err("checkpoint of branch %s failed: %s", sl->ref.name, strerror(-r));
	return r;
}

int cow_fs_checkpoint(struct cow_fs *fs)
{
	int r = 0;
	pthread_mutex_lock(&fs->ckpt_lock);
	pthread_mutex_lock(&fs->lock);
	unsigned n = fs->nslots;
	pthread_mutex_unlock(&fs->lock);
	uint64_t end = cow_store_log_end(fs->store);
	for (unsigned i = 1; i < n; i++) {
		struct slot *sl = &fs->slots[i];
		if (sl->branch && cow_branch_dirty(sl->branch)) {
			int q = checkpoint_slot(fs, sl);
			if (q < 0 && r == 0)
				r = q;
		}
	}
	if (r == 0)
		fs->last_ckpt_end = end;
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r;
}

static uint64_t log_distance(uint64_t from, uint64_t to)
{
	/* positions are segment:offset; count whole segments as full */
	uint64_t segs = (to >> 32) - (from >> 32);
	return segs * COW_LOG_SEGMENT_MAX + (uint32_t)to - (uint32_t)from;
}

/* With lock held: wait SEC seconds, or less if cow_fs_close wakes the
 * background threads; true if they are to stop. */
static bool nap(struct cow_fs *fs, unsigned sec)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += sec;
	if (!fs->ckpt_stop)
		pthread_cond_timedwait(&fs->ckpt_cond, &fs->lock, &ts);
	return fs->ckpt_stop;
}

static void *checkpointer(void *arg)
{
	struct cow_fs *fs = arg;
	time_t last = time(NULL);
	pthread_mutex_lock(&fs->lock);
	while (!nap(fs, 1)) {
		time_t t = time(NULL);
		bool due = t - last >= (time_t)fs->ckpt_interval ||
			   log_distance(fs->last_ckpt_end, cow_store_log_end(fs->store)) >= CHECKPOINT_LOG_BYTES;
		if (!due)
			continue;
		pthread_mutex_unlock(&fs->lock);
		cow_fs_checkpoint(fs);
		last = time(NULL);
		pthread_mutex_lock(&fs->lock);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

int cow_fs_start_checkpointer(struct cow_fs *fs, unsigned interval_sec)
{
	fs->ckpt_interval = interval_sec ? interval_sec : 30;
	int r = pthread_create(&fs->ckpt_thread, NULL, checkpointer, fs);
	if (r)
		return -r;
	fs->ckpt_running = true;
	return 0;
}

int cow_fs_note_pid(struct cow_fs *fs) { return cow_store_note_pid(fs->store); }

static void *reaper(void *arg)
{
	struct cow_fs *fs = arg;
	pthread_mutex_lock(&fs->lock);
	while (!nap(fs, fs->reap_interval)) {
		int64_t grace = fs->grace;
		pthread_mutex_unlock(&fs->lock);
		cow_fs_reap(fs, time(NULL), grace, fs->reap_report, fs->reap_ctx);
		pthread_mutex_lock(&fs->lock);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

int cow_fs_start_reaper(struct cow_fs *fs, unsigned interval_sec, cow_fs_reap_fn report, void *ctx)
{
	fs->reap_interval = interval_sec ? interval_sec : 60;
	fs->reap_report = report;
	fs->reap_ctx = ctx;
	int r = pthread_create(&fs->reap_thread, NULL, reaper, fs);
	if (r)
		return -r;
	fs->reap_running = true;
	return 0;
}

#define CLEAN_CHECK_SEC 5

static bool stopping(struct cow_fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	bool stop = fs->ckpt_stop;
	pthread_mutex_unlock(&fs->lock);
	return stop;
}

struct fs_root;
static int collect_roots(struct cow_fs *fs, struct fs_root **ret, size_t *ret_n, uint64_t *ret_limit);

static bool was_kept(const struct cow_fs *fs, uint32_t seg)
{
	for (unsigned i = 0; i < fs->nkept; i++)
		if (fs->kept[i] == seg)
			return true;
	return false;
}

/* The cleaner kept SEG for a damaged object (cow_gc_rewrite's kept). */
static void note_kept(void *ctx, uint32_t seg)
{
	struct cow_fs *fs = ctx;
	if (was_kept(fs, seg))
		return;
	if (fs->nkept == COW_FS_KEPT_MAX) /* the oldest is tried once more */
		memmove(fs->kept, fs->kept + 1, --fs->nkept * sizeof *fs->kept);
	fs->kept[fs->nkept++] = seg;
}

/* Segments below LIMIT (not the head) that are mostly forgotten, into
 * TODO (allocated), but not one kept before for a damaged object until it
 * is old; *RET_OLD_END: those below it are old (log.h). */
static size_t clean_candidates(struct cow_fs *fs, uint32_t limit, uint32_t **todo, uint32_t *ret_old_end)
{
	struct cow_store *s = fs->store;
	struct cow_log_segment *v;
	size_t n, k = 0;
	*todo = NULL;
	*ret_old_end = 0;
	if (cow_store_segments(s, &v, &n) < 0)
		return 0;
	if (n && (*todo = malloc(n * sizeof **todo)))
		for (size_t i = 0; i + 1 < n && v[i].seg < limit; i++) {
			uint32_t objects;
			uint64_t bytes, size = COW_MAX(v[i].disk, (uint64_t)v[i].used);
			if (v[i].old)
				*ret_old_end = v[i].seg + 1;
			cow_store_segment_usage(s, v[i].seg, &objects, &bytes);
			if (bytes * 100 < size * COW_FS_CLEAN_PCT && (v[i].old || !was_kept(fs, v[i].seg)))
				(*todo)[k++] = v[i].seg;
		}
	free(v);
	return k;
}

void cow_fs_set_reclaim(struct cow_fs *fs, bool on) { cow_store_set_reclaim(fs->store, on); }

int cow_fs_reclaim(struct cow_fs *fs, struct cow_fs_reclaim_stats *ret)
{
	*ret = (struct cow_fs_reclaim_stats){ 0 };
	if (!cow_store_reclaim_on(fs->store))
		return 0;
	struct cow_store_forgot f = { 0 };
	int r = 0;
	unsigned nslots = cow_fs_slot_limit(fs);
	/* Not while a pass (GC, df, fsck) walks roots it took: one of a live
	 * branch's own checkpoints may name what the branch replaced since. */
	pthread_mutex_lock(&fs->pass_lock);
	for (unsigned i = 1; i < nslots && r == 0; i++) {
		struct cow_branch *b = cow_fs_hold(fs, i);
		if (b) {
			r = cow_branch_reclaim(b, &f);
			cow_fs_release(fs, i);
		}
	}
	pthread_mutex_unlock(&fs->pass_lock);
	ret->forgotten_objects = f.objects;
	ret->forgotten_bytes = f.bytes;
	if (cow_gc_disk(fs->store, &ret->disk_before, NULL) < 0)
		ret->disk_before = 0;
	ret->disk_after = ret->disk_before;
	uint32_t *todo = NULL, old_end;
	size_t n = r == 0 ? clean_candidates(fs, UINT32_MAX, &todo, &old_end) : 0;
	free(todo);
	todo = NULL;
	if (n == 0)
		goto out;
	/* One pass at a time (GC, df, fsck); inside it nothing is forgotten.
	 * Every live branch is checkpointed, so that replay starts past what
	 * is dropped, as for GC; the lowest replay position is the limit. */
	pthread_mutex_lock(&fs->pass_lock);
	if ((r = cow_store_mark_begin(fs->store)) < 0) {
		pthread_mutex_unlock(&fs->pass_lock);
		goto out;
	}
	struct fs_root *roots = NULL;
	size_t nroots = 0;
	uint64_t limit = UINT64_MAX;
	r = collect_roots(fs, &roots, &nroots, &limit);
	free(roots);
	n = r == 0 ? clean_candidates(fs, limit == UINT64_MAX ? UINT32_MAX : COW_LOG_POS_SEG(limit), &todo, &old_end)
		   : 0;
	/* A segment kept for a damaged object still reached: GC warns of it;
	 * this notes it, and leaves it be until it is old. */
	struct cow_gc_rewrite o = { .old_end = old_end, .reloc_flags = COW_RELOC_ALL_INDEXED, .kept = note_kept,
				    .ctx = fs };
	struct cow_gc_stats st = { 0 };
	if (n)
		r = cow_gc_rewrite(fs->store, todo, n, &o, &st);
	cow_store_mark_end(fs->store);
	pthread_mutex_unlock(&fs->pass_lock);
	free(todo);
	ret->segments_tried = (uint32_t)n;
	ret->segments_cleaned = st.segments_rewritten;
	ret->segments_kept = st.segments_kept_damaged;
	ret->moved_bytes = st.moved_bytes;
	uint64_t disk;
	if (cow_gc_disk(fs->store, &disk, NULL) == 0)
		ret->disk_after = disk;
out:
	pthread_mutex_lock(&fs->lock);
	fs->reclaimed.forgotten_objects += ret->forgotten_objects;
	fs->reclaimed.forgotten_bytes += ret->forgotten_bytes;
	fs->reclaimed.cleaned_segments += ret->segments_cleaned;
	fs->reclaimed.cleaned_moved_bytes += ret->moved_bytes;
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* An unmount does not wait for the cleaner's run to end. */
static int clean_progress(void *ctx, const struct cow_gc_progress *p)
{
	(void)p;
	return stopping(ctx);
}

/* The CPUs' busy share (percent) since the last call; 0 when unknown. */
static unsigned cpu_busy(uint64_t *busy0, uint64_t *all0)
{
	uint64_t busy, all;
	if (cow_cpu_ticks(&busy, &all) < 0)
		return 0;
	unsigned pct = all > *all0 && busy >= *busy0 ? (unsigned)((busy - *busy0) * 100 / (all - *all0)) : 0;
	*busy0 = busy;
	*all0 = all;
	return pct;
}

static void *cleaner(void *arg)
{
	struct cow_fs *fs = arg;
	uint64_t busy0 = 0, all0 = 0;
	bool waiting = false;
	cpu_busy(&busy0, &all0);
	pthread_mutex_lock(&fs->lock);
	while (!nap(fs, CLEAN_CHECK_SEC)) {
		struct cow_gc_auto a = fs->autogc;
		pthread_mutex_unlock(&fs->lock);
		struct cow_fs_reclaim_stats rs;
		int rr = cow_fs_reclaim(fs, &rs);
		if (rr < 0)
			cow_warn("reclaim: %s", strerror(-rr));
		else if (rs.segments_cleaned)
			cow_info("reclaim: %llu overwritten blocks forgotten (%llu MiB); %u segments cleaned, %llu MiB "
				 "moved; %llu MiB on disk before, %llu after",
				 (unsigned long long)rs.forgotten_objects, (unsigned long long)(rs.forgotten_bytes >> 20),
				 rs.segments_cleaned, (unsigned long long)(rs.moved_bytes >> 20),
				 (unsigned long long)(rs.disk_before >> 20), (unsigned long long)(rs.disk_after >> 20));
		uint64_t disk;
		bool old;
		struct statvfs host;
		uint64_t free_now = cow_fs_statfs(fs, &host) == 0 ? (uint64_t)host.f_bavail * host.f_frsize : UINT64_MAX;
		unsigned busy = cpu_busy(&busy0, &all0);
		enum cow_gc_auto_verdict v = COW_GC_AUTO_NO;
		if (cow_gc_disk(fs->store, &disk, &old) == 0)
			v = cow_gc_auto_due(&a, disk, free_now, old, busy);
		if (v == COW_GC_AUTO_WAIT && !waiting)
			cow_info("gc: a collection is due (%llu MiB of growth) but the CPUs are %u %% busy "
				 "(autogc_busy=%u): it waits for a quieter moment, at most until the store has grown "
				 "twice as much as made it due",
				 (unsigned long long)((disk - a.base_disk) >> 20), busy, a.busy_max);
		waiting = v == COW_GC_AUTO_WAIT;
		if (v == COW_GC_AUTO_RUN) {
			cow_info("gc: the store grew by %llu MiB since the last collection (or the first mount) "
				 "(%llu MiB of live data then; %llu MiB free on its filesystem; CPUs %u %% busy%s); collecting",
				 (unsigned long long)((disk - a.base_disk) >> 20), (unsigned long long)(a.base_live >> 20),
				 (unsigned long long)(free_now == UINT64_MAX ? 0 : free_now >> 20), busy,
				 old ? "; old segments to move on" : "");
			struct cow_gc_opts o = { .no_slack = true, .progress = clean_progress, .ctx = fs };
			int r = cow_fs_gc(fs, &o, NULL);
			if (r < 0 && r != -ECANCELED) {
				cow_warn("gc: the automatic collection failed: %s; trying again after as much growth",
					 strerror(-r));
				pthread_mutex_lock(&fs->lock);
				fs->autogc.base_disk = disk;
				pthread_mutex_unlock(&fs->lock);
			}
			/* its own CPU time does not count against the next */
			cpu_busy(&busy0, &all0);
		}
		pthread_mutex_lock(&fs->lock);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

/* Keep A's baseline for the next mount (STORE/gc.base); a failure costs
 * only that the next mount counts growth from its own start. */
static void baseline_keep(struct cow_fs *fs, const struct cow_gc_auto *a)
{
	const char *dir = cow_store_path(fs->store);
	int r = cow_gc_auto_save(a, dir);
	if (r < 0)
		cow_warn("cannot write %s/gc.base (%s): the next mount counts the growth that makes a "
			 "collection due from then", dir, strerror(-r));
}

int cow_fs_start_cleaner(struct cow_fs *fs, unsigned pct, unsigned busy_max)
{
	uint64_t disk;
	int r = cow_gc_disk(fs->store, &disk, NULL);
	if (r < 0)
		return r;
	/* Growth counts from the last collection, across mounts (a store
	 * mounted for a while at a time would otherwise never be collected);
	 * one that kept no baseline counts from now, and keeps it. */
	struct cow_gc_auto a;
	cow_gc_auto_init(&a, pct, busy_max, COW_GC_AUTO_MIN_GROWTH, disk);
	const char *dir = cow_store_path(fs->store);
	int lr = cow_gc_auto_load(&a, dir);
	if (lr < 0 && lr != -ENOENT)
		cow_warn("%s/gc.base: %s; the growth that makes a collection due counts from now", dir,
			 lr == -EBADMSG ? "not a baseline this version reads" : strerror(-lr));
	if (lr < 0)
		baseline_keep(fs, &a);
	pthread_mutex_lock(&fs->lock);
	fs->autogc = a;
	pthread_mutex_unlock(&fs->lock);
	if (!pct)
		return 0;
	cow_fs_set_reclaim(fs, true);
	if ((r = pthread_create(&fs->clean_thread, NULL, cleaner, fs))) {
		cow_fs_set_reclaim(fs, false);
		return -r;
	}
	fs->clean_running = true;
	return 0;
}

void cow_fs_set_grace(struct cow_fs *fs, int64_t grace_sec)
{
	pthread_mutex_lock(&fs->lock);
	fs->grace = grace_sec;
	pthread_mutex_unlock(&fs->lock);
}

int64_t cow_fs_grace(struct cow_fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	int64_t g = fs->grace;
	pthread_mutex_unlock(&fs->lock);
	return g;
}

int cow_fs_close(struct cow_fs *fs)
{
	if (!fs)
		return 0;
	pthread_mutex_lock(&fs->lock);
	fs->ckpt_stop = true;
	pthread_cond_broadcast(&fs->ckpt_cond);
	pthread_mutex_unlock(&fs->lock);
	if (fs->reap_running)
		pthread_join(fs->reap_thread, NULL);
	if (fs->clean_running)
		pthread_join(fs->clean_thread, NULL);
	if (fs->ckpt_running)
		pthread_join(fs->ckpt_thread, NULL);
	int r = cow_fs_checkpoint(fs);
	if (r == 0)
		r = cow_store_sync(fs->store);
	for (unsigned i = 1; i < fs->nslots; i++) {
		cow_branch_free(fs->slots[i].branch);
		cow_branch_free(fs->slots[i].gone);
	}
	cow_store_close(fs->store);
	free(fs);
	return r;
}

int cow_fs_sync(struct cow_fs *fs) { return cow_store_sync(fs->store); }
void cow_fs_sync_then(struct cow_fs *fs, cow_log_synced_fn fn, void *arg) { cow_store_sync_then(fs->store, fn, arg); }

/* ---- holds: a state is freed only when no request uses it ------------- */

/* The slot of live KIND ref NAME, or -ENOENT; fs->lock or ckpt_lock held. */
static int find_kind_locked(struct cow_fs *fs, enum cow_ref_kind kind, const char *name);
static int find_locked(struct cow_fs *fs, const char *name);

struct cow_branch *cow_fs_hold(struct cow_fs *fs, unsigned slot)
{
	if (slot == 0 || slot >= COW_FS_MAX_BRANCHES)
		return NULL;
	pthread_mutex_lock(&fs->lock);
	struct cow_branch *b = slot < fs->nslots ? fs->slots[slot].branch : NULL;
	if (b)
		fs->slots[slot].users++;
	pthread_mutex_unlock(&fs->lock);
	return b;
}

struct cow_branch *cow_fs_hold_name(struct cow_fs *fs, enum cow_ref_kind kind, const char *name, unsigned *ret_slot)
{
	pthread_mutex_lock(&fs->lock);
	int r = find_kind_locked(fs, kind, name);
	struct cow_branch *b = NULL;
	if (r >= 0) {
		b = fs->slots[r].branch;
		fs->slots[r].users++;
		*ret_slot = (unsigned)r;
	}
	pthread_mutex_unlock(&fs->lock);
	return b;
}

void cow_fs_release(struct cow_fs *fs, unsigned slot)
{
	struct cow_branch *done = NULL;
	pthread_mutex_lock(&fs->lock);
	struct slot *sl = &fs->slots[slot];
	if (--sl->users == 0) {
		done = sl->gone;
		sl->gone = NULL;
	}
	pthread_mutex_unlock(&fs->lock);
	cow_branch_free(done);
}

void cow_fs_slot_refs(struct cow_fs *fs, unsigned slot, int64_t delta)
{
	if (slot == 0 || slot >= COW_FS_MAX_BRANCHES)
		return;
	pthread_mutex_lock(&fs->lock);
	if (slot < fs->nslots)
		fs->slots[slot].kernel_refs += delta;
	pthread_mutex_unlock(&fs->lock);
}

bool cow_fs_slot_name(struct cow_fs *fs, unsigned slot, enum cow_ref_kind kind, char name[COW_NAME_LEN + 1])
{
	bool ok = false;
	pthread_mutex_lock(&fs->lock);
	if (slot > 0 && slot < fs->nslots && fs->slots[slot].branch && fs->slots[slot].kind == kind) {
		memcpy(name, fs->slots[slot].ref.name, COW_NAME_LEN + 1);
		ok = true;
	}
	pthread_mutex_unlock(&fs->lock);
	return ok;
}

/* SL's state leaves the mount: freed now, or by the last release.  fs->lock held. */
static struct cow_branch *leave_locked(struct slot *sl)
{
	struct cow_branch *b = sl->branch;
	sl->branch = NULL;
	if (sl->users == 0)
		return b;
	sl->gone = b;
	return NULL;
}

/* The lowest free slot (see struct slot), else nslots if the table may
 * grow by one, else 0.  fs->lock held. */
static unsigned free_slot_locked(struct cow_fs *fs)
{
	for (unsigned i = 1; i < fs->nslots; i++) {
		const struct slot *sl = &fs->slots[i];
		if (!sl->branch && !sl->gone && sl->users == 0 && sl->kernel_refs == 0)
			return i;
	}
	return fs->nslots < COW_FS_MAX_BRANCHES ? fs->nslots : 0;
}

/* Is there a slot for one more state?  ckpt_lock held: nothing else takes one. */
static bool slot_available(struct cow_fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	bool ok = free_slot_locked(fs) != 0;
	pthread_mutex_unlock(&fs->lock);
	return ok;
}

unsigned cow_fs_slot_limit(struct cow_fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	unsigned n = fs->nslots;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

int cow_fs_branch_find(struct cow_fs *fs, const char *name, unsigned *ret_slot)
{
	pthread_mutex_lock(&fs->lock);
	int r = find_locked(fs, name);
	pthread_mutex_unlock(&fs->lock);
	if (r < 0)
		return r;
	*ret_slot = (unsigned)r;
	return 0;
}

int cow_fs_statfs(struct cow_fs *fs, struct statvfs *ret)
{
	struct statvfs host;
	if (statvfs(cow_store_path(fs->store), &host) < 0)
		return -errno;
	uint64_t bs = 8192;
	memset(ret, 0, sizeof *ret);
	ret->f_bsize = ret->f_frsize = bs;
	ret->f_blocks = (uint64_t)host.f_blocks * host.f_frsize / bs;
	ret->f_bfree = (uint64_t)host.f_bfree * host.f_frsize / bs;
	ret->f_bavail = (uint64_t)host.f_bavail * host.f_frsize / bs;
	ret->f_files = host.f_files;
	ret->f_ffree = ret->f_favail = host.f_ffree;
	ret->f_namemax = 255;
	return 0;
}

void cow_fs_get_stats(struct cow_fs *fs, struct cow_fs_stats *ret)
{
	struct cow_store_stats ss;
	cow_store_get_stats(fs->store, &ss);
	memset(ret, 0, sizeof *ret);
	ret->store_bytes = ss.log_bytes;
	ret->objects = ss.objects;
	ret->object_bytes = ss.object_bytes;
	ret->dedup_hits = ss.dedup_hits;
	ret->zero_puts = ss.zero_puts;
	ret->log_syncs = ss.log_syncs;
	ret->log_sync_waits = ss.log_sync_waits;
	ret->index_bytes = ss.index_bytes;
	unsigned n = cow_fs_slot_limit(fs);
	for (unsigned i = 1; i < n; i++) {
		struct cow_branch *b = cow_fs_hold(fs, i);
		if (b) {
			ret->branches++;
			ret->branch_bytes += cow_branch_mem(b);
			cow_fs_release(fs, i);
		}
	}
	/* a gone state is freed only after its slot's last release, under lock */
	pthread_mutex_lock(&fs->lock);
	for (unsigned i = 1; i < n; i++)
		if (fs->slots[i].gone)
			ret->gone_bytes += cow_branch_mem(fs->slots[i].gone);
	pthread_mutex_unlock(&fs->lock);
}

const char *cow_fs_path(struct cow_fs *fs) { return cow_store_path(fs->store); }

static int random_id(struct cow_fs *fs, uint64_t *ret)
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		uint64_t id;
		if (read(fd, &id, sizeof id) != sizeof id) {
			close(fd);
			return -EIO;
		}
		id &= INT64_MAX; /* refs carry ids as JSON integers */
		bool used = id == 0;
		for (unsigned i = 1; i < fs->nslots && !used; i++)
			used = fs->slots[i].ref.id == id;
		if (!used) {
			close(fd);
			*ret = id;
			return 0;
		}
	}
}

/* SL's state leaves the mount (delete).  ckpt_lock held. */
static void retire(struct cow_fs *fs, struct slot *sl)
{
	pthread_mutex_lock(&fs->lock);
	struct cow_branch *done = leave_locked(sl);
	pthread_mutex_unlock(&fs->lock);
	cow_branch_free(done);
}

/* Put a new branch or snapshot into a free slot (slot_available said there
 * is one); with OLD, the state it replaces leaves its slot.  Never OLD's
 * slot, nor one the kernel still has node ids of: every node id of the old
 * state goes stale (ESTALE).  ckpt_lock held. */
static void install(struct cow_fs *fs, enum cow_ref_kind kind, const struct cow_ref *ref, struct cow_branch *b,
		    struct slot *old)
{
	struct cow_branch *done = NULL;
	pthread_mutex_lock(&fs->lock);
	unsigned i = free_slot_locked(fs);
	if (i == fs->nslots)
		fs->nslots++;
	struct slot *s = &fs->slots[i];
	s->kind = kind;
	s->ref = *ref;
	s->branch = b;
	if (old)
		done = leave_locked(old);
	pthread_mutex_unlock(&fs->lock);
	cow_branch_free(done);
}

/* A new branch (or snapshot, KIND) frozen from the live branch in slot P at
 * this instant, under REF's name; with OLD, it replaces that branch (reset). */
static int branch_from_parent(struct cow_fs *fs, int p, struct cow_ref *ref, enum cow_ref_kind kind,
			      struct slot *old, cow_fs_announce_fn announce, void *ctx)
{
	struct cow_branch *child = NULL;
	int r;
	if (!slot_available(fs))
		return -ENOSPC;
	/* Freeze, checkpoint, thaw.  The parent's mutations (all its files at
	 * once) are held from the checkpoint until the child is durable and the
	 * caller has announced it: no commit can be acknowledged on the parent
	 * between the image and the reply, so every commit acknowledged before
	 * the reply is in the child.  What Postgres had not fsynced may or may
	 * not be: the child is a crash-consistent image, as after a power cut. */
	struct slot *ps = &fs->slots[p];
	cow_branch_freeze(ps->branch);
	if ((r = cow_branch_checkpoint_frozen(ps->branch, &ref->root, &ref->log_pos)) == 0)
		cow_branch_shared_frozen(ps->branch);
	if (r < 0 ||
	    (r = random_id(fs, &ref->id)) < 0 ||
	    (r = cow_branch_open(fs->store, ref->id, &ref->root, ref->log_pos, &child)) < 0)
		goto thaw;
	/* A copy of a running cluster must not claim its postmaster.  The
	 * removal is replayed from the ref's log position, so a branch needs no
	 * checkpoint of its own: one sync covers the parent's checkpoint and the
	 * removal, then the ref (which, for a reset, replaces the old one).  A
	 * snapshot is checkpointed, so that it never depends on the log. */
	r = cow_branch_unlink(child, COW_ROOT_INO, "postmaster.pid");
	if (r < 0 && r != -ENOENT && r != -ENOTDIR)
		goto thaw;
	if (kind == COW_REF_BRANCH && (r = pg_settle_child(fs, child, ref, old)) < 0)
		goto thaw;
	if (kind == COW_REF_SNAPSHOT) {
		if ((r = cow_branch_checkpoint(child, &ref->root, &ref->log_pos)) < 0)
			goto thaw;
		cow_branch_set_readonly(child);
	}
	if ((r = cow_store_sync(fs->store)) < 0 || (r = cow_ref_write(cow_store_path(fs->store), kind, ref)) < 0)
		goto thaw;
	/* Another slot, also for a reset: every node id of the old state goes
	 * stale (ESTALE), so nothing the kernel cached of it can be served. */
	install(fs, kind, ref, child, old);
	child = NULL;
	if (announce)
		announce(ctx, ref);
	r = 0;
thaw:
	cow_branch_thaw(ps->branch);
	cow_branch_free(child);
	return r;
}

/* A new branch REF whose state is ROOT, an immutable checkpoint (a snapshot
 * or a deleted branch); with OLD, it replaces that branch (restore). */
static int branch_from_root(struct cow_fs *fs, struct cow_ref *ref, const cow_hash *root, struct slot *old)
{
	struct cow_branch *b = NULL;
	int r;
	if (!slot_available(fs))
		return -ENOSPC;
	ref->root = *root;
	ref->log_pos = cow_store_log_end(fs->store);
	if ((r = random_id(fs, &ref->id)) < 0 || (r = cow_branch_open(fs->store, ref->id, root, ref->log_pos, &b)) < 0)
		return r;
	r = cow_branch_unlink(b, COW_ROOT_INO, "postmaster.pid");
	if ((r == 0 || r == -ENOENT || r == -ENOTDIR) && (r = pg_settle_child(fs, b, ref, old)) == 0 &&
	    (r = cow_store_sync(fs->store)) == 0 &&
	    (r = cow_ref_write(cow_store_path(fs->store), COW_REF_BRANCH, ref)) == 0) {
		install(fs, COW_REF_BRANCH, ref, b, old);
		return 0;
	}
	cow_branch_free(b);
	return r;
}

static int find_kind_locked(struct cow_fs *fs, enum cow_ref_kind kind, const char *name)
{
	for (unsigned i = 1; i < fs->nslots; i++)
		if (fs->slots[i].branch && fs->slots[i].kind == kind && strcmp(fs->slots[i].ref.name, name) == 0)
			return (int)i;
	return -ENOENT;
}

static int find_locked(struct cow_fs *fs, const char *name)
{
	return find_kind_locked(fs, COW_REF_BRANCH, name);
}

int cow_fs_branch_create(struct cow_fs *fs, struct cow_ref *ref, cow_fs_announce_fn announce, void *ctx)
{
	if (cow_ref_check_name(ref->name))
		return -EINVAL;
	pthread_mutex_lock(&fs->ckpt_lock);
	int r, p = find_locked(fs, ref->parent);
	if (p < 0)
		r = -ENOENT;
	else if (find_locked(fs, ref->name) >= 0)
		r = -EEXIST;
	else {
		ref->created = time(NULL);
		/* a port of its own, never the parent's; chosen before the parent is frozen */
		ref->port = 0;
		if (pg_pick_port(fs, &ref->port) < 0)
			cow_warn("no free port for branch %s's Postgres; one is given at 'cowfs pg start'", ref->name);
		r = branch_from_parent(fs, p, ref, COW_REF_BRANCH, NULL, announce, ctx);
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r;
}

int cow_fs_branch_create_from_snapshot(struct cow_fs *fs, const char *snapshot, struct cow_ref *ref)
{
	if (cow_ref_check_name(ref->name))
		return -EINVAL;
	pthread_mutex_lock(&fs->ckpt_lock);
	int r, s = find_kind_locked(fs, COW_REF_SNAPSHOT, snapshot);
	if (s < 0)
		r = -ENOENT;
	else if (find_locked(fs, ref->name) >= 0)
		r = -EEXIST;
	else {
		ref->created = time(NULL);
		snprintf(ref->parent, sizeof ref->parent, "%s", fs->slots[s].ref.parent);
		r = branch_from_root(fs, ref, &fs->slots[s].ref.root, NULL);
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r;
}

/* Checks shared by reset and restore: NAME live, not protected, no Postgres. */
static int repoint_check(struct cow_fs *fs, const char *name, pid_t *ret_pid)
{
	int r = find_locked(fs, name);
	if (r < 0)
		return r;
	if (fs->slots[r].ref.protected)
		return -EPERM;
	if (cow_postmaster_running(fs->slots[r].branch, ret_pid))
		return -EBUSY;
	return r;
}

int cow_fs_branch_reset(struct cow_fs *fs, const char *name, pid_t *ret_pid, struct cow_ref *ret)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = repoint_check(fs, name, ret_pid), p = -1;
	if (r < 0)
		goto out;
	struct slot *old = &fs->slots[r];
	struct cow_ref ref = old->ref;
	if (!ref.parent[0] || (p = find_locked(fs, ref.parent)) < 0) {
		r = -ECHILD; /* no parent (any more) to reset to */
		goto out;
	}
	if ((r = branch_from_parent(fs, p, &ref, COW_REF_BRANCH, old, NULL, NULL)) == 0)
		*ret = ref;
out:
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

int cow_fs_branch_restore(struct cow_fs *fs, const char *name, const char *snapshot, pid_t *ret_pid,
			  struct cow_ref *ret)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int s = find_kind_locked(fs, COW_REF_SNAPSHOT, snapshot);
	int r = s < 0 ? -ESRCH : repoint_check(fs, name, ret_pid);
	if (r >= 0) {
		struct slot *old = &fs->slots[r];
		struct cow_ref ref = old->ref;
		if ((r = branch_from_root(fs, &ref, &fs->slots[s].ref.root, old)) == 0)
			*ret = ref;
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

int cow_fs_branch_delete(struct cow_fs *fs, const char *name, bool purge, pid_t *ret_pid)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	const char *store = cow_store_path(fs->store);
	int r = find_locked(fs, name), live = 0;
	for (unsigned i = 1; i < fs->nslots; i++)
		live += fs->slots[i].branch && fs->slots[i].kind == COW_REF_BRANCH;
	if (r < 0)
		goto out;
	struct slot *sl = &fs->slots[r];
	if (live == 1)
		r = -ENOTEMPTY; /* a store keeps at least one branch */
	else if (sl->ref.protected)
		r = -EPERM;
	else if (cow_postmaster_running(sl->branch, ret_pid))
		r = -EBUSY;
	if (r < 0)
		goto out;
	if (!purge) {
		/* Into the trash, whole: a checkpoint makes the root the entire
		 * state, so an undelete needs no log.  A deleted branch of the same
		 * name that was still in the trash is replaced (and so purged). */
		struct cow_ref t = sl->ref;
		cow_branch_freeze(sl->branch);
		if ((r = cow_branch_checkpoint_frozen(sl->branch, &t.root, &t.log_pos)) == 0)
			cow_branch_shared_frozen(sl->branch); /* should the delete fail after all */
		cow_branch_thaw(sl->branch);
		if (r < 0 || (r = cow_store_sync(fs->store)) < 0)
			goto out;
		t.deleted = time(NULL);
		if ((r = cow_ref_write(store, COW_REF_TRASH, &t)) < 0)
			goto out;
	}
	/* A crash here leaves the branch both live and in the trash: it stays
	 * live, and the trash copy goes when its grace period ends. */
	if ((r = cow_ref_remove(store, COW_REF_BRANCH, name)) == 0)
		retire(fs, sl);
out:
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

int cow_fs_branch_undelete(struct cow_fs *fs, const char *name, struct cow_ref *ret)
{
	const char *store = cow_store_path(fs->store);
	pthread_mutex_lock(&fs->ckpt_lock);
	struct cow_ref ref;
	int r = find_locked(fs, name) >= 0 ? -EEXIST : cow_ref_read(store, COW_REF_TRASH, name, &ref);
	if (r < 0)
		goto out;
	cow_hash root = ref.root;
	ref.deleted = 0;
	if (ref.expires && ref.expires <= time(NULL))
		ref.expires = 0; /* else the reaper would take it again at once */
	if ((r = branch_from_root(fs, &ref, &root, NULL)) < 0)
		goto out;
	*ret = ref;
	/* Back and durable.  Should the trash copy stay (a crash now), the
	 * live branch wins and the copy goes when its grace period ends. */
	int q = cow_ref_remove(store, COW_REF_TRASH, name);
	if (q < 0)
		cow_warn("branch %s is back, but its copy in the trash could not be removed: %s", name, strerror(-q));
out:
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r;
}

int cow_fs_branch_update(struct cow_fs *fs, const char *name, cow_fs_update_fn fn, void *ctx, struct cow_ref *ret)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = find_locked(fs, name);
	if (r >= 0) {
		struct slot *sl = &fs->slots[r];
		struct cow_ref ref = sl->ref;
		if ((r = fn(ctx, &ref)) == 0 && (r = cow_ref_write(cow_store_path(fs->store), COW_REF_BRANCH, &ref)) == 0) {
			sl->ref = ref;
			if (ret)
				*ret = ref;
		}
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

int cow_fs_branch_get(struct cow_fs *fs, const char *name, struct cow_ref *ret)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = find_locked(fs, name);
	if (r >= 0)
		*ret = fs->slots[r].ref;
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

static int list_kind(struct cow_fs *fs, enum cow_ref_kind kind, struct cow_ref **ret, size_t *ret_n)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	struct cow_ref *v = calloc(fs->nslots, sizeof *v);
	size_t n = 0;
	if (v)
		for (unsigned i = 1; i < fs->nslots; i++)
			if (fs->slots[i].branch && fs->slots[i].kind == kind)
				v[n++] = fs->slots[i].ref;
	pthread_mutex_unlock(&fs->ckpt_lock);
	if (!v)
		return -ENOMEM;
	*ret = v;
	*ret_n = n;
	return 0;
}

int cow_fs_branch_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n)
{
	return list_kind(fs, COW_REF_BRANCH, ret, ret_n);
}

int cow_fs_snapshot_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n)
{
	return list_kind(fs, COW_REF_SNAPSHOT, ret, ret_n);
}

int cow_fs_trash_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n)
{
	const char *store = cow_store_path(fs->store);
	char **names = NULL;
	size_t n = 0, k = 0;
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = cow_ref_list(store, COW_REF_TRASH, &names, &n);
	struct cow_ref *v = r == 0 ? calloc(n + 1, sizeof *v) : NULL;
	if (r == 0 && !v)
		r = -ENOMEM;
	for (size_t i = 0; r == 0 && i < n; i++)
		if (cow_ref_read(store, COW_REF_TRASH, names[i], &v[k]) == 0)
			k++; /* a damaged trash ref was reported; it is skipped */
	pthread_mutex_unlock(&fs->ckpt_lock);
	cow_ref_names_free(names, n);
	if (r < 0) {
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = k;
	return 0;
}

int cow_fs_snapshot_create(struct cow_fs *fs, const char *branch, struct cow_ref *ref,
			   cow_fs_announce_fn announce, void *ctx)
{
	if (cow_ref_check_name(ref->name))
		return -EINVAL;
	pthread_mutex_lock(&fs->ckpt_lock);
	int r, p = find_locked(fs, branch);
	if (p < 0)
		r = -ENOENT;
	else if (find_kind_locked(fs, COW_REF_SNAPSHOT, ref->name) >= 0)
		r = -EEXIST;
	else {
		ref->created = time(NULL);
		snprintf(ref->parent, sizeof ref->parent, "%s", branch);
		r = branch_from_parent(fs, p, ref, COW_REF_SNAPSHOT, NULL, announce, ctx);
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r;
}

int cow_fs_snapshot_get(struct cow_fs *fs, const char *name, struct cow_ref *ret)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = find_kind_locked(fs, COW_REF_SNAPSHOT, name);
	if (r >= 0)
		*ret = fs->slots[r].ref;
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

int cow_fs_snapshot_delete(struct cow_fs *fs, const char *name)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = find_kind_locked(fs, COW_REF_SNAPSHOT, name);
	if (r >= 0) {
		struct slot *sl = &fs->slots[r];
		if ((r = cow_ref_remove(cow_store_path(fs->store), COW_REF_SNAPSHOT, name)) == 0)
			retire(fs, sl);
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

int cow_fs_snapshot_find(struct cow_fs *fs, const char *name, unsigned *ret_slot)
{
	pthread_mutex_lock(&fs->lock);
	int r = find_kind_locked(fs, COW_REF_SNAPSHOT, name);
	pthread_mutex_unlock(&fs->lock);
	if (r < 0)
		return r;
	*ret_slot = (unsigned)r;
	return 0;
}

/* Purge NAME from the trash if it was deleted at or before CUTOFF. */
static int trash_purge(struct cow_fs *fs, const char *name, int64_t cutoff, struct cow_ref *ret)
{
	const char *store = cow_store_path(fs->store);
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = cow_ref_read(store, COW_REF_TRASH, name, ret);
	if (r == 0)
		r = ret->deleted <= cutoff ? cow_ref_remove(store, COW_REF_TRASH, name) : -EAGAIN;
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r;
}

int cow_fs_branch_delete_stopping(struct cow_fs *fs, const char *name, bool purge, pid_t *ret_pid, int *ret_stop_err)
{
	*ret_stop_err = 0;
	for (int attempt = 0;; attempt++) {
		int r = cow_fs_branch_delete(fs, name, purge, ret_pid);
		if (r != -EBUSY || attempt == 2)
			return r; /* -EBUSY at last: Postgres was started again each time */
		cow_info("stopping Postgres (pid %d) on branch %s before deleting it", (int)*ret_pid, name);
		if ((*ret_stop_err = cow_postmaster_stop(*ret_pid, 60)) < 0)
			return *ret_stop_err;
	}
}

/* Delete NAME if it is still expired at NOW; stop its Postgres first. */
static int reap_branch(struct cow_fs *fs, const char *name, int64_t now, struct cow_ref *ret)
{
	int r = cow_fs_branch_get(fs, name, ret), stop_err;
	pid_t pid = 0;
	if (r < 0)
		return r;
	if (!ret->expires || ret->expires > now)
		return -EAGAIN; /* changed meanwhile */
	if (ret->protected)
		return -EPERM;
	return cow_fs_branch_delete_stopping(fs, name, false, &pid, &stop_err);
}

int cow_fs_reap(struct cow_fs *fs, int64_t now, int64_t grace, cow_fs_reap_fn report, void *ctx)
{
	struct cow_ref *v, ref;
	size_t n;
	int r = cow_fs_branch_list(fs, &v, &n), err = 0;
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (!v[i].expires || v[i].expires > now)
			continue;
		r = reap_branch(fs, v[i].name, now, &ref);
		if (r == 0) {
			cow_info("branch %s expired and was deleted", v[i].name);
			if (report)
				report(ctx, "expired", &ref);
		} else if (r == -EPERM || r == -ENOTEMPTY) {
			/* protected, or the store's last branch: kept, said once a day */
			if ((now - v[i].expires) % 86400 < 60)
				cow_info("branch %s expired but is %s: kept", v[i].name,
					 r == -EPERM ? "protected" : "the store's last branch");
		} else if (r != -EAGAIN && r != -ENOENT) {
			cow_warn("branch %s expired but cannot be deleted: %s", v[i].name, strerror(-r));
			err = err ? err : r;
		}
	}
	free(v);
	if ((r = cow_fs_trash_list(fs, &v, &n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (v[i].deleted > now - grace)
			continue;
		r = trash_purge(fs, v[i].name, now - grace, &ref);
		if (r == 0) {
			cow_info("deleted branch %s purged after its grace period", v[i].name);
			if (report)
				report(ctx, "purged", &ref);
		} else if (r != -EAGAIN && r != -ENOENT) {
			cow_warn("deleted branch %s cannot be purged: %s", v[i].name, strerror(-r));
			err = err ? err : r;
		}
	}
	free(v);
	return err;
}

/* ---- Postgres on branches (pg.h) -------------------------------------------
 * A branch's port lives in its ref; its postgresql.auto.conf carries the port
 * and socket directory, so that a hand-typed pg_ctl uses them.  Any state a
 * branch is (re)pointed at (create, reset, restore, undelete, a branch of a
 * snapshot) came from another branch and carries that one's settings:
 * pg_settle_child writes the branch's own into it before the new state is
 * synced and published. */

/* A port no live branch has, no other mounted store published, and
 * nothing listens on; ckpt_lock held. */
static int pg_pick_port(struct cow_fs *fs, uint16_t *ret)
{
	uint16_t *others = NULL;
	size_t n = 0;
	cow_pg_ports_others(cow_store_path(fs->store), &others, &n);
	uint16_t *used = realloc(others, (n + fs->nslots) * sizeof *used);
	if (!used) {
		free(others);
		return -ENOMEM;
	}
	for (unsigned i = 1; i < fs->nslots; i++)
		if (fs->slots[i].branch && fs->slots[i].kind == COW_REF_BRANCH && fs->slots[i].ref.port)
			used[n++] = fs->slots[i].ref.port;
	int r = cow_pg_pick_port(used, n, ret);
	free(used);
	return r;
}

/* CHILD, about to be published as REF (replacing the branch in slot OLD,
 * or new), gets REF's port and socket directory in its settings.  A branch
 * without a port, or whose port another live branch took meanwhile (an
 * undelete), gets a new one; ckpt_lock held. */
static int pg_settle_child(struct cow_fs *fs, struct cow_branch *child, struct cow_ref *ref, struct slot *old)
{
	for (unsigned i = 1; ref->port && i < fs->nslots; i++)
		if (fs->slots[i].branch && &fs->slots[i] != old && fs->slots[i].kind == COW_REF_BRANCH &&
		    fs->slots[i].ref.port == ref->port)
			ref->port = 0;
	if (!ref->port && pg_pick_port(fs, &ref->port) < 0)
		return 0; /* none free: given at the first 'cowfs pg' command */
	char dir[512];
	if (cow_pg_socket_dir(cow_store_path(fs->store), ref->name, dir, sizeof dir) < 0)
		return 0;
	int r = cow_pg_settings_write_branch(child, ref->port, dir);
	if (r < 0)
		cow_err("branch %s: cannot write its Postgres port into %s: %s", ref->name, COW_PG_SETTINGS_FILE,
			strerror(-r));
	return r;
}

int cow_fs_branch_pg_port(struct cow_fs *fs, const char *name, struct cow_ref *ret)
{
	pthread_mutex_lock(&fs->ckpt_lock);
	int r = find_locked(fs, name);
	if (r < 0)
		goto out;
	struct slot *sl = &fs->slots[r];
	r = 0;
	if (!sl->ref.port) {
		struct cow_ref ref = sl->ref;
		if ((r = pg_pick_port(fs, &ref.port)) == 0 &&
		    (r = cow_ref_write(cow_store_path(fs->store), COW_REF_BRANCH, &ref)) == 0)
			sl->ref = ref;
	}
	*ret = sl->ref;
out:
	pthread_mutex_unlock(&fs->ckpt_lock);
	return r < 0 ? r : 0;
}

/* ---- roots: storage accounting, GC, fsck -------------------------------- */

const char *cow_fs_kind_name(enum cow_ref_kind kind)
{
	return kind == COW_REF_SNAPSHOT ? "snapshot" : kind == COW_REF_TRASH ? "trash" : "branch";
}

struct fs_root {
	enum cow_ref_kind kind;
	char name[COW_NAME_LEN + 1];
	cow_hash root;
};

static int root_add(struct fs_root **v, size_t *n, size_t *cap, enum cow_ref_kind kind, const char *name,
		    const cow_hash *root)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct fs_root *nv = realloc(*v, c * sizeof *nv);
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	struct fs_root *e = &(*v)[(*n)++];
	e->kind = kind;
	snprintf(e->name, sizeof e->name, "%s", name);
	e->root = *root;
	return 0;
}

/* A directory under refs/ that is none of the kinds this cowfs knows may
 * hold roots: GC must not run without them. */
static int check_ref_kinds(const char *store)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/refs", store);
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d)) && r == 0) {
		if (de->d_name[0] == '.')
			continue;
		bool known = false;
		for (int k = 0; k < COW_REF_KINDS; k++)
			known |= strcmp(de->d_name, cow_ref_kind_dir((enum cow_ref_kind)k)) == 0;
		if (!known) {
			cow_err("%s/%s: refs of a kind this cowfs does not know; no garbage is collected while "
				"they may name data", dir, de->d_name);
			r = -EPROTONOSUPPORT;
		}
	}
	closedir(d);
	return r;
}

/* Every root of the store: the live branches, checkpointed now, then every
 * ref file of every kind.  A clean branch is checkpointed too: its slot's
 * ref may be older than its state (a branch create checkpoints the parent
 * without writing the parent's ref), and GC needs its replay to start at
 * the log's end.  *RET_LIMIT: the lowest replay position of a live branch.
 * A ref that cannot be read fails the whole collection. */
static int collect_roots(struct cow_fs *fs, struct fs_root **ret, size_t *ret_n, uint64_t *ret_limit)
{
	const char *store = cow_store_path(fs->store);
	struct fs_root *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t limit = UINT64_MAX;
	int r = check_ref_kinds(store);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->ckpt_lock);
	unsigned nslots = cow_fs_slot_limit(fs);
	for (unsigned i = 1; i < nslots && r == 0; i++) {
		struct slot *sl = &fs->slots[i];
		if (!sl->branch)
			continue;
		/* a snapshot is immutable and needs no log: its ref file is its root */
		if (sl->kind == COW_REF_SNAPSHOT)
			continue;
		r = checkpoint_slot(fs, sl);
		if (r == 0)
			r = root_add(&v, &n, &cap, COW_REF_BRANCH, sl->ref.name, &sl->ref.root);
		limit = COW_MIN(limit, sl->ref.log_pos);
	}
	size_t nlive = n;
	for (int k = 0; k < COW_REF_KINDS && r == 0; k++) {
		char **names = NULL;
		size_t nn = 0;
		if ((r = cow_ref_list(store, (enum cow_ref_kind)k, &names, &nn)) < 0)
			break;
		for (size_t i = 0; i < nn && r == 0; i++) {
			bool live = false;
			for (size_t j = 0; k == COW_REF_BRANCH && j < nlive && !live; j++)
				live = strcmp(v[j].name, names[i]) == 0;
			if (live)
				continue;
			struct cow_ref ref;
			r = cow_ref_read(store, (enum cow_ref_kind)k, names[i], &ref);
			if (r < 0)
				cow_err("%s/refs/%s/%s.json: cannot be read (%s); nothing it names can be accounted for",
					store, cow_ref_kind_dir((enum cow_ref_kind)k), names[i], strerror(-r));
			else
				r = root_add(&v, &n, &cap, (enum cow_ref_kind)k, ref.name, &ref.root);
		}
		cow_ref_names_free(names, nn);
	}
	pthread_mutex_unlock(&fs->ckpt_lock);
	if (r < 0) {
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	if (ret_limit)
		*ret_limit = limit;
	return 0;
}

static struct cow_gc_root *gc_roots(const struct fs_root *v, size_t n)
{
	struct cow_gc_root *g = calloc(n ? n : 1, sizeof *g);
	for (size_t i = 0; g && i < n; i++)
		g[i].root = v[i].root;
	return g;
}

int cow_fs_usage(struct cow_fs *fs, struct cow_fs_usage *ret)
{
	struct cow_gc_opts o = { .mark_only = true };
	struct cow_gc *g;
	struct fs_root *v = NULL;
	struct cow_gc_root *gr = NULL;
	size_t n = 0;
	pthread_mutex_lock(&fs->pass_lock);
	int r = cow_gc_begin(fs->store, &o, &g);
	if (r < 0) {
		pthread_mutex_unlock(&fs->pass_lock);
		return r;
	}
	if ((r = collect_roots(fs, &v, &n, NULL)) == 0 && !(gr = gc_roots(v, n)))
		r = -ENOMEM;
	if (r == 0)
		r = cow_gc_mark(g, gr, n);
	struct cow_gc_stats st;
	cow_gc_end(g, &st);
	pthread_mutex_unlock(&fs->pass_lock);
	memset(ret, 0, sizeof *ret);
	if (r == 0 && !(ret->refs = calloc(n ? n : 1, sizeof *ret->refs)))
		r = -ENOMEM;
	if (r == 0) {
		for (size_t i = 0; i < n; i++) {
			struct cow_fs_ref_usage *u = &ret->refs[i];
			u->kind = v[i].kind;
			snprintf(u->name, sizeof u->name, "%s", v[i].name);
			u->logical_bytes = gr[i].logical_bytes;
			u->own_bytes = gr[i].own_bytes;
			u->shared_bytes = gr[i].shared_bytes;
		}
		ret->nrefs = n;
		ret->segments = st.segments_after;
		ret->disk_bytes = st.disk_after;
		ret->log_bytes = st.log_bytes;
		ret->live_bytes = st.live_bytes;
		ret->reclaimable_bytes = st.reclaimable_bytes;
		pthread_mutex_lock(&fs->lock);
		ret->reclaimed = fs->reclaimed;
		pthread_mutex_unlock(&fs->lock);
	}
	free(v);
	free(gr);
	return r;
}

void cow_fs_usage_free(struct cow_fs_usage *u)
{
	if (u) {
		free(u->refs);
		u->refs = NULL;
		u->nrefs = 0;
	}
}

int cow_fs_gc(struct cow_fs *fs, const struct cow_gc_opts *opts, struct cow_gc_stats *ret)
{
	struct cow_gc_opts o = *opts;
	o.mark_only = false;
	struct cow_gc *g;
	struct fs_root *v = NULL;
	struct cow_gc_root *gr = NULL;
	size_t n = 0;
	uint64_t limit = 0;
	/* The pass begins before the checkpoints: whatever a branch names
	 * after its checkpoint, it put (and so marked) after the pass began. */
	pthread_mutex_lock(&fs->pass_lock);
	int r = cow_gc_begin(fs->store, &o, &g);
	if (r < 0) {
		pthread_mutex_unlock(&fs->pass_lock);
		return r;
	}
	if ((r = collect_roots(fs, &v, &n, &limit)) == 0 && !(gr = gc_roots(v, n)))
		r = -ENOMEM;
	if (r == 0)
		r = cow_gc_mark(g, gr, n);
	if (r == 0)
		r = cow_gc_sweep(g, limit);
	struct cow_gc_stats st;
	cow_gc_end(g, &st);
	pthread_mutex_unlock(&fs->pass_lock);
	if (r == 0) {
		/* a run by hand counts for the cleaner too, in this mount and the next */
		pthread_mutex_lock(&fs->lock);
		cow_gc_auto_ran(&fs->autogc, &st);
		struct cow_gc_auto a = fs->autogc;
		pthread_mutex_unlock(&fs->lock);
		baseline_keep(fs, &a);
	}
	if (r == 0 || r == -ECANCELED)
		cow_info("gc%s: %u segments rewritten, %llu bytes moved, %llu bytes on disk before, %llu after, "
			 "%.1f s", r ? " (stopped)" : "", st.segments_rewritten, (unsigned long long)st.moved_bytes,
			 (unsigned long long)st.disk_before, (unsigned long long)st.disk_after, st.seconds);
	if (ret)
		*ret = st;
	free(v);
	free(gr);
	return r;
}

int cow_fs_fsck(struct cow_fs *fs, const struct cow_fsck_opts *opts, struct cow_fsck_stats *ret)
{
	struct fs_root *v = NULL;
	size_t n = 0;
	/* From the checkpoints on: early reclaim must not forget a block that
	 * a root just taken still names (cow_fs_reclaim takes the lock too). */
	pthread_mutex_lock(&fs->pass_lock);
	int r = collect_roots(fs, &v, &n, NULL);
	if (r < 0) {
		pthread_mutex_unlock(&fs->pass_lock);
		return r;
	}
	struct cow_fsck_root *fr = calloc(n ? n : 1, sizeof *fr);
	if (!fr) {
		pthread_mutex_unlock(&fs->pass_lock);
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		fr[i] = (struct cow_fsck_root){ v[i].root, cow_fs_kind_name(v[i].kind), v[i].name };
	r = cow_fsck_run(fs->store, fr, n, opts, ret);
	pthread_mutex_unlock(&fs->pass_lock);
	free(fr);
	free(v);
	return r;
}
