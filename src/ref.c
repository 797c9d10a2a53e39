#include "ref.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

const char *cow_ref_check_name(const char *name)
{
	size_t len = strlen(name);
	if (len == 0)
		return "a name cannot be empty";
	if (len > COW_NAME_LEN)
		return "a name has at most 63 characters";
	if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9')))
		return "a name starts with a lower-case letter or a digit";
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
			return "a name holds only a-z, 0-9, '.', '_' and '-'";
	if (strstr(name, ".."))
		return "a name cannot contain '..'";
	return NULL;
}

const char *cow_ref_kind_dir(enum cow_ref_kind kind)
{
	return kind == COW_REF_SNAPSHOT ? "snapshots" : kind == COW_REF_TRASH ? "trash" : "branches";
}

static void refs_dir(const char *store, enum cow_ref_kind kind, char *out, size_t n)
{
	snprintf(out, n, "%s/refs/%s", store, cow_ref_kind_dir(kind));
}

int cow_ref_write(const char *store, enum cow_ref_kind kind, const struct cow_ref *ref)
{
	if (cow_ref_check_name(ref->name))
		return -EINVAL;
	char dir[4096], file[128], root[65];
	snprintf(dir, sizeof dir, "%s/refs", store);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	refs_dir(store, kind, dir, sizeof dir);
	if (mkdir(dir, 0700) < 0) {
		if (errno != EEXIST)
			return -errno;
	} else {
		char up[4096];
		snprintf(up, sizeof up, "%s/refs", store);
		int r = cow_fsync_path(up);
		if (r < 0)
			return r;
	}
	cow_hash_to_hex(&ref->root, root);
	json_t *j = json_pack("{s:s, s:i, s:s, s:I, s:s, s:I, s:o, s:I, s:I}",
			      "format", "cowfs-ref", "version", COW_REF_VERSION, "name", ref->name,
			      "id", (json_int_t)ref->id, "root", root, "log_pos", (json_int_t)ref->log_pos,
			      "parent", ref->parent[0] ? json_string(ref->parent) : json_null(),
			      "created", (json_int_t)ref->created, "owner", (json_int_t)ref->owner);
	if (!j)
		return -ENOMEM;
	/* Optional members: absent means the default (0, false). */
	int e = 0;
	if (ref->expires)
		e |= json_object_set_new(j, "expires", json_integer(ref->expires));
	if (ref->protected)
		e |= json_object_set_new(j, "protected", json_true());
	if (ref->deleted)
		e |= json_object_set_new(j, "deleted", json_integer(ref->deleted));
	if (ref->port || ref->on_demand || ref->idle_timeout)
		e |= json_object_set_new(j, "postgres",
					 json_pack("{s:i, s:b, s:I}", "port", (int)ref->port, "on_demand",
						   (int)ref->on_demand, "idle_timeout", (json_int_t)ref->idle_timeout));
	if (e) {
		json_decref(j);
		return -ENOMEM;
	}
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	snprintf(file, sizeof file, "%s.json", ref->name);
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps leaves room for the NUL we replace */
	int r = cow_write_file_durable(dir, file, text, len + 1);
	free(text);
	return r;
}

int cow_ref_read(const char *store, enum cow_ref_kind kind, const char *name, struct cow_ref *ret)
{
	if (cow_ref_check_name(name))
		return -EINVAL;
	char path[4096];
	refs_dir(store, kind, path, sizeof path);
	size_t dl = strlen(path);
	snprintf(path + dl, sizeof path - dl, "/%s.json", name);
	json_error_t err;
	json_t *j = json_load_file(path, 0, &err);
	if (!j) {
		struct stat st;
		if (stat(path, &st) < 0)
			return -errno;
		cow_err("%s: not valid JSON: %s (line %d)", path, err.text, err.line);
		return -EBADMSG;
	}
	const char *fmt = NULL, *nm = NULL, *root = NULL;
	json_t *parent = NULL, *expires = NULL, *pg = NULL;
	json_int_t version = 0, id = 0, pos = 0, created = 0, owner = 0, deleted = 0;
	json_int_t port = 0, idle = 0;
	int prot = 0, on_demand = 0;
	int r = -EBADMSG;
	if (json_unpack_ex(j, &err, 0, "{s:s, s:I, s:s, s:I, s:s, s:I, s:o, s:I, s:I, s?o, s?b, s?I, s?o}",
			   "format", &fmt, "version", &version, "name", &nm, "id", &id, "root", &root,
			   "log_pos", &pos, "parent", &parent, "created", &created, "owner", &owner,
			   "expires", &expires, "protected", &prot, "deleted", &deleted, "postgres", &pg) < 0 ||
	    (pg && json_unpack_ex(pg, &err, 0, "{s?I, s?b, s?I}", "port", &port, "on_demand", &on_demand,
				  "idle_timeout", &idle) < 0)) {
		cow_err("%s: not a cowfs ref: %s", path, err.text);
		goto out;
	}
	if (strcmp(fmt, "cowfs-ref") != 0) {
		cow_err("%s: not a cowfs ref", path);
		goto out;
	}
	if (version > COW_REF_VERSION) {
		cow_err("%s: ref format version %lld is newer than this cowfs supports (%d)", path,
			(long long)version, COW_REF_VERSION);
		r = -EPROTONOSUPPORT;
		goto out;
	}
	memset(ret, 0, sizeof *ret);
	if (strcmp(nm, name) != 0 || cow_hash_from_hex(root, &ret->root) < 0 || id <= 0 || pos < 0 ||
	    owner < 0 || owner > (json_int_t)UINT32_MAX ||
	    (parent && !json_is_null(parent) && (!json_is_string(parent) || cow_ref_check_name(json_string_value(parent)))) ||
	    (expires && !json_is_null(expires) && (!json_is_integer(expires) || json_integer_value(expires) < 0)) ||
	    deleted < 0 || port < 0 || port > 65535 || idle < 0 || idle > (json_int_t)UINT32_MAX) {
		cow_err("%s: malformed ref", path);
		goto out;
	}
	snprintf(ret->name, sizeof ret->name, "%s", nm);
	if (json_is_string(parent))
		snprintf(ret->parent, sizeof ret->parent, "%s", json_string_value(parent));
	ret->id = (uint64_t)id;
	ret->log_pos = (uint64_t)pos;
	ret->created = created;
	ret->owner = (uint32_t)owner;
	ret->expires = json_is_integer(expires) ? json_integer_value(expires) : 0;
	ret->protected = prot;
	ret->deleted = deleted;
	ret->port = (uint16_t)port;
	ret->on_demand = on_demand;
	ret->idle_timeout = (uint32_t)idle;
	r = 0;
out:
	json_decref(j);
	return r;
}

int cow_ref_remove(const char *store, enum cow_ref_kind kind, const char *name)
{
	if (cow_ref_check_name(name))
		return -EINVAL;
	char dir[4096], path[4200];
	refs_dir(store, kind, dir, sizeof dir);
	snprintf(path, sizeof path, "%s/%s.json", dir, name);
	if (unlink(path) < 0)
		return -errno;
	return cow_fsync_path(dir);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void cow_ref_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int cow_ref_list(const char *store, enum cow_ref_kind kind, char ***ret, size_t *ret_n)
{
	char dir[4096];
	refs_dir(store, kind, dir, sizeof dir);
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			return -errno;
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0 || de->d_name[0] == '.')
			continue;
		char name[256];
		snprintf(name, sizeof name, "%.*s", (int)(len - 5), de->d_name);
		if (cow_ref_check_name(name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(v, cap * sizeof *v);
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
		}
		if (!(v[n] = strdup(name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (r < 0) {
		cow_ref_names_free(v, n);
		return r;
	}
	if (n)
		qsort(v, n, sizeof *v, cmp_str);
	*ret = v;
	*ret_n = n;
	return 0;
}
