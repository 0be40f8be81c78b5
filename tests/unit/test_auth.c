/* controller/auth.c against a real store: tokens are random, shown once,
 * kept only as hashes, and every kind of bad token is refused with a reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "store.h"

struct fx {
	char dir[64], path[128];
	struct store *s;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/drover-test-auth-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/droverd.db", f->dir);
	assert_int_equal(store_open(f->path, &f->s, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[160];

	store_close(f->s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void make(struct fx *f, enum auth_role role, unsigned days, int64_t now,
		 char token[AUTH_TOKEN_MAX], char id[AUTH_PUBLIC_ID_LEN + 1])
{
	char err[256] = "";

	if (auth_token_create(f->s, role, "test", days, now, token, id, err, sizeof(err)))
		fail_msg("auth_token_create: %s", err);
}

static void bearer(char *out, size_t len, const char *token)
{
	snprintf(out, len, "Bearer %s", token);
}

static void test_token_shape(void **state)
{
	struct fx *f = *state;
	char t1[AUTH_TOKEN_MAX], t2[AUTH_TOKEN_MAX], id1[16], id2[16];
	FILE *db;
	char *contents;
	long size;

	make(f, AUTH_ADMIN, 0, 1000, t1, id1);
	make(f, AUTH_ADMIN, 0, 1000, t2, id2);
	assert_int_equal(strncmp(t1, "drv_", 4), 0);
	assert_int_equal(strncmp(t1 + 4, id1, AUTH_PUBLIC_ID_LEN), 0);
	/* 32 random bytes in base64url: 43 characters, at least 128 bits. */
	assert_int_equal(strlen(t1), 4 + AUTH_PUBLIC_ID_LEN + 1 + 43);
	assert_string_not_equal(t1, t2);
	assert_string_not_equal(id1, id2);
	/* The database file holds no secret (WAL included: checkpoint by closing). */
	store_close(f->s);
	f->s = NULL;
	db = fopen(f->path, "rb");
	assert_non_null(db);
	fseek(db, 0, SEEK_END);
	size = ftell(db);
	rewind(db);
	contents = malloc((size_t)size);
	assert_int_equal(fread(contents, 1, (size_t)size, db), (size_t)size);
	fclose(db);
	assert_null(memmem(contents, (size_t)size, t1 + 4 + AUTH_PUBLIC_ID_LEN + 1, 43));
	assert_non_null(memmem(contents, (size_t)size, id1, AUTH_PUBLIC_ID_LEN));
	free(contents);
	{
		char err[256];
		assert_int_equal(store_open(f->path, &f->s, err, sizeof(err)), 0);
	}
}

static void test_check_roles(void **state)
{
	struct fx *f = *state;
	char admin[AUTH_TOKEN_MAX], reader[AUTH_TOKEN_MAX], ida[16], idr[16], id[16];
	char hdr[160], why[256];
	enum auth_role role = AUTH_NONE;

	make(f, AUTH_ADMIN, 0, 1000, admin, ida);
	make(f, AUTH_READER, 0, 1000, reader, idr);
	bearer(hdr, sizeof(hdr), admin);
	assert_int_equal(auth_check(f->s, hdr, 2000, &role, id, why, sizeof(why)), 0);
	assert_int_equal(role, AUTH_ADMIN);
	assert_string_equal(id, ida);
	snprintf(hdr, sizeof(hdr), "bearer   %s", reader);   /* the scheme is case-blind */
	assert_int_equal(auth_check(f->s, hdr, 2000, &role, id, why, sizeof(why)), 0);
	assert_int_equal(role, AUTH_READER);
}

struct bad_case {
	const char *header;
	const char *why;
};

static void test_bad_tokens(void **state)
{
	struct fx *f = *state;
	char tok[AUTH_TOKEN_MAX], id[16], forged[AUTH_TOKEN_MAX], hdr[160], why[256];
	enum auth_role role;
	const struct bad_case cases[] = {
		{ NULL, "needs an Authorization" },
		{ "", "needs an Authorization" },
		{ "Basic dXNlcjpwYXNz", "must be 'Bearer TOKEN'" },
		{ "Bearer", "must be 'Bearer TOKEN'" },
		{ "Bearer abc", "not a drover token" },
		{ "Bearer drv_XYZ", "not a drover token" },
		{ "Bearer drv_0123456789ab", "not a drover token" },
		{ "Bearer drv_0123456789ab_secret", "unknown token" },
	};

	make(f, AUTH_ADMIN, 0, 1000, tok, id);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = 0;
		assert_int_equal(auth_check(f->s, cases[i].header, 2000, &role, id, why, sizeof(why)),
				 -EACCES);
		if (!strstr(why, cases[i].why))
			fail_msg("header '%s': got '%s', want '%s'", cases[i].header, why, cases[i].why);
	}
	/* The right public id with a wrong secret reads like an unknown token. */
	snprintf(forged, sizeof(forged), "%s", tok);
	forged[strlen(forged) - 1] ^= 1;
	bearer(hdr, sizeof(hdr), forged);
	assert_int_equal(auth_check(f->s, hdr, 2000, &role, id, why, sizeof(why)), -EACCES);
	assert_string_equal(why, "unknown token");
}

static void test_revoked_and_expired(void **state)
{
	struct fx *f = *state;
	char tok[AUTH_TOKEN_MAX], id[16], id2[16], hdr[160], why[256];
	enum auth_role role;
	const int64_t day = 86400 * 1000;

	make(f, AUTH_ADMIN, 2, 1000, tok, id);
	bearer(hdr, sizeof(hdr), tok);
	assert_int_equal(auth_check(f->s, hdr, 1000 + day, &role, id2, why, sizeof(why)), 0);
	assert_int_equal(auth_check(f->s, hdr, 1000 + 2 * day, &role, id2, why, sizeof(why)),
			 -EACCES);
	assert_non_null(strstr(why, "expired"));

	make(f, AUTH_READER, 0, 1000, tok, id);
	bearer(hdr, sizeof(hdr), tok);
	assert_int_equal(store_token_revoke(f->s, id, 5000), 0);
	assert_int_equal(auth_check(f->s, hdr, 6000, &role, id2, why, sizeof(why)), -EACCES);
	assert_non_null(strstr(why, "revoked"));
	assert_non_null(strstr(why, id));
}

static void test_bad_requests(void **state)
{
	struct fx *f = *state;
	char tok[AUTH_TOKEN_MAX], id[16], err[256] = "";

	assert_int_equal(auth_token_create(f->s, AUTH_NONE, "x", 0, 1, tok, id, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "admin or reader"));
	assert_int_equal(auth_token_create(f->s, AUTH_ADMIN, "x", 99999, 1, tok, id, err,
					   sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "expires-days"));
	assert_int_equal(auth_role_parse("admin"), AUTH_ADMIN);
	assert_int_equal(auth_role_parse("reader"), AUTH_READER);
	assert_int_equal(auth_role_parse("Admin"), AUTH_NONE);
	assert_int_equal(auth_role_parse(NULL), AUTH_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_token_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_roles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revoked_and_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
