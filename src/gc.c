#include "gc.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store.h"
#include "util.h"
#include "walk.h"

struct cow_gc {
	struct cow_store *s;
	struct cow_gc_opts o;
	struct timespec t0;
	struct cow_gc_stats st;
	uint64_t *seg_live;      /* live record bytes per segment slot (COW_LOG_SLOT), after the mark */
	struct cow_gc_root *roots;
	size_t nroots;
	uint64_t *own;           /* per root number, during the tally */
	bool marked;
};

static uint64_t disk_of(const struct cow_log_segment *v, size_t n, uint32_t *ret_count)
{
	uint64_t d = 0;
	for (size_t i = 0; i < n; i++)
		d += v[i].disk;
	if (ret_count)
		*ret_count = (uint32_t)n;
	return d;
}

void cow_gc_auto_init(struct cow_gc_auto *a, unsigned pct, unsigned busy_max, uint64_t min_growth,
		      uint64_t disk_now)
{
	*a = (struct cow_gc_auto){ .pct = pct, .busy_max = busy_max, .min_growth = min_growth, .base_disk = disk_now };
}

enum cow_gc_auto_verdict cow_gc_auto_due(const struct cow_gc_auto *a, uint64_t disk_now, uint64_t free_now,
					 bool old, unsigned busy)
{
	if (!a->pct)
		return COW_GC_AUTO_NO;
	/* The log must roll on past its oldest segments whatever the store's
	 * size: with early reclaim it may stay flat while the log advances,
	 * and the window would fill (log.h).  The run moves them all. */
	if (old)
		return COW_GC_AUTO_RUN;
	if (disk_now <= a->base_disk)
		return COW_GC_AUTO_NO;
	uint64_t growth = disk_now - a->base_disk;
	if (free_now < COW_GC_AUTO_LOW_FREE)
		return growth >= COW_LOG_SEGMENT_MAX ? COW_GC_AUTO_RUN : COW_GC_AUTO_NO;
	unsigned __int128 want = (unsigned __int128)a->base_live * a->pct / 100;
	if (want < a->min_growth)
		want = a->min_growth;
	if (growth < want)
		return COW_GC_AUTO_NO;
	return busy <= a->busy_max || growth >= 2 * want ? COW_GC_AUTO_RUN : COW_GC_AUTO_WAIT;
}

void cow_gc_auto_ran(struct cow_gc_auto *a, const struct cow_gc_stats *st)
{
	a->base_disk = st->disk_after;
	a->base_live = st->live_bytes;
}

#define BASE_NAME "gc.base"
#define BASE_VERSION 1

int cow_gc_auto_load(struct cow_gc_auto *a, const char *store)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof path, "%s/" BASE_NAME, store) >= sizeof path)
		return -ENAMETOOLONG;
	char *buf;
	size_t len;
	int r = cow_read_file(path, 4096, &buf, &len);
	if (r < 0)
		return r == -EFBIG ? -EBADMSG : r;
	json_t *j = json_loadb(buf, len, 0, NULL);
	free(buf);
	json_int_t version = 0, disk = -1, live = -1;
	r = j && json_unpack(j, "{s:I, s:I, s:I}", "version", &version, "disk_bytes", &disk, "live_bytes",
			     &live) == 0 && version == BASE_VERSION && disk >= 0 && live >= 0
		? 0 : -EBADMSG;
	json_decref(j);
	if (r == 0) {
		a->base_disk = (uint64_t)disk;
		a->base_live = (uint64_t)live;
	}
	return r;
}

int cow_gc_auto_save(const struct cow_gc_auto *a, const char *store)
{
	char buf[128];
	int n = snprintf(buf, sizeof buf, "{\"version\": %d, \"disk_bytes\": %llu, \"live_bytes\": %llu}\n",
			 BASE_VERSION, (unsigned long long)a->base_disk, (unsigned long long)a->base_live);
	return cow_write_file_durable(store, BASE_NAME, buf, (size_t)n);
}

int cow_gc_disk(struct cow_store *s, uint64_t *ret, bool *ret_old)
{
	struct cow_log_segment *v;
	size_t n;
	int r = cow_store_segments(s, &v, &n);
	if (r < 0)
		return r;
	*ret = disk_of(v, n, NULL);
	if (ret_old)
		*ret_old = n && v[0].old;
	free(v);
	return 0;
}

int cow_gc_begin(struct cow_store *s, const struct cow_gc_opts *opts, struct cow_gc **ret)
{
	struct cow_gc *g = calloc(1, sizeof *g);
	if (!g)
		return -ENOMEM;
	g->s = s;
	g->o = *opts;
	if (!g->o.threshold)
		g->o.threshold = COW_GC_THRESHOLD_DEFAULT;
	if (g->o.threshold > 100) {
		free(g);
		return -EINVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &g->t0);
	struct cow_log_segment *v;
	size_t n;
	int r = cow_store_segments(s, &v, &n);
	if (r < 0) {
		free(g);
		return r;
	}
	g->st.disk_before = disk_of(v, n, &g->st.segments_before);
	free(v);
	if ((r = cow_store_mark_begin(s)) < 0) {
		free(g);
		return r;
	}
	/* What was appended so far goes into segments no longer appended to,
	 * so that the sweep can reach all of it. */
	if (!g->o.mark_only && (r = cow_store_roll(s)) < 0) {
		cow_store_mark_end(s);
		free(g);
		return r;
	}
	*ret = g;
	return 0;
}

static int walk_progress(void *ctx, uint64_t objects, uint64_t bytes)
{
	struct cow_gc *g = ctx;
	struct cow_gc_progress p = { .phase = "mark", .done = objects, .bytes = bytes };
	return g->o.progress ? g->o.progress(g->o.ctx, &p) : 0;
}

static uint64_t rec_bytes(uint32_t len) { return (COW_LOG_REC_HDR + COW_HASH_SIZE + (uint64_t)len + 7) & ~7ull; }

static void tally(void *ctx, uint64_t pos, uint32_t len, uint32_t flags, uint32_t owner)
{
	struct cow_gc *g = ctx;
	if (!(flags & (COW_MARK_SEEN | COW_MARK_PUT)))
		return;
	g->seg_live[COW_LOG_SLOT(COW_LOG_POS_SEG(pos))] += rec_bytes(len);
	if ((flags & COW_MARK_SEEN) && !(flags & COW_MARK_SHARED) && owner >= 1 && owner <= g->nroots)
		g->own[owner] += len;
}

static void tally_restart(void *ctx)
{
	struct cow_gc *g = ctx;
	memset(g->seg_live, 0, COW_LOG_WINDOW * sizeof *g->seg_live);
	memset(g->own, 0, (g->nroots + 1) * sizeof *g->own);
}

int cow_gc_mark(struct cow_gc *g, struct cow_gc_root *roots, size_t n)
{
	if (n > COW_MARK_ROOT_MAX)
		return -E2BIG;
	struct cow_walk *w;
	int r = cow_walk_new(g->s, 0, &w);
	if (r < 0)
		return r;
	cow_walk_set_progress_fn(w, walk_progress, g);
	for (size_t i = 0; i < n && r == 0; i++)
		r = cow_walk_root(w, (uint32_t)i + 1, &roots[i].root, &roots[i].logical_bytes);
	struct cow_walk_stats ws;
	cow_walk_get_stats(w, &ws);
	cow_walk_free(w);
	g->st.objects_reached = ws.reached;
	g->st.missing = ws.missing;
	g->st.damaged = ws.damaged;
	if (r < 0)
		return r;
	if (ws.missing || ws.damaged)
		cow_warn("gc: %llu data blocks reached are missing and %llu damaged; their files read EIO there. "
			 "Run cowfs fsck to name them", (unsigned long long)ws.missing,
			 (unsigned long long)ws.damaged);
	g->seg_live = calloc(COW_LOG_WINDOW, sizeof *g->seg_live);
	g->own = calloc(n + 1, sizeof *g->own);
	if (!g->seg_live || !g->own)
		return -ENOMEM;
	g->roots = roots;
	g->nroots = n;
	if ((r = cow_store_tally(g->s, tally, tally_restart, g)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		roots[i].own_bytes = g->own[i + 1];
		roots[i].shared_bytes = roots[i].logical_bytes > roots[i].own_bytes
						? roots[i].logical_bytes - roots[i].own_bytes
						: 0;
	}
	struct cow_log_segment *v;
	size_t nv;
	if ((r = cow_store_segments(g->s, &v, &nv)) < 0)
		return r;
	for (size_t i = 0; i < nv; i++) {
		uint64_t live = g->seg_live[COW_LOG_SLOT(v[i].seg)];
		g->st.log_bytes += v[i].used;
		g->st.live_bytes += live;
		if (i + 1 < nv && v[i].disk > live)
			g->st.reclaimable_bytes += v[i].disk - live;
	}
	free(v);
	g->marked = true;
	return 0;
}

struct cand {
	uint32_t seg;
	uint64_t live, size;
};

static int by_live_share(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	/* x->live / x->size < y->live / y->size, without division */
	unsigned __int128 l = (unsigned __int128)x->live * y->size, r = (unsigned __int128)y->live * x->size;
	return l < r ? -1 : l > r;
}

int cow_gc_sweep(struct cow_gc *g, uint64_t limit)
{
	if (!g->marked || g->o.mark_only)
		return -EINVAL;
	struct cow_log_segment *v;
	size_t n;
	int r = cow_store_segments(g->s, &v, &n);
	if (r < 0)
		return r;
	/* Not the head, nor anything a live branch may still replay. */
	uint32_t stop = COW_MIN(COW_LOG_POS_SEG(limit), v[n - 1].seg);
	uint32_t *todo = malloc(n * sizeof *todo);
	struct cand *kept = malloc(n * sizeof *kept);
	size_t ntodo = 0, nkept = 0;
	if (!todo || !kept) {
		free(v);
		free(todo);
		free(kept);
		return -ENOMEM;
	}
	uint64_t garbage = 0;
	uint32_t old_end = 0; /* segments below it are old: the log must roll on past them */
	for (size_t i = 0; i < n; i++) {
		if (v[i].seg >= stop)
			break;
		if (v[i].old)
			old_end = v[i].seg + 1;
		uint64_t live = g->seg_live[COW_LOG_SLOT(v[i].seg)];
		uint64_t size = COW_MAX(v[i].disk, (uint64_t)v[i].used);
		/* A segment filled less than a quarter is what an earlier run
		 * left at the head when it rolled: its live data join the head,
		 * so that such segments do not pile up.  An old one, however
		 * live, moves so that the log can roll on (log.h). */
		if (live == 0 || live * 100 < size * g->o.threshold || v[i].used < COW_LOG_SEGMENT_MAX / 4 ||
		    v[i].old) {
			todo[ntodo++] = v[i].seg;
		} else {
			kept[nkept++] = (struct cand){ v[i].seg, live, size };
			garbage += size > live ? size - live : 0;
		}
	}
	free(v);
	/* Then the sparsest of the others, until the garbage left is at most
	 * COW_GC_SLACK_PCT % of the live data: a deleted branch's data that
	 * share segments with live data are reclaimed too. */
	qsort(kept, nkept, sizeof *kept, by_live_share);
	for (size_t i = 0; !g->o.no_slack && i < nkept && garbage * 100 > g->st.live_bytes * COW_GC_SLACK_PCT; i++) {
		todo[ntodo++] = kept[i].seg;
		garbage -= kept[i].size > kept[i].live ? kept[i].size - kept[i].live : 0;
	}
	free(kept);
	qsort(todo, ntodo, sizeof *todo, cow_cmp_u32);
	struct cow_gc_rewrite o = { .old_end = old_end, .warn_kept = true, .progress = g->o.progress, .ctx = g->o.ctx };
	r = cow_gc_rewrite(g->s, todo, ntodo, &o, &g->st);
	free(todo);
	return r;
}

int cow_gc_rewrite(struct cow_store *s, const uint32_t *segs, size_t n, const struct cow_gc_rewrite *o,
		   struct cow_gc_stats *st)
{
	/* Without a plan (no memory for it), each segment is read whole. */
	struct cow_store_plan *plan = NULL;
	if (n && cow_store_plan(s, segs, n, &plan) < 0)
		plan = NULL;
	struct cow_store_sweep acc = { 0 };
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		if (o->progress) {
			struct cow_gc_progress p = { .phase = "sweep", .done = i, .total = n, .bytes = acc.moved_bytes };
			if (o->progress(o->ctx, &p)) {
				r = -ECANCELED;
				break;
			}
		}
		unsigned flags = o->reloc_flags | (segs[i] < o->old_end ? COW_RELOC_MOVE_DAMAGED : 0);
		r = cow_store_relocate(s, segs[i], plan, flags, &acc);
		if (r == 0) {
			st->segments_kept_damaged++;
			if (o->warn_kept)
				cow_warn("gc: segment %u kept: it holds a damaged object that is still reached", segs[i]);
			if (o->kept)
				o->kept(o->ctx, segs[i]);
		} else if (r == 1) {
			r = cow_store_drop_segments(s, &segs[i], 1);
			if (r == 0)
				st->segments_rewritten++;
		}
	}
	if (r == 0 && o->progress) {
		struct cow_gc_progress p = { .phase = "sweep", .done = n, .total = n, .bytes = acc.moved_bytes };
		o->progress(o->ctx, &p);
	}
	cow_store_plan_free(plan);
	st->moved_objects += acc.moved_objects;
	st->moved_bytes += acc.moved_bytes;
	st->dropped_objects += acc.dropped_objects;
	st->dropped_bytes += acc.dropped_bytes;
	st->damaged_moved += acc.damaged_moved;
	return r;
}

void cow_gc_end(struct cow_gc *g, struct cow_gc_stats *ret)
{
	if (!g)
		return;
	cow_store_mark_end(g->s);
	struct cow_log_segment *v;
	size_t n;
	if (cow_store_segments(g->s, &v, &n) == 0) {
		g->st.disk_after = disk_of(v, n, &g->st.segments_after);
		free(v);
	}
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	g->st.seconds = (double)(t1.tv_sec - g->t0.tv_sec) + (t1.tv_nsec - g->t0.tv_nsec) / 1e9;
	if (ret)
		*ret = g->st;
	free(g->seg_live);
	free(g->own);
	free(g);
}
