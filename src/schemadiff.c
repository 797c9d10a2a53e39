#include "schemadiff.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static bool starts(const char *line, size_t n, const char *prefix)
{
	size_t l = strlen(prefix);
	return n >= l && memcmp(line, prefix, l) == 0;
}

char *cow_schema_normalize(const char *dump)
{
	struct cow_str out = { 0 };
	bool in_table = false;
	for (const char *p = dump; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		const char *line = p;
		p += n + (nl != NULL);
		while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
			n--;
		if (n == 0 || starts(line, n, "--") || starts(line, n, "SET ") ||
		    starts(line, n, "SELECT pg_catalog.set_config(") || starts(line, n, "\\restrict") ||
		    starts(line, n, "\\unrestrict"))
			continue;
		if (starts(line, n, "CREATE TABLE ") || starts(line, n, "CREATE UNLOGGED TABLE "))
			in_table = line[n - 1] == '(';
		else if (in_table && line[0] == ')')
			in_table = false;
		else if (in_table && line[n - 1] == ',')
			n--;
		cow_str_add(&out, line, n);
		cow_str_add(&out, "\n", 1);
	}
	return cow_str_take(&out);
}

/* A statement: its first line (the key) and the whole text. */
struct stmt {
	const char *key, *text;
	size_t key_len, len;
};

/* Split normalised TEXT into statements: a line ending in ';' ends one. */
static struct stmt *split(const char *text, size_t *ret_n)
{
	size_t n = 0, cap = 16;
	struct stmt *v = malloc(cap * sizeof *v);
	const char *start = text;
	for (const char *p = text; v && *p;) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		bool end = l && p[l - 1] == ';';
		p += l + (nl != NULL);
		if (!end && *p)
			continue;
		if (n == cap) {
			struct stmt *nv = realloc(v, (cap *= 2) * sizeof *v);
			if (!nv) {
				free(v);
				return NULL;
			}
			v = nv;
		}
		const char *knl = strchr(start, '\n');
		v[n].key = start;
		v[n].key_len = knl && knl < p ? (size_t)(knl - start) : (size_t)(p - start);
		v[n].text = start;
		v[n].len = (size_t)(p - start);
		n++;
		start = p;
	}
	*ret_n = n;
	return v;
}

static const struct stmt *find(const struct stmt *v, size_t n, const struct stmt *s)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].key_len == s->key_len && memcmp(v[i].key, s->key, s->key_len) == 0)
			return &v[i];
	return NULL;
}

/* The first line without a trailing " (" or ";". */
static void title(struct cow_str *b, const struct stmt *s)
{
	size_t n = s->key_len;
	while (n && (s->key[n - 1] == '(' || s->key[n - 1] == ';' || s->key[n - 1] == ' '))
		n--;
	cow_str_add(b, "`", 1);
	cow_str_add(b, s->key, n);
	cow_str_add(b, "`", 1);
}

/* The column lines of a CREATE TABLE statement: "    name type ...". */
static bool column(const char *line, size_t n, size_t *name_len)
{
	if (n < 5 || memcmp(line, "    ", 4) != 0 || line[4] == ' ' || starts(line + 4, n - 4, "CONSTRAINT "))
		return false;
	const char *sp = memchr(line + 4, ' ', n - 4);
	*name_len = sp ? (size_t)(sp - line - 4) : n - 4;
	return true;
}

/* Does statement S have a column line named like LINE's, and is it equal? */
static int column_in(const struct stmt *s, const char *line, size_t n, size_t name_len)
{
	for (const char *p = s->text; p < s->text + s->len;) {
		const char *nl = memchr(p, '\n', (size_t)(s->text + s->len - p));
		size_t l = nl ? (size_t)(nl - p) : (size_t)(s->text + s->len - p);
		size_t nm;
		if (column(p, l, &nm) && nm == name_len && memcmp(p + 4, line + 4, nm) == 0)
			return l == n && memcmp(p, line, n) == 0 ? 2 : 1;
		p += l + 1;
	}
	return 0;
}

/* Columns of A missing from B (WHAT "dropped"), or differing (WHAT "changed", SAME 1). */
static void columns(struct cow_str *b, const struct stmt *a, const struct stmt *other, int want, const char *what)
{
	bool first = true;
	for (const char *p = a->text; p < a->text + a->len;) {
		const char *nl = memchr(p, '\n', (size_t)(a->text + a->len - p));
		size_t l = nl ? (size_t)(nl - p) : (size_t)(a->text + a->len - p);
		size_t nm;
		if (column(p, l, &nm) && column_in(other, p, l, nm) == want) {
			cow_str_addf(b, "%s `%.*s`", first ? what : ",", (int)nm, p + 4);
			first = false;
		}
		p += l + 1;
	}
	if (!first)
		cow_str_add(b, ";", 1);
}

char *cow_schema_summary(const char *norm_a, const char *norm_b)
{
	size_t na = 0, nb = 0;
	struct stmt *a = split(norm_a, &na), *b = split(norm_b, &nb);
	struct cow_str out = { 0 };
	if (!a || !b)
		out.oom = true;
	for (size_t i = 0; !out.oom && i < nb; i++) {
		const struct stmt *o = find(a, na, &b[i]);
		if (!o) {
			cow_str_add(&out, "- added: ", 9);
			title(&out, &b[i]);
			cow_str_add(&out, "\n", 1);
		} else if (o->len != b[i].len || memcmp(o->text, b[i].text, o->len) != 0) {
			cow_str_add(&out, "- changed: ", 11);
			title(&out, &b[i]);
			if (starts(b[i].key, b[i].key_len, "CREATE TABLE ")) {
				cow_str_add(&out, ":", 1);
				columns(&out, &b[i], o, 0, " added column(s)");
				columns(&out, o, &b[i], 0, " dropped column(s)");
				columns(&out, &b[i], o, 1, " changed column(s)");
			}
			cow_str_add(&out, "\n", 1);
		}
	}
	for (size_t i = 0; !out.oom && i < na; i++)
		if (!find(b, nb, &a[i])) {
			cow_str_add(&out, "- dropped: ", 11);
			title(&out, &a[i]);
			cow_str_add(&out, "\n", 1);
		}
	free(a);
	free(b);
	return cow_str_take(&out);
}
