#include "inode.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void cow_irec_encode(const struct cow_irec *r, uint8_t o[COW_IREC_SIZE])
{
	memset(o, 0, COW_IREC_SIZE);
	cow_put_le32(o + 0, r->mode);
	cow_put_le32(o + 4, r->uid);
	cow_put_le32(o + 8, r->gid);
	cow_put_le32(o + 12, r->nlink);
	cow_put_le64(o + 16, r->size);
	cow_put_le64(o + 24, r->rdev);
	cow_put_le64(o + 32, (uint64_t)r->atime.tv_sec);
	cow_put_le64(o + 40, (uint64_t)r->mtime.tv_sec);
	cow_put_le64(o + 48, (uint64_t)r->ctime.tv_sec);
	cow_put_le32(o + 56, (uint32_t)r->atime.tv_nsec);
	cow_put_le32(o + 60, (uint32_t)r->mtime.tv_nsec);
	cow_put_le32(o + 64, (uint32_t)r->ctime.tv_nsec);
	memcpy(o + 80, r->content.b, COW_HASH_SIZE);
}

void cow_irec_decode(const uint8_t in[COW_IREC_SIZE], struct cow_irec *r)
{
	r->mode = cow_get_le32(in + 0);
	r->uid = cow_get_le32(in + 4);
	r->gid = cow_get_le32(in + 8);
	r->nlink = cow_get_le32(in + 12);
	r->size = cow_get_le64(in + 16);
	r->rdev = cow_get_le64(in + 24);
	r->atime = (struct timespec){ (time_t)cow_get_le64(in + 32), cow_get_le32(in + 56) };
	r->mtime = (struct timespec){ (time_t)cow_get_le64(in + 40), cow_get_le32(in + 60) };
	r->ctime = (struct timespec){ (time_t)cow_get_le64(in + 48), cow_get_le32(in + 64) };
	memcpy(r->content.b, in + 80, COW_HASH_SIZE);
}

/* ---- directory map ---------------------------------------------------- */

struct dent {
	struct dent *next;
	uint64_t ino;
	uint8_t type;
	char name[];
};

struct cow_dir {
	struct dent **buckets;
	size_t nbuckets, count;
};

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

struct cow_dir *cow_dir_new(void)
{
	struct cow_dir *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	d->nbuckets = 16;
	d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
	if (!d->buckets) {
		free(d);
		return NULL;
	}
	return d;
}

void cow_dir_free(struct cow_dir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->nbuckets; i++)
		for (struct dent *e = d->buckets[i], *n; e; e = n) {
			n = e->next;
			free(e);
		}
	free(d->buckets);
	free(d);
}

static struct dent **find(const struct cow_dir *d, const char *name)
{
	struct dent **p = &d->buckets[name_hash(name) & (d->nbuckets - 1)];
	while (*p && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	return p;
}

int cow_dir_lookup(const struct cow_dir *d, const char *name, uint64_t *ret_ino, uint8_t *ret_type)
{
	struct dent *e = *find(d, name);
	if (!e)
		return -ENOENT;
	*ret_ino = e->ino;
	if (ret_type)
		*ret_type = e->type;
	return 0;
}

static int grow(struct cow_dir *d)
{
	size_t n = d->nbuckets * 2;
	struct dent **b = calloc(n, sizeof *b);
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < d->nbuckets; i++)
		for (struct dent *e = d->buckets[i], *nx; e; e = nx) {
			nx = e->next;
			size_t j = name_hash(e->name) & (n - 1);
			e->next = b[j];
			b[j] = e;
		}
	free(d->buckets);
	d->buckets = b;
	d->nbuckets = n;
	return 0;
}

int cow_dir_set(struct cow_dir *d, const char *name, uint64_t ino, uint8_t type)
{
	size_t len = strlen(name);
	if (!len || len > COW_NAME_MAX)
		return -EINVAL;
	struct dent **p = find(d, name);
	if (*p) {
		(*p)->ino = ino;
		(*p)->type = type;
		return 0;
	}
	if (d->count >= d->nbuckets && grow(d) == 0)
		p = find(d, name);
	struct dent *e = malloc(sizeof *e + len + 1);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->ino = ino;
	e->type = type;
	memcpy(e->name, name, len + 1);
	*p = e;
	d->count++;
	return 0;
}

int cow_dir_del(struct cow_dir *d, const char *name)
{
	struct dent **p = find(d, name);
	if (!*p)
		return -ENOENT;
	struct dent *e = *p;
	*p = e->next;
	free(e);
	d->count--;
	return 0;
}

size_t cow_dir_count(const struct cow_dir *d) { return d->count; }

static int cmp_dirent(const void *a, const void *b)
{
	return strcmp(((const struct cow_dirent *)a)->name, ((const struct cow_dirent *)b)->name);
}

void cow_dirents_free(struct cow_dirent *e, size_t n)
{
	if (!e)
		return;
	for (size_t i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}

int cow_dir_list(const struct cow_dir *d, struct cow_dirent **ret, size_t *ret_n)
{
	struct cow_dirent *v = calloc(d->count ? d->count : 1, sizeof *v);
	if (!v)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < d->nbuckets; i++)
		for (struct dent *e = d->buckets[i]; e; e = e->next) {
			v[n] = (struct cow_dirent){ e->ino, e->type, strdup(e->name) };
			if (!v[n++].name) {
				cow_dirents_free(v, n);
				return -ENOMEM;
			}
		}
	qsort(v, n, sizeof *v, cmp_dirent);
	*ret = v;
	*ret_n = n;
	return 0;
}

#define DIR_MAGIC 0x52494443u /* "CDIR" */
#define DIR_VERSION 1

/* Layout: magic u32, version u32, count u32; entries sorted by name:
 * ino u64, type u8, name length u8, name bytes. */
int cow_dir_encode(const struct cow_dir *d, void **ret_buf, size_t *ret_len)
{
	struct cow_dirent *v;
	size_t n;
	int r = cow_dir_list(d, &v, &n);
	if (r < 0)
		return r;
	size_t len = 12;
	for (size_t i = 0; i < n; i++)
		len += 10 + strlen(v[i].name);
	uint8_t *b = malloc(len);
	if (!b) {
		cow_dirents_free(v, n);
		return -ENOMEM;
	}
	cow_put_le32(b, DIR_MAGIC);
	cow_put_le32(b + 4, DIR_VERSION);
	cow_put_le32(b + 8, (uint32_t)n);
	uint8_t *p = b + 12;
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(v[i].name);
		cow_put_le64(p, v[i].ino);
		p[8] = v[i].type;
		p[9] = (uint8_t)nl;
		memcpy(p + 10, v[i].name, nl);
		p += 10 + nl;
	}
	cow_dirents_free(v, n);
	*ret_buf = b;
	*ret_len = len;
	return 0;
}

int cow_dir_decode(const void *buf, size_t len, struct cow_dir **ret)
{
	const uint8_t *b = buf, *end = b + len;
	if (len < 12 || cow_get_le32(b) != DIR_MAGIC || cow_get_le32(b + 4) != DIR_VERSION)
		return -EIO;
	uint32_t n = cow_get_le32(b + 8);
	struct cow_dir *d = cow_dir_new();
	if (!d)
		return -ENOMEM;
	const uint8_t *p = b + 12;
	char name[COW_NAME_MAX + 1];
	for (uint32_t i = 0; i < n; i++) {
		if (end - p < 10 || end - p < 10 + p[9] || p[9] == 0) {
			cow_dir_free(d);
			return -EIO;
		}
		memcpy(name, p + 10, p[9]);
		name[p[9]] = 0;
		int r = strlen(name) == p[9] ? cow_dir_set(d, name, cow_get_le64(p), p[8]) : -EIO;
		if (r < 0) {
			cow_dir_free(d);
			return r;
		}
		p += 10 + p[9];
	}
	if (p != end) {
		cow_dir_free(d);
		return -EIO;
	}
	*ret = d;
	return 0;
}
