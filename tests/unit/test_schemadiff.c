/* Unit tests of the schema diff's normalisation and summary, on text shaped
 * like `pg_dump --schema-only` of Postgres 15. */
#include "schemadiff.h"
#include "testutil.h"

static const char *dump_a =
	"--\n-- PostgreSQL database dump\n--\n\n"
	"SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
	"--\n-- Name: inventory; Type: TABLE; Schema: public; Owner: postgres\n--\n\n"
	"CREATE TABLE public.inventory (\n"
	"    id integer NOT NULL,\n"
	"    inventory_code text NOT NULL,\n"
	"    qty integer\n"
	");\n\n"
	"ALTER TABLE public.inventory OWNER TO postgres;\n\n"
	"CREATE TABLE public.other (\n    x integer\n);\n\n"
	"CREATE INDEX other_x ON public.other USING btree (x);\n";

static const char *dump_b =
	"--\n-- PostgreSQL database dump\n--\n\n"
	"SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
	"CREATE TABLE public.inventory (\n"
	"    id integer NOT NULL,\n"
	"    qty bigint,\n"
	"    location_code text,\n"
	"    batch_number text,\n"
	"    serial_number text\n"
	");\n\n"
	"ALTER TABLE public.inventory OWNER TO postgres;\n\n"
	"CREATE TABLE public.other (\n    x integer\n);\n\n"
	"CREATE INDEX other_x ON public.other USING btree (x);\n"
	"CREATE INDEX inv_loc ON public.inventory USING btree (location_code);\n";

START_TEST(test_normalize)
{
	char *n = cow_schema_normalize(dump_a);
	ck_assert_ptr_nonnull(n);
	ck_assert_str_eq(n, "CREATE TABLE public.inventory (\n"
			    "    id integer NOT NULL\n"
			    "    inventory_code text NOT NULL\n"
			    "    qty integer\n"
			    ");\n"
			    "ALTER TABLE public.inventory OWNER TO postgres;\n"
			    "CREATE TABLE public.other (\n    x integer\n);\n"
			    "CREATE INDEX other_x ON public.other USING btree (x);\n");
	free(n);
	n = cow_schema_normalize("");
	ck_assert_str_eq(n, "");
	free(n);
}
END_TEST

START_TEST(test_summary)
{
	char *a = cow_schema_normalize(dump_a), *b = cow_schema_normalize(dump_b);
	char *s = cow_schema_summary(a, b);
	ck_assert_str_eq(s, "- changed: `CREATE TABLE public.inventory`: added column(s) `location_code`, `batch_number`, "
			    "`serial_number`; dropped column(s) `inventory_code`; changed column(s) `qty`;\n"
			    "- added: `CREATE INDEX inv_loc ON public.inventory USING btree (location_code)`\n");
	free(s);
	s = cow_schema_summary(b, a);
	ck_assert(strstr(s, "- dropped: `CREATE INDEX inv_loc"));
	free(s);
	s = cow_schema_summary(a, a);
	ck_assert_str_eq(s, ""); /* unchanged objects show nothing */
	free(s);
	free(a);
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("schemadiff");
	TCase *tc = tcase_create("text");
	tcase_add_test(tc, test_normalize);
	tcase_add_test(tc, test_summary);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
