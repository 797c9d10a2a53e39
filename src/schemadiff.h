/* schemadiff — comparing two `pg_dump --schema-only` outputs so that only
 * what changed shows: normalising a dump, and a per-object summary.
 *
 * Normalising drops comments, blank lines and the dump's session settings
 * (SET, set_config), and the commas that end the lines inside a
 * CREATE TABLE, so that a column added at the end does not show its
 * predecessor as changed.  pg_dump already sorts objects by kind and name.
 *
 * The summary splits both normalised dumps into statements, keyed by their
 * first line ("CREATE TABLE public.inventory (", "CREATE INDEX ..."), and
 * lists objects added, dropped and changed; for a table present in both it
 * names the columns added, dropped and changed.  Markdown bullets, or ""
 * when nothing differs.  Both return malloc'd text, NULL on ENOMEM.
 */
#ifndef COW_SCHEMADIFF_H
#define COW_SCHEMADIFF_H
char *cow_schema_normalize(const char *dump);
char *cow_schema_summary(const char *norm_a, const char *norm_b);
#endif
