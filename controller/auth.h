/* API tokens. A token reads "drv_<public id>_<secret>": the public id (12
 * hex digits) finds its row, the secret (256 random bits, base64url) is
 * what proves it. The database keeps only the SHA-256 of the whole token,
 * so a copy of the database lets nobody in; the token is shown once, when
 * it is made. Roles: admin may do everything, reader only GET. */
#ifndef DROVER_AUTH_H
#define DROVER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define AUTH_PUBLIC_ID_LEN 12
#define AUTH_TOKEN_MAX     96             /* with its NUL */

enum auth_role { AUTH_NONE, AUTH_READER, AUTH_ADMIN };

const char *auth_role_name(enum auth_role r);
/* "admin" or "reader"; AUTH_NONE for anything else. */
enum auth_role auth_role_parse(const char *s);

void auth_sha256(const void *data, size_t len, uint8_t out[STORE_HASH_LEN]);

/* Makes a token, keeps its hash, and writes the token (to show once) into
 * token. expires_days 0: never. 0 or -errno; err says why. */
int auth_token_create(struct store *s, enum auth_role role, const char *name,
		      unsigned expires_days, int64_t now, char token[AUTH_TOKEN_MAX],
		      char public_id[AUTH_PUBLIC_ID_LEN + 1], char *err, size_t errlen);

/* Checks an Authorization header value ("Bearer TOKEN"; NULL when there
 * was none). 0 with the role and the token's public id, or -EACCES with
 * why ("no bearer token", "token expired at ...", ...), or -EIO. */
int auth_check(struct store *s, const char *authorization, int64_t now, enum auth_role *role,
	       char public_id[AUTH_PUBLIC_ID_LEN + 1], char *why, size_t whylen);

#endif
