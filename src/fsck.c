#include "fsck.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store.h"
#include "util.h"
#include "walk.h"

/* A problem as the walk saw it, kept until paths are known. */
struct found {
	uint32_t root;
	uint64_t ino;
	int64_t block;
	cow_hash hash;
	uint64_t pos;
	const char *object;      /* static strings of walk.c */
	char *problem;
};

struct run {
	const struct cow_fsck_opts *o;
	struct found *v;
	size_t n, cap;
	int err;
};

static void on_problem(void *ctx, const struct cow_walk_problem *p)
{
	struct run *run = ctx;
	if (run->n == run->cap) {
		size_t cap = run->cap ? run->cap * 2 : 16;
		struct found *v = realloc(run->v, cap * sizeof *v);
		if (!v) {
			run->err = -ENOMEM;
			return;
		}
		run->v = v;
		run->cap = cap;
	}
	char *what = strdup(p->problem);
	if (!what) {
		run->err = -ENOMEM;
		return;
	}
	run->v[run->n++] = (struct found){ p->root, p->ino, p->block, p->hash, p->pos, p->object, what };
}

static int on_progress(void *ctx, uint64_t objects, uint64_t bytes)
{
	struct run *run = ctx;
	if (run->err)
		return 1;
	return run->o->progress ? run->o->progress(run->o->ctx, objects, bytes) : 0;
}

int cow_fsck_run(struct cow_store *s, const struct cow_fsck_root *roots, size_t n, const struct cow_fsck_opts *opts,
		 struct cow_fsck_stats *ret)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (n > COW_MARK_ROOT_MAX)
		return -E2BIG;
	struct run run = { .o = opts };
	struct cow_walk *w = NULL;
	struct cow_walk_stats ws = { 0 };
	int r = cow_store_mark_begin(s);
	if (r < 0)
		return r;
	r = cow_walk_new(s, COW_WALK_VERIFY, &w);
	if (r == 0) {
		cow_walk_set_problem_fn(w, on_problem, &run);
		cow_walk_set_progress_fn(w, on_progress, &run);
		for (size_t i = 0; i < n && r == 0; i++)
			r = cow_walk_root(w, (uint32_t)i + 1, &roots[i].root, NULL);
		if (r == -ECANCELED && run.err)
			r = run.err;
		cow_walk_get_stats(w, &ws);
		cow_walk_free(w);
	}
	cow_store_mark_end(s);
	/* Name the files: one directory walk per root that has problems. */
	for (size_t i = 0; i < n && r == 0; i++) {
		struct cow_walk_paths *paths = NULL;
		for (size_t k = 0; k < run.n && r == 0; k++) {
			struct found *f = &run.v[k];
			if (f->root != i + 1)
				continue;
			if (!paths && f->ino && (r = cow_walk_paths_open(s, &roots[i].root, &paths)) < 0)
				break;
			struct cow_fsck_problem p = {
				.kind = roots[i].kind, .name = roots[i].name,
				.path = paths ? cow_walk_paths_get(paths, f->ino) : NULL, .ino = f->ino,
				.block = f->block, .hash = f->hash, .pos = f->pos, .object = f->object,
				.problem = f->problem,
			};
			if (opts->problem)
				opts->problem(opts->ctx, &p);
		}
		cow_walk_paths_free(paths);
	}
	if (r == 0 && ret) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		*ret = (struct cow_fsck_stats){
			.seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
			.roots = (uint32_t)n, .objects = ws.entered, .bytes = ws.read_bytes, .problems = run.n,
		};
	}
	for (size_t k = 0; k < run.n; k++)
		free(run.v[k].problem);
	free(run.v);
	return r;
}

char *cow_fsck_describe(const struct cow_fsck_problem *p, char *buf, size_t len)
{
	char hex[65], where[64] = "", file[4200] = "", block[48] = "";
	cow_hash_to_hex(&p->hash, hex);
	if (p->pos)
		snprintf(where, sizeof where, " (segment %u, offset %u)", COW_LOG_POS_SEG(p->pos),
			 COW_LOG_POS_OFF(p->pos));
	if (p->ino)
		snprintf(file, sizeof file, " %s (inode %llu)%s", p->path ? p->path : "(a file no directory names)",
			 (unsigned long long)p->ino, p->block >= 0 ? "," : ":");
	if (p->ino && p->block >= 0)
		snprintf(block, sizeof block, " block %lld:", (long long)p->block);
	snprintf(buf, len, "%s %s:%s%s %s %s%s %s", p->kind, p->name, file, block, p->object, hex, where, p->problem);
	return buf;
}
